"""The real daemon pipeline, in process, on a clip, with everything it said recorded.

`build_pipeline` (the daemon's own wiring, app.py) builds detector, classifier, tracker and
events from an AppConfig; then three recorders are put in: the detector is wrapped to keep
its raw boxes per frame, a frame tap keeps the tracked faces per frame, and a collecting
Output keeps every event, state and timeline payload. The capture thread is replaced by a
feed that hands over every frame of the file in order (nothing dropped) with the clip's own
time (frame index / fps) as capture time and as the pipeline's clock, so dwell times,
smoothing and track hold see clip seconds however fast this machine processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 has the tomli backport
    import tomli as tomllib  # type: ignore[no-redef]

from benchmarks.room import detcache

# Today's defaults (before issue 39), pinned so "before" stays before whatever the code's
# defaults become. Keys the config no longer has are dropped (and reported).
BEFORE_PINS: dict[str, dict] = {
    "detector": {"kind": "blazeface", "min_score": 0.5, "nms_iou": 0.3, "min_face_px": 24},
    "tracking": {
        "iou_threshold": 0.3,
        "max_missed": 5,
        "min_hits": 2,
        "smoothing_tau_s": 0.5,
        "min_confidence": 0.4,
        "hysteresis": 0.1,
        "min_dwell_s": 0.5,
        "velocity_alpha": 0.5,
    },
    "classifier": {"flip_average": "model"},
}
# Keys added by issue 39, at the values that behave as before them (pinned when present).
BEFORE_NEW_KEYS: dict[str, dict] = {
    "classifier": {"model": "pair"},  # the two-net file only, never switched
    # missed runs alone end a track; IoU only; one margin, no change points
    "tracking": {"hold_s": 0.0, "max_jump": 0.0, "change_distance": 1.0, "revert_s": 0.0},
}
T0 = 1_790_000_000.0  # the clip's frame 0 as epoch seconds (any fixed value does)


class UsageError(ValueError):
    """A bad command-line value (exit 2 with its one-line message)."""


def parse_override(text: str) -> tuple[str, str, object]:
    """'table.key=value' -> (table, key, value); the value is read as TOML (true, 1.5,
    "x") and else taken as a plain string (detector.kind=auto)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise UsageError(f"override {text!r}: expected table.key=value")
    path, raw = text.split("=", 1)
    table, key = path.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return table, key, value


# The keys these tables had before issue 39 (pinned above or irrelevant to the benchmark).
KEYS_BEFORE: dict[str, set[str]] = {
    "detector": {"kind", "model_path", "min_score", "nms_iou", "min_face_px", "num_threads"},
    "classifier": {"model_path", "num_threads", "max_batch", "flip_average"},
    "tracking": {
        "iou_threshold",
        "max_missed",
        "min_hits",
        "smoothing_tau_s",
        "min_confidence",
        "hysteresis",
        "min_dwell_s",
        "top_k",
        "velocity_alpha",
    },
}


def before_pins() -> tuple[dict, list[str], list[str]]:
    """BEFORE_PINS (+ BEFORE_NEW_KEYS) restricted to keys the config has, plus the old
    packaged two-net model file; the pinned keys the config lacks; and keys added since
    that "before" runs at their current defaults (nobody told us their old behaviour)."""
    from emotion_edge.config import TABLES
    from emotion_edge.models import MODELS_DIR

    pins: dict[str, dict] = {}
    dropped, unpinned = [], []
    for table, values in BEFORE_PINS.items():
        names = {f.name for f in fields(TABLES[table])}
        for k, v in values.items():
            if k in names:
                pins.setdefault(table, {})[k] = v
            else:
                dropped.append(f"{table}.{k}")
    for table, values in BEFORE_NEW_KEYS.items():
        names = {f.name for f in fields(TABLES[table])}
        pins.setdefault(table, {}).update({k: v for k, v in values.items() if k in names})
    pins["classifier"]["model_path"] = str(MODELS_DIR / "emotion_int8.tflite")
    for table, old in KEYS_BEFORE.items():
        for f in fields(TABLES[table]):
            if f.name not in old and f.name not in pins.get(table, {}):
                unpinned.append(f"{table}.{f.name}")
    return pins, dropped, unpinned


def base_overrides(video: Path, adaptive: bool) -> dict:
    """What every variant shares: the clip as a video source read once, single-threaded
    LiteRT (the cost figures are per core), a timeline sample every frame (an interval
    under the clips' frame period; 0 would turn the timeline off), no web."""
    return {
        "device": {"id": "synthetic-room"},
        "source": {"kind": "video", "uri": str(video), "loop": False},
        "detector": {"num_threads": 1},
        "classifier": {"num_threads": 1},
        "pipeline": {
            "realtime": False,
            "adaptive": adaptive,
            "stats_interval_s": 86400.0,
            "state_interval_s": 86400.0,
        },
        "output": {"mode": "stdout", "timeline_interval_s": 0.05},
        "web": {"enabled": False},
    }


def make_config(video: Path, adaptive: bool, *layers: dict):
    from emotion_edge.config import load_config

    merged = base_overrides(video, adaptive)
    for layer in layers:
        for table, values in layer.items():
            merged.setdefault(table, {}).update(values)
    return load_config(None, merged)


# -- recorders ----------------------------------------------------------------------------------


class CollectingOutput:
    """An Output that keeps every payload (events, states, timeline samples, stats)."""

    mode = "stdout"
    broken = False

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.states: list[dict] = []
        self.timeline: list[dict] = []
        self.stats_payloads: list[dict] = []

    def start(self) -> None:
        pass

    def publish_event(self, payload: dict) -> None:
        self.events.append(payload)

    def publish_state(self, payload: dict) -> None:
        self.states.append(payload)

    def publish_stats(self, payload: dict) -> None:
        self.stats_payloads.append(payload)

    def publish_timeline(self, payload: dict) -> None:
        self.timeline.append(payload)

    def stats(self) -> dict:
        return {"events": len(self.events), "timeline": len(self.timeline)}

    def healthy(self) -> bool:
        return True

    def delivery_summary(self) -> str:
        return ""

    def stop(self, timeout: float = 5.0) -> None:
        pass


class ClipFeed:
    """Every frame of a file source in order, stamped with clip time (see module doc)."""

    def __init__(self, source, fps: float) -> None:
        self.source, self.fps = source, fps
        self.index = -1
        self.name: str | None = None
        self.frames_read = 0
        self._ended = False

    def now(self) -> float:
        return T0 + max(self.index, 0) / self.fps

    def start(self) -> None:
        self.source.open()

    def latest(self, timeout: float):
        if self._ended:
            return None
        frame = self.source.read()
        if frame is None:
            self._ended = True
            return None
        self.index, self.name = frame.index, frame.name
        frame.timestamp = self.now()
        self.frames_read += 1
        return frame

    @property
    def ended(self) -> bool:
        return self._ended

    def stats(self) -> dict:
        return {"frames_read": self.frames_read, "frames_dropped": 0, "ended": self._ended}

    def stop(self, timeout: float = 5.0) -> None:
        self.source.close()


class RecordingDetector:
    """The pipeline's detector, its raw detections and time kept per frame (also through
    `scan_all`, the every-view pass a detector may offer for photos)."""

    def __init__(self, inner, feed: ClipFeed) -> None:
        self.inner, self.feed = inner, feed
        self.name = inner.name
        self.boxes: dict[int, list[tuple]] = {}
        self.raw: dict[int, list] = {}  # frame -> Detection objects (box, score)
        self.names: dict[int, str | None] = {}  # frame -> file name (images source)
        self.ms: list[float] = []

    def _record(self, fn, gray):
        t = time.perf_counter()
        dets = fn(gray)
        self.ms.append((time.perf_counter() - t) * 1e3)
        i = self.feed.index
        self.boxes[i] = [tuple(float(v) for v in d.box) for d in dets]
        self.raw[i] = list(dets)
        self.names[i] = self.feed.name
        return dets

    def detect(self, gray):
        return self._record(self.inner.detect, gray)

    def __getattr__(self, name):  # anything else the pipeline asks of its detector
        attr = getattr(self.inner, name)
        if name == "scan_all":
            return lambda gray: self._record(attr, gray)
        return attr


class RecordingClassifier:
    """The pipeline's classifier, its time and face count kept per call."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[tuple[int, float]] = []  # (faces, ms)

    def classify(self, gray, boxes, *args, **kwargs):
        t = time.perf_counter()
        out = self.inner.classify(gray, boxes, *args, **kwargs)
        self.calls.append((len(boxes), (time.perf_counter() - t) * 1e3))
        return out

    def __getattr__(self, name):
        return getattr(self.inner, name)


class TrackTap:
    """A FrameTap keeping each frame's tracked faces: (face_id, box, detected)."""

    def __init__(self) -> None:
        self.tracks: dict[int, list[tuple[int, tuple]]] = {}
        self.undetected = 0

    def on_frame(self, frame, faces) -> None:
        rows = []
        for f in faces:
            if getattr(f, "detected", True) is False:
                self.undetected += 1
            rows.append((int(f.face_id), tuple(float(v) for v in f.box)))
        self.tracks[frame.index] = rows

    def close(self) -> None:
        pass


@dataclass
class RunRecord:
    detector: str
    model_version: str
    frames: int
    wall_s: float
    boxes: dict[int, list[tuple]]
    tracks: dict[int, list[tuple[int, tuple]]]
    events: list[dict]
    timeline: list[dict]
    detect_ms: list[float]
    classify_calls: list[tuple[int, float]]
    frames_detected: int
    undetected_carried: int
    stats: dict = field(default_factory=dict)
    raw: dict[int, list] = field(default_factory=dict)  # frame -> Detection objects
    names: dict[int, str | None] = field(default_factory=dict)  # frame -> file name
    replayed: bool = False  # detections came from an earlier run (detcache.py)

    def scorer_events(self) -> list[dict]:
        return [
            {
                "kind": e["kind"],
                "face_id": e["face_id"],
                "emotion": e["emotion"],
                "frame": e["frame"]["index"],
                "box": e.get("box"),
            }
            for e in self.events
        ]

    def scorer_samples(self) -> list[dict]:
        return [{"frame": s["frame"]["index"], "faces": s["faces"]} for s in self.timeline]


def run_clip(
    cfg, fps: float, replay_dir: Path | None = None, clip_params: str = ""
) -> tuple[RunRecord, object]:
    """Run the daemon's pipeline over cfg.source (a file) once; (record, pipeline).

    With `replay_dir` (detection on every frame only), detections stored by an earlier run
    of the same detector code and settings on the same clip are replayed (detcache.py)."""
    from emotion_edge.app import build_pipeline
    from emotion_edge.video.sources import make_source

    out = CollectingOutput()
    pipe = build_pipeline(cfg, output=out)
    feed = ClipFeed(make_source(cfg.source), fps)
    pipe.capture = feed
    pipe.clock = feed.now
    inner, stored, cache_path = pipe.detector, None, None
    if replay_dir is not None and not cfg.pipeline.adaptive and cfg.pipeline.detect_every_n == 1:
        cache_path = Path(replay_dir) / f"{detcache.detector_key(cfg, clip_params)}.pkl"
        stored = detcache.load(cache_path)
        if stored is not None:
            inner = detcache.ReplayDetector(pipe.detector, stored, feed)
    det = RecordingDetector(inner, feed)
    clf = RecordingClassifier(pipe.classifier)
    pipe.detector, pipe.classifier = det, clf
    tap = TrackTap()
    pipe.taps.append(tap)
    t = time.perf_counter()
    summary = pipe.run()
    wall = time.perf_counter() - t
    # the real detector back (not the replay): the cost rows time what this pipeline runs
    real = inner.inner if isinstance(inner, detcache.ReplayDetector) else inner
    pipe.detector, pipe.classifier = real, clf.inner
    if pipe.counters.errors:
        # a benchmark scoring a pipeline that failed on frames would report nonsense
        raise RuntimeError(
            f"the pipeline failed on {pipe.counters.errors} frames of {cfg.source.uri} "
            "(see the log above)"
        )
    if cache_path is not None and stored is None and len(det.raw) == summary.frames_processed:
        detcache.save(cache_path, det.name, det.raw)
    record = RunRecord(
        detector=det.name,
        model_version=str(pipe.model_version),
        frames=summary.frames_processed,
        wall_s=round(wall, 2),
        boxes=det.boxes,
        tracks=tap.tracks,
        events=out.events,
        timeline=out.timeline,
        detect_ms=det.ms,
        classify_calls=clf.calls,
        frames_detected=len(det.boxes),
        undetected_carried=tap.undetected,
        stats=summary.stats or {},
        raw=det.raw,
        names=det.names,
        replayed=stored is not None,
    )
    return record, pipe


def median(values) -> float | None:
    values = list(values)
    return round(float(np.median(values)), 2) if values else None
