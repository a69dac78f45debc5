"""Replay of the detector's output on a clip, for fast tuning of tracking and event rules.

Detection is the costliest stage of the run and, with detection on every frame, its output
depends only on the frames, the detector's code and its config. A run stores each clip's
detections under a key made of those three (the sha256 of device/detect/*.py,
preprocess.py and geometry.py, the [detector] table, the clip's generator digest); a later
run with the same key hands the stored detections to the pipeline in order instead of running
the detector, and everything after detection (tracker, classifier, smoothing, events) runs for
real.
A change to the detector's code or settings changes the key, so a stale replay cannot
happen; `--no-replay` turns it off. Cost figures are always timed live.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import asdict
from pathlib import Path


def detector_key(cfg, clip_params: str) -> str:
    import emotion_edge

    pkg = Path(emotion_edge.__file__).parent
    h = hashlib.sha256()
    # geometry.py: the detector's fusion and memory decide with it which boxes are one face
    code = [pkg / "preprocess.py", pkg / "geometry.py"]
    for path in sorted((pkg / "detect").glob("*.py")) + code:
        if path.is_file():
            h.update(path.name.encode())
            h.update(path.read_bytes())
    h.update(json.dumps(asdict(cfg.detector), sort_keys=True, default=str).encode())
    h.update(clip_params.encode())
    return h.hexdigest()[:20]


def load(path: Path) -> dict | None:
    """{"name", "frames": {index: [Detection]}} or None when absent or unreadable."""
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        return None
    return data if isinstance(data, dict) and "frames" in data else None


def save(path: Path, name: str, frames: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        pickle.dump({"name": name, "frames": frames}, f, protocol=5)
    tmp.replace(path)


class ReplayDetector:
    """Stored detections, frame by frame (by the feed's current index); anything else the
    pipeline asks of its detector goes to the real one."""

    def __init__(self, inner, stored: dict, feed) -> None:
        self.inner, self.frames, self.feed = inner, stored["frames"], feed
        self.name = stored["name"]

    def detect(self, gray):
        found = self.frames.get(self.feed.index)
        return list(found) if found is not None else self.inner.detect(gray)

    def __getattr__(self, name):
        return getattr(self.inner, name)
