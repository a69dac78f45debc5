"""Recording straight from a source, without a broker: a video file or a folder of photos.

The daemon's own parts run in-process, as fast as the CPU allows (config pipeline.realtime =
false, and no budget adaptation: detection on every frame unless the config says otherwise).

- video: frames go through the daemon's Pipeline (detector, classifier, tracker, smoother,
  event engine). Each frame is stamped with its time in the clip, `start + index / fps`, so
  smoothing, dwell times, events and timeline samples follow the clip's clock, not the
  speed of this machine; timeline samples every `interval_s` of clip time (0: every frame).
- images: each photo is its own frame, detected and classified alone (no tracking across
  photos, no smoothing, no events): one timeline row per detected face per photo, with the
  photo's file name, stamped with the file's modification time. Files that are no image, are
  damaged or are over [source] max_image_pixels (read from the header, never decoded) are
  skipped, counted (`files_skipped`) and logged once each.

Payloads are queued to the same Writer as MQTT messages, through the same checks. A session
marker pair (start at the first frame, end at the last) names the run, with the participant,
group and tags given; a schedule file adds stimulus markers relative to the start.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from emotion_edge.config import load_config
from emotion_edge.errors import ConfigError
from emotion_edge.track.events import FaceObservation
from emotion_edge.track.timeline import TimelineSampler, timeline_payload
from emotion_edge_record.ingest import Pending, Writer
from emotion_edge_record.payloads import marker_payload, read_schedule, schedule_markers

log = logging.getLogger(__name__)
_ID_BAD = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass
class OfflineSummary:
    kind: str
    source: str
    device_id: str
    session: str
    frames: int = 0
    samples: int = 0
    faces: int = 0
    events: dict = field(default_factory=dict)
    errors: int = 0
    files_skipped: int = 0  # images: not an image, damaged or over max_image_pixels
    elapsed_s: float = 0.0
    source_fps: float | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["fps"] = round(self.fps, 2)
        if self.source_fps:
            d["realtime_factor"] = round(self.fps / self.source_fps, 2)
        return d


class _RecordOutput:
    """The pipeline's Output for in-process runs: events and timeline to the Writer."""

    mode = "record"
    broken = False

    def __init__(self, writer: Writer):
        self.writer = writer
        self.events: Counter = Counter()
        self.samples = 0
        self.faces = 0

    def _put(self, payload: dict) -> None:
        self.writer.submit(Pending(json.dumps(payload), None, None, time.time()))

    def start(self) -> None:
        pass

    def publish_event(self, payload: dict) -> None:
        self.events[payload["kind"]] += 1
        self._put(payload)

    def publish_timeline(self, payload: dict) -> None:
        self.samples += 1
        self.faces += len(payload["faces"])
        self._put(payload)

    def publish_state(self, payload: dict) -> None:
        pass

    def publish_stats(self, payload: dict) -> None:
        pass

    def healthy(self) -> bool:
        return True

    def delivery_summary(self) -> str:
        return ""

    def stats(self) -> dict:
        return {"events": dict(self.events), "samples": self.samples}

    def stop(self, timeout: float = 5.0) -> None:
        pass


def default_device_id(uri: str) -> str:
    stem = Path(uri.rstrip("/")).expanduser().stem or "offline"
    return (_ID_BAD.sub("_", stem).lstrip("_.-") or "offline")[:64]


def offline_config(kind: str, uri: str, device_id: str, config_path: str | None, model, detector):
    over: dict[str, dict] = {
        "device": {"id": device_id},
        "source": {"kind": kind, "uri": uri, "loop": False},
        "pipeline": {"realtime": False, "adaptive": False},
        "output": {"mode": "stdout"},
        "mqtt": {"enabled": False},
    }
    if model:
        over["classifier"] = {"model_path": model}
    if detector:
        over["detector"] = {"kind": detector}
    return load_config(config_path, over)


def record_source(
    spec: str,
    writer: Writer,
    *,
    config_path: str | None = None,
    model: str | None = None,
    detector: str | None = None,
    device_id: str | None = None,
    interval_s: float = 0.0,
    session: str | None = None,
    participant: str | None = None,
    group: str | None = None,
    tags: tuple[str, ...] = (),
    schedule: str | None = None,
    start_ts: float | None = None,
    progress: bool = True,
    max_frames: int | None = None,
) -> OfflineSummary:
    """Run the source through the daemon's parts into `writer`; see the module docstring."""
    from emotion_edge.cli import parse_source_spec

    kind, uri = parse_source_spec(spec)
    if kind not in ("video", "images") or not uri:
        raise ConfigError(
            f"--source {spec!r}: recording in-process reads video:FILE or images:FOLDER"
        )
    device_id = device_id or default_device_id(uri)
    cfg = offline_config(kind, uri, device_id, config_path, model, detector)
    schedule_rows = read_schedule(schedule) if schedule else []
    t0 = time.time() if start_ts is None else start_ts
    session = session or f"{device_id}-{datetime.fromtimestamp(t0).strftime('%Y%m%dT%H%M%S')}"
    summary = OfflineSummary(kind, spec, device_id, session)
    who = {
        "participant": participant,
        "group": group,
        "tags": tags,
        "source": "emotion-edge-record",
    }
    if kind == "video":
        first, last = _record_video(cfg, writer, interval_s, t0, summary, progress, max_frames)
    else:
        first, last = _record_images(cfg, writer, summary, progress, max_frames)
    if summary.frames:
        marks = [
            marker_payload(device_id, "session", "start", session, first - 1e-3, **who),
            marker_payload(device_id, "session", "end", session, last + 1e-3, **who),
        ]
        src = f"schedule:{Path(schedule).name}" if schedule else "emotion-edge-record"
        marks += schedule_markers(schedule_rows, device_id, first, session=session, source=src)
        for m in marks:
            writer.submit(Pending(json.dumps(m), None, None, time.time()))
    return summary


def _bar(total: int | None, progress: bool, unit: str):
    from tqdm import tqdm

    return tqdm(
        total=total or None, unit=unit, disable=not progress, file=sys.stderr, dynamic_ncols=True
    )


def _record_video(cfg, writer, interval_s, t0, summary, progress, max_frames):
    from emotion_edge.app import build_pipeline
    from emotion_edge.video.sources import make_source

    out = _RecordOutput(writer)
    pipe = build_pipeline(cfg, output=out)
    pipe.timeline = TimelineSampler(
        interval_s, pipe.classifier.labels, summary.device_id, pipe.model_version
    )
    src = make_source(cfg.source)
    src.open()
    fps = float(src.pace_fps or cfg.source.fps)
    summary.source_fps = round(fps, 3)
    total = getattr(src, "frame_count", 0)
    if max_frames:
        total = min(total, max_frames) if total else max_frames
    started = time.monotonic()
    first = last = t0
    try:
        with _bar(total, progress, "frame") as bar:
            while max_frames is None or summary.frames < max_frames:
                frame = src.read()
                if frame is None:
                    break
                frame.timestamp = last = t0 + frame.index / fps
                try:
                    pipe.process(frame)
                except Exception:  # noqa: BLE001 - one bad frame is counted, not fatal
                    summary.errors += 1
                    if summary.errors <= 3:
                        log.exception("frame %d failed", frame.index)
                summary.frames += 1
                bar.update(1)
    finally:
        src.close()
    summary.elapsed_s = round(time.monotonic() - started, 3)
    summary.samples, summary.faces, summary.events = out.samples, out.faces, dict(out.events)
    return first, last


def _record_images(cfg, writer, summary, progress, max_frames):
    import numpy as np
    from emotion_edge.classify.classifier import load_classifier
    from emotion_edge.detect.detector import make_detector
    from emotion_edge.video.sources import make_source

    classifier = load_classifier(cfg.classifier)
    detector = make_detector(cfg.detector)
    src = make_source(cfg.source)
    src.open()
    folder = Path(cfg.source.uri).expanduser()
    started = time.monotonic()
    times: list[float] = []
    total = len(src.files) if max_frames is None else min(len(src.files), max_frames)
    try:
        with _bar(total, progress, "photo") as bar:
            while max_frames is None or summary.frames < max_frames:
                frame = src.read()
                if frame is None:
                    break
                ts = (folder / frame.name).stat().st_mtime if frame.name else time.time()
                try:
                    dets = detector.detect(frame.image)
                    boxes = [d.box for d in dets]
                    probs = classifier.classify(frame.image, boxes) if boxes else []
                    faces = [
                        FaceObservation(i + 1, b, 1, np.asarray(p))
                        for i, (b, p) in enumerate(zip(boxes, probs, strict=True))
                    ]
                    payload = timeline_payload(
                        summary.device_id,
                        classifier.version,
                        classifier.labels,
                        faces,
                        frame.index,
                        frame.size,
                        ts,
                        file_name=frame.name,
                    )
                except Exception:  # noqa: BLE001 - one bad photo is counted, not fatal
                    summary.errors += 1
                    if summary.errors <= 3:
                        log.exception("photo %s failed", frame.name)
                    continue
                finally:
                    summary.frames += 1
                    bar.update(1)
                times.append(ts)
                summary.samples += 1
                summary.faces += len(faces)
                writer.submit(Pending(json.dumps(payload), None, None, time.time()))
    finally:
        summary.files_skipped = src.files_skipped  # each logged once by the source
        src.close()
    summary.elapsed_s = round(time.monotonic() - started, 3)
    return (min(times), max(times)) if times else (time.time(), time.time())
