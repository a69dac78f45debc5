"""Throughput of the image analysis API: images/s and latency with 1 and 4 concurrent clients.

    python -m benchmarks.analyze_bench [--phase-s 10] [--rounds 2] [--workers 2]
                                       [--scan photo|frame] [--out FILE]

The server is the installed `emotion-edge-analyze --web` (its own process, default detector
and the shipped int8 model); each client is a thread with one keep-alive connection that posts
the sample photos (../shared/samples: face_recognition/ and dlib_faces/ JPEG/PNG) one after
another as raw bodies, round robin, and waits for each answer. Phases alternate (1, 4, 1, 4
clients, ...) so a change in machine load hits both alike; the first second of each phase is
not counted. Reports images/s (answers with 200 per second), latency median / p95, 429s and
the faces found. Writes JSON to benchmarks/results/analyze.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.common import RESULTS_DIR, SAMPLES_DIR, log, machine_info, write_json

OUT = RESULTS_DIR / "analyze.json"
WARMUP_S = 1.0
CLIENTS = (1, 4)


def sample_photos() -> list[tuple[str, bytes, str]]:
    """Every JPEG/PNG sample (by content: opencv/messi5.jpg is WebP and is left out)."""
    from emotion_edge.analyze.image import ImageError, image_format

    out = []
    for sub in ("face_recognition", "dlib_faces", "opencv"):
        for p in sorted((SAMPLES_DIR / sub).glob("*")):
            if p.suffix.lower() not in (".jpg", ".jpeg", ".png"):
                continue
            data = p.read_bytes()
            try:
                fmt = image_format(data)
            except ImageError:
                continue
            out.append((f"{sub}/{p.name}", data, f"image/{fmt}"))
    return out


def start_server(port: int, workers: int, queue: int) -> subprocess.Popen:
    exe = shutil.which("emotion-edge-analyze", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "emotion_edge.analyze.cli"]
    proc = subprocess.Popen(
        [*cmd, "--web", str(port), "--workers", str(workers), "--queue", str(queue)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.3)
    raise SystemExit("server did not answer /healthz within 60 s")


def client(
    port: int, photos, offset: int, stop_at: float, count_from: float, out: dict, path: str
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    i = offset
    while time.monotonic() < stop_at:
        name, body, ctype = photos[i % len(photos)]
        i += 1
        t0 = time.monotonic()
        conn.request("POST", path, body=body, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        data = resp.read()
        t1 = time.monotonic()
        if t0 < count_from:
            continue
        if resp.status == 200:
            out["latency_ms"].append((t1 - t0) * 1000.0)
            out["faces"] += json.loads(data)["face_count"]
            out["ok"] += 1
        elif resp.status == 429:
            out["busy"] += 1
        else:
            out["errors"] += 1
    conn.close()


def phase(port: int, photos, n: int, seconds: float, path: str) -> dict:
    start = time.monotonic()
    count_from, stop_at = start + WARMUP_S, start + WARMUP_S + seconds
    outs = [{"latency_ms": [], "faces": 0, "ok": 0, "busy": 0, "errors": 0} for _ in range(n)]
    threads = [
        threading.Thread(
            target=client,
            args=(port, photos, k * 7, stop_at, count_from, outs[k], path),
            daemon=True,
        )
        for k in range(n)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    span = time.monotonic() - count_from  # the last answers may land after stop_at
    lat = sorted(x for o in outs for x in o["latency_ms"])
    ok = sum(o["ok"] for o in outs)
    return {
        "clients": n,
        "seconds": round(span, 2),
        "images": ok,
        "images_per_s": round(ok / span, 2),
        "latency_ms_median": round(statistics.median(lat), 1) if lat else None,
        "latency_ms_p95": round(lat[math.ceil(0.95 * len(lat)) - 1], 1) if lat else None,
        "busy_429": sum(o["busy"] for o in outs),
        "errors": sum(o["errors"] for o in outs),
        "faces": sum(o["faces"] for o in outs),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--phase-s", type=float, default=10.0, help="counted seconds per phase")
    p.add_argument("--rounds", type=int, default=2, help="1-client / 4-client rounds")
    p.add_argument("--workers", type=int, default=2, help="server --workers (2)")
    p.add_argument("--queue", type=int, default=4, help="server --queue (4)")
    p.add_argument(
        "--scan", choices=("photo", "frame"), default="photo", help="the API's scan option"
    )
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    photos = sample_photos()
    if not photos:
        raise SystemExit(f"no sample photos under {SAMPLES_DIR}")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log(f"{len(photos)} sample photos; server: {args.workers} workers, queue {args.queue}")
    proc = start_server(port, args.workers, args.queue)
    phases = []
    try:
        for r in range(args.rounds):
            for n in CLIENTS:
                res = phase(port, photos, n, args.phase_s, f"/api/v1/analyze?scan={args.scan}")
                log(f"round {r + 1}, {n} client(s): {res}")
                phases.append(res)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    summary = {}
    for n in CLIENTS:
        rows = [x for x in phases if x["clients"] == n]
        summary[str(n)] = {
            "images_per_s": round(statistics.median(x["images_per_s"] for x in rows), 2),
            "latency_ms_median": round(statistics.median(x["latency_ms_median"] for x in rows), 1),
            "latency_ms_p95": round(statistics.median(x["latency_ms_p95"] for x in rows), 1),
            "busy_429": sum(x["busy_429"] for x in rows),
            "errors": sum(x["errors"] for x in rows),
        }
    result = {
        "machine": machine_info(),
        "command": "python -m benchmarks.analyze_bench " + " ".join(argv or sys.argv[1:]),
        "photos": [name for name, _, _ in photos],
        "server": {"workers": args.workers, "queue": args.queue},
        "scan": args.scan,
        "phases": phases,
        "summary": summary,
    }
    write_json(result, args.out)
    print(f"{'clients':>7} {'images/s':>9} {'median ms':>10} {'p95 ms':>8} {'429':>5}")
    for n, row in summary.items():
        print(
            f"{n:>7} {row['images_per_s']:>9} {row['latency_ms_median']:>10} "
            f"{row['latency_ms_p95']:>8} {row['busy_429']:>5}"
        )
    one, four = summary["1"]["images_per_s"], summary["4"]["images_per_s"]
    print(f"4 clients / 1 client: {four / one:.2f}x images/s" if one else "")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
