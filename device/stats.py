"""Per-stage latency figures and the few system readings the stats payload carries."""

from __future__ import annotations

import os
import resource
import sys
from collections import deque
from pathlib import Path

import numpy as np

STAGES = ("capture_wait", "detect", "classify", "track", "publish", "total", "latency")
THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")


class StageTimes:
    """Millisecond samples per stage since the last report, plus running totals.

    Reports are over the stats interval (not since start), so a slow minute shows up as a
    slow minute instead of being averaged away over a month of uptime.
    """

    def __init__(self, stages: tuple[str, ...] = STAGES, max_samples: int = 20000):
        self.stages = stages
        self._samples: dict[str, deque[float]] = {s: deque(maxlen=max_samples) for s in stages}
        self.totals_ms: dict[str, float] = dict.fromkeys(stages, 0.0)
        self.counts: dict[str, int] = dict.fromkeys(stages, 0)

    def add(self, stage: str, ms: float) -> None:
        self._samples[stage].append(ms)
        self.totals_ms[stage] += ms
        self.counts[stage] += 1

    def recent(self, stage: str) -> list[float]:
        return list(self._samples[stage])

    def summary(self, reset: bool = True) -> dict[str, dict]:
        """{stage: {"mean": ms, "p95": ms, "max": ms, "n": samples}} over the interval."""
        out = {}
        for s in self.stages:
            xs = np.fromiter(self._samples[s], float)
            if len(xs):
                out[s] = {
                    "mean": round(float(xs.mean()), 3),
                    "p95": round(float(np.percentile(xs, 95)), 3),
                    "max": round(float(xs.max()), 3),
                    "n": int(len(xs)),
                }
            else:
                out[s] = {"mean": None, "p95": None, "max": None, "n": 0}
            if reset:
                self._samples[s].clear()
        return out


def cpu_temperature_c(path: Path = THERMAL_ZONE) -> float | None:
    """CPU temperature in degrees C where the kernel exposes it (Pi, Jetson), else None."""
    try:
        return round(int(path.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


def rss_mb() -> float | None:
    """Resident set size now (Linux /proc), else peak RSS from getrusage."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None
