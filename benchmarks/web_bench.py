"""What the [web] live view costs the pipeline: FPS and per-frame ms with the server off, with
no client, one client and four clients, side by side in one run.

    python -m benchmarks.web_bench [--phase-s 8] [--rounds 3] [--realtime] [--out FILE]

The real pipeline (capture thread, BlazeFace, the int8 model, tracker, events; a discarding
output) reads the sample video as fast as it can (`realtime = false`: the figure is the
capacity, where any cost shows) with the real web server tapped in. A "client" is what one open
page costs: a /stream.mjpg reader and an /api/live (SSE) reader, in a separate process so the
readers do not share the pipeline's interpreter. Phases alternate (off, 0, 1, 4 clients, then
again) so a change in machine load hits every phase alike; the first second of each phase is
not counted. "off" takes the frame tap out of the pipeline (the same as [web] enabled = false).
Prints a table; writes JSON to benchmarks/results/web.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.common import RESULTS_DIR, SAMPLE_VIDEO, log, machine_info, write_json

PHASES = ("off", 0, 1, 4)
OUT = RESULTS_DIR / "web.json"
WARMUP_S = 1.0

# One process, `pages` x (MJPEG reader + SSE reader) for `duration` s; prints what it received.
CLIENT = r"""
import json, socket, sys, threading, time
port, pages, duration = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
got = {"frames": [0] * pages, "states": [0] * pages, "bytes": [0] * pages}
def reader(i, path, key, marker):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: bench\r\n\r\n")
    s.settimeout(0.5)
    tail, end = b"", time.monotonic() + duration
    while time.monotonic() < end:
        try:
            data = s.recv(1 << 18)
        except socket.timeout:
            continue
        if not data:
            break
        if key == "frames":
            got["bytes"][i] += len(data)
        got[key][i] += (tail + data).count(marker)
        tail = data[-40:]
    s.close()
ts = []
for i in range(pages):
    for args in ((i, b"/stream.mjpg", "frames", b"Content-Type: image/jpeg"),
                 (i, b"/api/live", "states", b"data: ")):
        ts.append(threading.Thread(target=reader, args=args))
for t in ts:
    t.start()
for t in ts:
    t.join()
print(json.dumps(got))
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_pipeline(args):
    from emotion_edge.app import build_pipeline
    from emotion_edge.config import load_config

    from benchmarks.pipeline_bench import NullOutput

    cfg = load_config(
        None,
        {
            "source": {"kind": "video", "uri": str(SAMPLE_VIDEO), "loop": True},
            "pipeline": {
                "realtime": bool(args.realtime),
                "stats_interval_s": 86400.0,
                "state_interval_s": 86400.0,
            },
            "output": {"mode": "stdout"},
            "web": {
                "enabled": True,
                "port": free_port(),
                "max_fps": args.fps,
                "stream_width": args.width,
                "jpeg_quality": args.quality,
                "max_clients": 2 * max(PHASES[1:]),
            },
            "logging": {"level": "WARNING"},
        },
    )
    pipe = build_pipeline(cfg, output=NullOutput())
    return pipe, pipe.taps[0], cfg


def rss_mb() -> float:
    from emotion_edge.stats import rss_mb as _rss

    return _rss()


def peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def run_phase(pipe, server, clients, seconds: float) -> dict:
    """One phase: set the tap and clients, wait out the warm-up, measure `seconds`."""
    pipe.taps[:] = [] if clients == "off" else [server]
    n = 0 if clients == "off" else clients
    proc = None
    if n:
        proc = subprocess.Popen(
            [sys.executable, "-c", CLIENT, str(server.port), str(n), str(seconds + WARMUP_S)],
            stdout=subprocess.PIPE,
            text=True,
        )
    time.sleep(WARMUP_S)
    t0 = time.monotonic()
    c0, ms0 = pipe.times.counts["total"], pipe.times.totals_ms["total"]
    enc0 = server.frames_encoded
    cpu0 = time.process_time()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    frames = pipe.times.counts["total"] - c0
    ms = pipe.times.totals_ms["total"] - ms0
    encoded = server.frames_encoded - enc0
    enc_ms = list(server.encode_ms)[-encoded:] if encoded else []
    got = None
    if proc is not None:
        out, _ = proc.communicate(timeout=seconds + 30)
        got = json.loads(out)
    return {
        "clients": clients,
        "wall_s": round(wall, 3),
        "frames": frames,
        "fps": round(frames / wall, 2),
        "frame_ms": round(ms / frames, 3) if frames else None,
        "encoded": encoded,
        "encode_ms": round(statistics.median(enc_ms), 3) if enc_ms else None,
        "cpu_cores": round(cpu / wall, 3),  # the whole process (pipeline + web) over the phase
        "client_frames_per_s": (
            round(statistics.mean(got["frames"]) / (seconds + WARMUP_S), 2) if got else None
        ),
        "client_states_per_s": (
            round(statistics.mean(got["states"]) / (seconds + WARMUP_S), 2) if got else None
        ),
        "rss_mb": rss_mb(),
    }


def summarise(runs: list[dict]) -> list[dict]:
    rows = []
    for k in PHASES:
        mine = [r for r in runs if r["clients"] == k]
        row = {
            "clients": k,
            "phases": len(mine),
            "fps": round(statistics.median(r["fps"] for r in mine), 2),
            "frame_ms": round(statistics.median(r["frame_ms"] for r in mine if r["frame_ms"]), 3),
        }
        enc = [r["encode_ms"] for r in mine if r["encode_ms"] is not None]
        row["encode_ms"] = round(statistics.median(enc), 3) if enc else None
        got = [r["client_frames_per_s"] for r in mine if r["client_frames_per_s"] is not None]
        row["client_frames_per_s"] = round(statistics.median(got), 2) if got else None
        st = [r["client_states_per_s"] for r in mine if r["client_states_per_s"] is not None]
        row["client_states_per_s"] = round(statistics.median(st), 2) if st else None
        row["cpu_cores"] = round(statistics.median(r["cpu_cores"] for r in mine), 3)
        row["rss_mb"] = max(r["rss_mb"] for r in mine)
        rows.append(row)
    base_off = rows[0]["fps"]
    base_0 = rows[1]["fps"]
    for row in rows:
        row["fps_vs_off"] = round(row["fps"] / base_off, 3) if base_off else None
        row["fps_vs_no_client"] = round(row["fps"] / base_0, 3) if base_0 else None
    return rows


def table(rows: list[dict]) -> str:
    head = (
        f"{'clients':>8} {'fps':>8} {'ms/frame':>9} {'vs off':>7} {'vs 0':>6} "
        f"{'encode ms':>10} {'jpeg/s':>7} {'sse/s':>6} {'cores':>6} {'RSS MB':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:

        def f(v, spec):
            width = int(spec[1:].split(".")[0])
            return format(v, spec) if v is not None else format("-", f">{width}")

        lines.append(
            f"{str(r['clients']):>8} {r['fps']:>8.1f} {r['frame_ms']:>9.2f} "
            f"{f(r['fps_vs_off'], '>7.3f')} {f(r['fps_vs_no_client'], '>6.3f')} "
            f"{f(r['encode_ms'], '>10.2f')} {f(r['client_frames_per_s'], '>7.1f')} "
            f"{f(r['client_states_per_s'], '>6.1f')} {r['cpu_cores']:>6.2f} {r['rss_mb']:>7.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.web_bench", description=__doc__)
    p.add_argument("--phase-s", type=float, default=8.0, help="measured seconds per phase")
    p.add_argument("--rounds", type=int, default=3, help="times each phase is repeated")
    p.add_argument("--fps", type=float, default=10.0, help="[web] max_fps (default 10)")
    p.add_argument("--width", type=int, default=640, help="[web] stream_width (default 640)")
    p.add_argument("--quality", type=int, default=70, help="[web] jpeg_quality (default 70)")
    p.add_argument(
        "--realtime",
        action="store_true",
        help="pace the video to its fps like a camera (default: as fast as processed)",
    )
    p.add_argument("--out", type=Path, default=OUT, help=f"JSON results (default {OUT})")
    args = p.parse_args(argv)
    if args.phase_s <= 0 or args.rounds < 1:
        p.error("--phase-s must be > 0 and --rounds >= 1")
    if not SAMPLE_VIDEO.is_file():
        print(f"web_bench: sample video missing: {SAMPLE_VIDEO}", file=sys.stderr)
        return 2

    info = machine_info()
    pipe, server, cfg = make_pipeline(args)
    rss_before_run = rss_mb()
    runner = threading.Thread(target=pipe.run, name="pipeline", daemon=True)
    runner.start()
    time.sleep(3.0)  # models warm, capture running
    runs = []
    try:
        for rnd in range(args.rounds):
            for k in PHASES:
                r = run_phase(pipe, server, k, args.phase_s)
                r["round"] = rnd
                runs.append(r)
                log(
                    f"round {rnd} clients {k}: {r['fps']:.1f} fps, {r['frame_ms']} ms/frame, "
                    f"encode {r['encode_ms']} ms, client got {r['client_frames_per_s']} jpeg/s"
                )
    finally:
        pipe.stop()
        runner.join(30)
    rows = summarise(runs)
    print(table(rows))
    result = {
        "benchmark": "web",
        "machine": info,
        "settings": {
            "source": str(SAMPLE_VIDEO.name),
            "realtime": bool(args.realtime),
            "phase_s": args.phase_s,
            "rounds": args.rounds,
            "warmup_s": WARMUP_S,
            "web": {
                "max_fps": cfg.web.max_fps,
                "stream_width": cfg.web.stream_width,
                "jpeg_quality": cfg.web.jpeg_quality,
            },
            "client": "one page = one /stream.mjpg reader + one /api/live reader (own process)",
        },
        "summary": rows,
        "rss_mb": {"before_run": rss_before_run, "peak": peak_rss_mb()},
        "phases": runs,
    }
    write_json(result, args.out)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
