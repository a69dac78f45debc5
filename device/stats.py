"""Per-stage latency figures and the few system readings the stats payload carries."""

from __future__ import annotations

import os
import resource
import sys
from collections import deque
from dataclasses import dataclass, field
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


@dataclass
class FrameCounters:
    """What the pipeline counts, frame by frame (the stats payload's `frames` and `events`)."""

    processed: int = 0
    skipped: int = 0  # gaps in source frame numbers: frames never processed
    detected: int = 0
    errors: int = 0
    events: dict[str, int] = field(
        default_factory=lambda: {"appeared": 0, "changed": 0, "disappeared": 0}
    )

    @property
    def events_total(self) -> int:
        return sum(self.events.values())


@dataclass
class BudgetFigures:
    budget_ms: float
    detect_every_n: int
    changes: int
    over_budget_frames: int


def _num(v) -> float | None:
    return None if v is None else round(float(v), 2)


def _int(v) -> int | None:
    return None if v is None else int(v)


def _str(v) -> str | None:
    return None if v in (None, "") else str(v)


def stats_payload(
    *,
    device_id: str,
    model_version: str,
    software_version: str,
    ts: float,
    uptime_s: float,
    interval_s: float,
    interval_frames: int,
    budget: BudgetFigures,
    counters: FrameCounters,
    stages_ms: dict,
    capture: dict,
    faces: int,
    detector: str,
    source_kind: str,
    output_mode: str,
    output_stats: dict,
    classifier: dict | None = None,
    detector_passes: dict | None = None,
) -> dict:
    """The `stats` payload (schemas/stats.schema.json) from the pipeline's figures
    (`classifier`: classify.auto_select.classifier_stats() of the pipeline's classifier)."""
    from emotion_edge.track.events import STATS_SCHEMA, iso_utc

    span = max(1e-6, interval_s)
    return {
        "schema": STATS_SCHEMA,
        "device_id": device_id,
        "model_version": model_version,
        "software_version": software_version,
        "timestamp": iso_utc(ts),
        "ts": round(ts, 3),
        "uptime_s": round(uptime_s, 3),
        "interval_s": round(span, 3),
        "fps": round(interval_frames / span, 2),
        "capture_fps": _num(capture.get("capture_fps")),
        "budget_ms": budget.budget_ms,
        "detect_every_n": budget.detect_every_n,
        "detect_every_n_changes": budget.changes,
        "frames": {
            "processed": counters.processed,
            "skipped": counters.skipped,
            "detected": counters.detected,
            "over_budget": budget.over_budget_frames,
            "errors": counters.errors,
            "read": _int(capture.get("frames_read")),
            "dropped_stale": _int(capture.get("frames_dropped")),
        },
        "stages_ms": stages_ms,
        "faces": faces,
        "events": dict(counters.events),
        "detector": detector,
        "detector_passes": {k: int(v) for k, v in (detector_passes or {}).items()},
        "classifier": classifier,
        "source": {
            "kind": source_kind,
            "reopen_count": _int(capture.get("reopen_count")),
            "files_skipped": int(capture.get("files_skipped") or 0),
            "last_error": _str(capture.get("last_error")),
            "ended": bool(capture.get("ended", False)),
        },
        "cpu_temp_c": cpu_temperature_c(),
        "load_avg_1m": load_average(),
        "rss_mb": rss_mb(),
        "output": output_mode,
        "mqtt": output_stats if output_mode == "mqtt" else None,
    }
