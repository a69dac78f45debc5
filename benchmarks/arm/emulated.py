"""Device-side benchmarks and a daemon smoke run on emulated aarch64 (qemu user mode).

Prepares (or reuses) the Debian 12 arm64 root from prepare_aarch64.py, copies the working
tree's `emotion_edge` (device/) and `benchmarks` packages next to it, then for each emulated
CPU (QEMU_CPU=cortex-a72 ~ Raspberry Pi 4, cortex-a76 ~ Pi 5) runs under
`qemu-aarch64-static -L ROOT ROOT/usr/bin/python3.11`:
  - benchmarks.device_bench (classifier latency, peer ratio, BlazeFace latency) in quick mode;
  - `emotion-edge --dry-run` on the sample video for a few frames (exit code, JSON lines).
Emulation is 100-500x slower than native: these figures say "it runs on aarch64" and show
relative regressions between commits; they are not Raspberry Pi speeds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.arm.prepare_aarch64 import PrepareError, prepare, write_cpuinfo
from benchmarks.common import REPO, SHARED, _cpu_model, log, write_json

CPUS = ("cortex-a72", "cortex-a76")
PI_NAMES = {"cortex-a72": "Raspberry Pi 4 class", "cortex-a76": "Raspberry Pi 5 class"}


def qemu_binary() -> str:
    for name in ("qemu-aarch64-static", "qemu-aarch64"):
        path = shutil.which(name)
        if path:
            return path
    raise PrepareError("qemu-aarch64-static not found: apt-get install qemu-user-static")


def _qemu_version(qemu: str) -> str:
    out = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "unknown"


def stage_app(dest: Path) -> Path:
    """The working tree's pure-python packages, as a site dir for the emulated interpreter."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "results")
    shutil.copytree(REPO / "device", dest / "emotion_edge", ignore=ignore)
    shutil.copytree(REPO / "benchmarks", dest / "benchmarks", ignore=ignore)
    return dest


def _env(root: Path, app: Path, cpu: str) -> dict:
    env = {
        "QEMU_CPU": cpu,
        "PYTHONPATH": f"/opt/site:{app}",
        "PYTHONDONTWRITEBYTECODE": "1",  # never write aarch64 caches into the shared tree
        "PYTHONNOUSERSITE": "1",
        "PATH": "/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "EMOTION_EDGE_SHARED": str(SHARED),
        "EMOTION_EDGE_HOST_CPU": _cpu_model(),
    }
    return env


def _python(root: Path, qemu: str) -> list[str]:
    return [qemu, "-L", str(root), str(root / "usr" / "bin" / "python3.11")]


def pitfall_check(root: Path, qemu: str, app: Path, model: Path) -> dict:
    """Show why the root carries /proc/cpuinfo: without it LiteRT crashes under QEMU 7.2."""
    cpuinfo = root / "proc" / "cpuinfo"
    saved = cpuinfo.read_bytes() if cpuinfo.is_file() else None
    code = (
        "from emotion_edge.classify.classifier import EmotionClassifier; "
        f"EmotionClassifier({str(model)!r}, num_threads=1); print('ok')"
    )
    result = {}
    try:
        for label in ("without_aarch64_cpuinfo", "with_aarch64_cpuinfo"):
            if label.startswith("without"):
                cpuinfo.unlink(missing_ok=True)
            else:
                write_cpuinfo(root, "cortex-a72")
            proc = subprocess.run(
                [*_python(root, qemu), "-c", code],
                env=_env(root, app, "cortex-a72"),
                capture_output=True,
                text=True,
                timeout=300,
            )
            result[label] = {
                "exit_code": proc.returncode,
                "crashed": proc.returncode < 0 or "signal 11" in proc.stderr,
            }
    finally:
        if saved is not None:
            cpuinfo.write_bytes(saved)
    return result


def run_cpu(
    root: Path, qemu: str, app: Path, cpu: str, model: Path, peer: Path | None, args
) -> dict:
    from benchmarks.pipeline_bench import daemon_run

    write_cpuinfo(root, cpu)
    env = _env(root, app, cpu)
    out: dict = {"qemu_cpu": cpu, "class": PI_NAMES.get(cpu, cpu)}
    with tempfile.TemporaryDirectory() as tmp:
        res_file = Path(tmp) / "device.json"
        cmd = [
            *_python(root, qemu),
            "-m",
            "benchmarks.device_bench",
            "--quick",
            "--json",
            str(res_file),
            "--model",
            str(model),
            "--runs",
            str(args.runs),
            "--threads",
            args.threads,
            "--batch-sizes",
            args.batch_sizes,
            "--warmup",
            "3",
            "--detectors",
            args.detectors,
            "--detector-runs",
            str(args.detector_runs),
        ]
        if peer is not None:
            cmd += ["--peer", str(peer)]
        t = time.perf_counter()
        proc = subprocess.run(
            cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=args.timeout
        )
        out["device_bench_wall_s"] = round(time.perf_counter() - t, 1)
        out["device_bench_exit_code"] = proc.returncode
        if proc.returncode == 0 and res_file.is_file():
            out["device_bench"] = json.loads(res_file.read_text())
        else:
            out["device_bench_error"] = proc.stderr[-1500:]
            log(f"{cpu}: device_bench failed ({proc.returncode}): {proc.stderr[-600:]}")
    if args.smoke_frames > 0:
        smoke = daemon_run(
            model,
            args.smoke_frames,
            prefix=[qemu, "-L", str(root)],
            python=str(root / "usr" / "bin" / "python3.11"),
            env=env,
            timeout=args.timeout,
        )
        smoke["note"] = "peak RSS is of the qemu process (guest + translator)"
        out["daemon_smoke"] = smoke
        log(
            f"{cpu}: daemon smoke exit {smoke['exit_code']}, "
            f"{smoke.get('frames_processed')} frames in {smoke['wall_s']} s"
        )
    return out


def run(args) -> dict:
    qemu = qemu_binary()
    t = time.perf_counter()
    root = prepare(force=args.force_prepare)
    prep_s = round(time.perf_counter() - t, 1)
    manifest = json.loads((root / "emotion-edge-root.json").read_text())
    model = Path(args.model).resolve()
    peer = Path(args.peer).resolve() if args.peer else None
    result: dict = {
        "qemu": _qemu_version(qemu),
        "host_cpu_model": _cpu_model(),
        "host_cores": os.cpu_count(),
        "root": {
            "path": str(root),
            "key": manifest["key"],
            "size_mb": round(manifest["size_bytes"] / 2**20, 1),
            "build_seconds": manifest["build_seconds"],
            "prepare_seconds_this_run": prep_s,
            "wheels": manifest["wheels"],
        },
        "note": "emulated figures: qemu user mode on the host CPU, not Raspberry Pi speeds",
        "cpus": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        app = stage_app(Path(tmp) / "app")
        if args.pitfall_check:
            result["cpuinfo_pitfall"] = pitfall_check(root, qemu, app, model)
            log(f"cpuinfo pitfall check: {result['cpuinfo_pitfall']}")
        for cpu in args.cpus.split(","):
            log(f"emulated {cpu}: running device benchmarks")
            result["cpus"].append(run_cpu(root, qemu, app, cpu, model, peer, args))
    return result


def build_parser() -> argparse.ArgumentParser:
    from benchmarks.common import default_model

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.arm.emulated",
        description="Run the device-side benchmarks and a daemon smoke test on emulated "
        "aarch64 (qemu-aarch64-static, Debian 12 arm64 root built without "
        "emulation). Emulated figures, never Pi speed claims.",
    )
    p.add_argument("--model", default=str(default_model()), help="int8 emotion .tflite")
    p.add_argument("--peer", default="", help="fer peer .tflite (empty: skip)")
    p.add_argument("--cpus", default=",".join(CPUS), help="QEMU_CPU models, comma-separated")
    p.add_argument("--threads", default="1", help="interpreter threads (comma-separated)")
    p.add_argument("--runs", type=int, default=30, help="timed classifier calls")
    p.add_argument("--batch-sizes", default="1,8", help="batch sizes for throughput")
    p.add_argument("--detectors", default="blazeface", help="detector kinds to time")
    p.add_argument("--detector-runs", type=int, default=10, help="timed frames per size")
    p.add_argument(
        "--smoke-frames",
        type=int,
        default=20,
        help="frames for the emotion-edge --dry-run smoke run (0: skip)",
    )
    p.add_argument(
        "--pitfall-check",
        action="store_true",
        help="also show LiteRT crashing without the root's aarch64 /proc/cpuinfo",
    )
    p.add_argument("--force-prepare", action="store_true", help="rebuild the arm64 root")
    p.add_argument("--timeout", type=float, default=900, help="seconds per emulated command")
    p.add_argument("--json", required=True, help="write results here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except PrepareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_json(result, Path(args.json))
    failed = [
        c["qemu_cpu"]
        for c in result["cpus"]
        if c.get("device_bench_exit_code") != 0
        or c.get("daemon_smoke", {}).get("exit_code", 0) != 0
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
