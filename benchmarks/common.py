"""Shared helpers: paths, timing statistics, machine/version facts for the results table."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOTION_EDGE_SHARED", REPO.parent / "shared"))
SAMPLES_DIR = SHARED / "samples"
SAMPLE_VIDEO = SAMPLES_DIR / "face_recognition" / "short_hamilton_clip.mp4"
RESULTS_DIR = REPO / "benchmarks" / "results"
CACHE_ROOT = Path(
    os.environ.get("EMOTION_EDGE_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "emotion-edge"
)


def default_model() -> Path:
    """The shipped int8 model (package data); may be absent until the trained model lands."""
    return REPO / "device" / "models" / "emotion_int8.tflite"


def default_single_model() -> Path:
    """The shipped one-net int8 model ([classifier] model = "auto" falls back to it)."""
    return REPO / "device" / "models" / "emotion_int8_single.tflite"


def time_calls(fn: Callable[[], object], runs: int, warmup: int = 10) -> dict:
    """Latency statistics (ms) of `runs` calls of fn after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    ms = np.empty(runs)
    for i in range(runs):
        t = time.perf_counter()
        fn()
        ms[i] = (time.perf_counter() - t) * 1000.0
    return stats_ms(ms)


def time_interleaved(
    fns: dict[str, Callable[[], object]], runs: int, warmup: int = 10, blocks: int = 10
) -> dict[str, dict]:
    """Latency statistics per function, timed in alternating blocks so that a change in
    machine load during the measurement hits every function alike (fair ratios)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    per_block = max(1, runs // blocks)
    while min(len(v) for v in samples.values()) < runs:
        for name, fn in fns.items():
            for _ in range(min(per_block, runs - len(samples[name]))):
                t = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - t) * 1000.0)
    return {k: stats_ms(v) for k, v in samples.items()}


def stats_ms(ms) -> dict:
    a = np.asarray(ms, dtype=np.float64)
    if not len(a):
        return {"n": 0}
    return {
        "n": int(len(a)),
        "median_ms": round(float(np.median(a)), 4),
        "p90_ms": round(float(np.percentile(a, 90)), 4),
        "p99_ms": round(float(np.percentile(a, 99)), 4),
        "mean_ms": round(float(a.mean()), 4),
        "min_ms": round(float(a.min()), 4),
    }


def _cpuinfo_value(*keys: str) -> str | None:
    """The first /proc/cpuinfo value whose name starts with one of `keys` (lower case)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(keys):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    return _cpuinfo_value("model name", "hardware") or platform.processor() or platform.machine()


# The int8 kernels' speed depends on these more than on the clock: with VNNI (x86) or dot
# product (ARM) an int8 multiply-add is one instruction, without it XNNPACK's int8 path runs
# no faster than its float path, and the ratio to the float peer changes several-fold.
# Filtered by the running arch: under qemu-user /proc/cpuinfo may still be the host's.
_ISA_FLAGS = {
    "x86_64": ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"),
    "aarch64": ("asimd", "asimddp", "i8mm"),
}


def cpu_isa() -> list[str]:
    """The SIMD features from /proc/cpuinfo that decide int8 inference speed."""
    have = set((_cpuinfo_value("flags", "features") or "").split())
    return [f for f in _ISA_FLAGS.get(platform.machine(), ()) if f in have]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git() -> dict:
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "device", "benchmarks"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return {"commit": rev or None, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def machine_info() -> dict:
    """Where the numbers came from. Under qemu, QEMU_CPU names the emulated CPU model."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    info = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "arch": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_isa": cpu_isa(),
        "cores": os.cpu_count(),
        # the benchmarks share the machine with whatever else runs; the load says how much
        "load_avg_at_start": load,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            d: _version(d)
            for d in (
                "numpy",
                "opencv-python-headless",
                "ai-edge-litert",
                "tensorflow",
                "emotion-edge",
            )
        },
        "git": _git(),
    }
    if os.environ.get("QEMU_CPU"):
        info["emulated_cpu"] = os.environ["QEMU_CPU"]
    if os.environ.get("EMOTION_EDGE_HOST_CPU"):
        info["host_cpu_model"] = os.environ["EMOTION_EDGE_HOST_CPU"]
    return info


def write_json(obj: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def log(msg: str) -> None:
    """Progress lines on stderr: results go to JSON, never mixed into stdout."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
