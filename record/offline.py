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

import hashlib
import json
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from emotion_edge.config import load_config
from emotion_edge.detect.detector import detect_photo
from emotion_edge.errors import ConfigError
from emotion_edge.preprocess import eye_roll_deg
from emotion_edge.track.events import FaceObservation
from emotion_edge.track.timeline import TimelineSampler, timeline_payload
from emotion_edge_record.ingest import Pending, Writer
from emotion_edge_record.payloads import marker_payload, read_schedule, schedule_markers
from emotion_edge_record.store import markers, samples
from emotion_edge_record.timebase import NO_CLOCK_EPOCH, exif_time, mp4_creation_time
from sqlalchemy import and_, func, select

log = logging.getLogger(__name__)
_ID_BAD = re.compile(r"[^A-Za-z0-9_.-]")


class OverlapError(ValueError):
    """This file's time span on this device is taken by another session: a user error."""


@dataclass
class OfflineSummary:
    kind: str
    source: str
    device_id: str
    session: str
    frames: int = 0
    samples: int = 0  # timeline samples: one per sampled frame or photo
    face_rows: int = 0  # timeline_faces rows: one per face in a sample
    events: dict = field(default_factory=dict)
    errors: int = 0
    files_skipped: int = 0  # images: not an image, damaged or over max_image_pixels
    elapsed_s: float = 0.0
    source_fps: float | None = None
    start_ts: float | None = None
    time_source: str = ""
    skipped: bool = False

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

    def __init__(self, writer: Writer, id_prefix: str = ""):
        self.writer = writer
        self.id_prefix = id_prefix
        self.events: Counter = Counter()
        self.samples = 0
        self.faces = 0
        self._n_events = 0

    def _put(self, payload: dict) -> None:
        self.writer.submit(Pending(json.dumps(payload), None, None, time.time()))

    def start(self) -> None:
        pass

    def publish_event(self, payload: dict) -> None:
        self.events[payload["kind"]] += 1
        self._n_events += 1
        if self.id_prefix:
            payload["event_id"] = event_id(self.id_prefix, self._n_events)
        self._put(payload)

    def publish_timeline(self, payload: dict) -> None:
        if self.id_prefix:
            payload["sample_id"] = sample_id(self.id_prefix, payload["frame"]["index"])
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


def id_prefix(device_id: str, session: str, start: float) -> str:
    """12 hex digits naming one run of one file: its samples' and events' ids start with it."""
    return hashlib.sha1(f"{device_id}\0{session}\0{start:.3f}".encode()).hexdigest()[:12]


def sample_id(prefix: str, frame_index: int) -> str:
    return f"{prefix}{frame_index:020d}"


def event_id(prefix: str, n: int) -> str:
    return f"{prefix}e{n:019d}"


def default_device_id(uri: str) -> str:
    stem = Path(uri.rstrip("/")).expanduser().stem or "offline"
    return (_ID_BAD.sub("_", stem).lstrip("_.-") or "offline")[:64]


def offline_config(
    kind: str,
    uri: str,
    device_id: str,
    config_path: str | None,
    model,
    detector,
    threads: int | None = None,
):
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
    if threads:  # worker processes: one LiteRT thread each, the processes share the cores
        over.setdefault("classifier", {})["num_threads"] = threads
        over.setdefault("detector", {})["num_threads"] = threads
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
    meta: dict | None = None,
    schedule: str | None = None,
    start_ts: float | None = None,
    progress: bool = True,
    max_frames: int | None = None,
    annotate: str | Path | None = None,
    on_frames: Callable[[int], None] | None = None,
    threads: int | None = None,
) -> OfflineSummary:
    """Run the source through the daemon's parts into `writer`; see the module docstring."""
    from emotion_edge.cli import parse_source_spec

    kind, uri = parse_source_spec(spec)
    if kind not in ("video", "images") or not uri:
        raise ConfigError(
            f"--source {spec!r}: recording in-process reads video:FILE or images:FOLDER"
        )
    device_id = device_id or default_device_id(uri)
    cfg = offline_config(kind, uri, device_id, config_path, model, detector, threads)
    schedule_rows = read_schedule(schedule) if schedule else []
    session = session or default_device_id(uri)
    summary = OfflineSummary(kind, spec, device_id, session)
    if already_recorded(writer.store, device_id, session):
        log.info("%s: session %s of %s already recorded: skipped", spec, session, device_id)
        summary.skipped = True
        return summary
    if kind == "video":
        t0, summary.time_source = video_start(uri, start_ts)
    else:
        t0, summary.time_source = (start_ts, "--start") if start_ts is not None else (None, "")
    summary.start_ts = t0
    prefix = id_prefix(device_id, session, t0 if t0 is not None else NO_CLOCK_EPOCH)

    def check(lo: float, hi: float) -> None:
        check_free(writer.store, device_id, session, prefix, lo, hi)

    if kind == "video":
        first, last = _record_video(
            cfg, writer, interval_s, t0, summary, progress, max_frames, prefix, check, on_frames
        )
    else:
        first, last = _record_images(
            cfg, writer, summary, progress, max_frames, prefix, t0, check, annotate, on_frames
        )
    who = {
        "participant": participant,
        "group": group,
        "tags": tags,
        "meta": {**(meta or {}), "time_source": summary.time_source},
        "source": "emotion-edge-record",
    }
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


def video_start(uri: str, start_ts: float | None) -> tuple[float, str]:
    """(the clip's first frame time, where it came from); see timebase.py."""
    if start_ts is not None:
        return start_ts, "--start"
    created = mp4_creation_time(Path(uri).expanduser())
    if created is not None:
        return created, "file creation time"
    return NO_CLOCK_EPOCH, "no clock (fixed epoch 2000-01-01)"


def already_recorded(store, device_id: str, session: str) -> bool:
    """A session end marker for this device and session is stored: the run finished."""
    q = select(func.count()).where(
        markers.c.device_id == device_id,
        markers.c.kind == "session",
        markers.c.action == "end",
        markers.c.label == session,
    )
    with store.engine.connect() as conn:
        return bool(conn.execute(q).scalar())


def check_free(store, device_id: str, session: str, prefix: str, lo: float, hi: float) -> None:
    """OverlapError when [lo, hi] on this device holds another session or other samples."""
    with store.engine.connect() as conn:
        other_samples = conn.execute(
            select(func.count()).where(
                samples.c.device_id == device_id,
                samples.c.captured_ts >= lo - 1e-3,
                samples.c.captured_ts <= hi + 1e-3,
                ~samples.c.sample_id.startswith(prefix, autoescape=True),
            )
        ).scalar()
        rows = conn.execute(
            select(markers.c.label, markers.c.action, markers.c.ts).where(
                and_(
                    markers.c.device_id == device_id,
                    markers.c.kind == "session",
                    markers.c.label != session,
                )
            )
        ).all()
    spans: dict[str, list[float]] = {}
    for label, action, ts in rows:
        span = spans.setdefault(label, [float("inf"), float("-inf")])
        if action == "start":
            span[0] = min(span[0], ts)
        else:
            span[1] = max(span[1], ts)
    clash = sorted(label for label, (a, b) in spans.items() if a <= hi + 1e-3 and b >= lo - 1e-3)
    if clash or other_samples:
        from emotion_edge.track.events import iso_utc

        what = f"session {', '.join(clash[:3])}" if clash else f"{other_samples} other samples"
        raise OverlapError(
            f"device {device_id}: {iso_utc(lo)} to {iso_utc(hi)} already holds {what}; "
            "recording this file there would mix two sessions' rows: give it its own "
            "--device-id, or a --start outside that span"
        )


def _bar(total: int | None, progress: bool, unit: str):
    from tqdm import tqdm

    return tqdm(
        total=total or None, unit=unit, disable=not progress, file=sys.stderr, dynamic_ncols=True
    )


class _Ticker:
    """Frames done, handed to `on_frames` at most every 0.25 s (a worker's progress)."""

    def __init__(self, on_frames: Callable[[int], None] | None):
        self.on_frames, self.n, self.t = on_frames, 0, time.monotonic()

    def add(self, n: int = 1) -> None:
        if self.on_frames is None:
            return
        self.n += n
        if time.monotonic() - self.t >= 0.25:
            self.flush()

    def flush(self) -> None:
        if self.on_frames is not None and self.n:
            self.on_frames(self.n)
        self.n, self.t = 0, time.monotonic()


def _record_video(
    cfg, writer, interval_s, t0, summary, progress, max_frames, prefix, check, on_frames
):
    from emotion_edge.app import build_pipeline
    from emotion_edge.video.sources import make_source

    out = _RecordOutput(writer, prefix)
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
    try:
        check(t0, t0 + max(total - 1, 0) / fps)
    except BaseException:
        src.close()
        raise
    started = time.monotonic()
    first = last = t0
    tick = _Ticker(on_frames)
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
                tick.add()
    finally:
        src.close()
        tick.flush()
    summary.elapsed_s = round(time.monotonic() - started, 3)
    summary.samples, summary.face_rows, summary.events = out.samples, out.faces, dict(out.events)
    return first, last


def _record_images(
    cfg, writer, summary, progress, max_frames, prefix, start_ts, check, annotate, on_frames
):
    import numpy as np
    from emotion_edge.classify.classifier import load_classifier
    from emotion_edge.detect.detector import make_detector
    from emotion_edge.video.sources import make_source

    classifier = load_classifier(cfg.classifier)
    detector = make_detector(cfg.detector)
    src = make_source(cfg.source)
    src.open()
    # capture times: EXIF where the photo has one, else the fixed epoch (or --start) + index
    base = NO_CLOCK_EPOCH if start_ts is None else start_ts
    stamps: dict[str, float] = {}
    n_exif = 0
    for i, p in enumerate(src.files):
        t = None if start_ts is not None else exif_time(p)
        n_exif += t is not None
        stamps[p.name] = t if t is not None else base + i
    if start_ts is None:
        rest = "; the others: no clock (2000-01-01 + index)" if n_exif < len(stamps) else ""
        summary.time_source = f"EXIF capture time for {n_exif} of {len(stamps)} photos{rest}"
    if stamps:
        try:
            check(min(stamps.values()), max(stamps.values()))
        except BaseException:
            src.close()
            raise
    annotate_dir = Path(annotate).expanduser() if annotate else None
    if annotate_dir is not None:
        annotate_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    times: list[float] = []
    tick = _Ticker(on_frames)
    total = len(src.files) if max_frames is None else min(len(src.files), max_frames)
    try:
        with _bar(total, progress, "photo") as bar:
            while max_frames is None or summary.frames < max_frames:
                frame = src.read()
                if frame is None:
                    break
                ts = stamps.get(frame.name or "", base + frame.index)
                try:
                    # a photo: every view of the detector, as the daemon's images: source
                    dets = detect_photo(detector, frame.image)
                    boxes = [d.box for d in dets]
                    rolls = [eye_roll_deg(d.keypoints) for d in dets]
                    probs = classifier.classify(frame.image, boxes, rolls) if boxes else []
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
                        sample_id=sample_id(prefix, frame.index),
                    )
                    if annotate_dir is not None and frame.name:
                        _annotate(frame, payload, annotate_dir / frame.name)
                except Exception:  # noqa: BLE001 - one bad photo is counted, not fatal
                    summary.errors += 1
                    if summary.errors <= 3:
                        log.exception("photo %s failed", frame.name)
                    continue
                finally:
                    summary.frames += 1
                    bar.update(1)
                    tick.add()
                times.append(ts)
                summary.samples += 1
                summary.face_rows += len(faces)
                writer.submit(Pending(json.dumps(payload), None, None, time.time()))
    finally:
        summary.files_skipped = src.files_skipped  # each logged once by the source
        src.close()
        tick.flush()
    summary.elapsed_s = round(time.monotonic() - started, 3)
    summary.start_ts = min(times) if times else None
    return (min(times), max(times)) if times else (base, base)


def _annotate(frame, payload: dict, path: Path) -> None:
    """A copy of the photo with each face's box, id and top emotion drawn on it."""
    import cv2

    img = frame.color if frame.color is not None else cv2.cvtColor(frame.image, cv2.COLOR_GRAY2BGR)
    img = img.copy()
    scale = max(1, round(max(img.shape[:2]) / 600))
    for f in payload["faces"]:
        b = f["box"]
        x, y, w, h = (int(round(b[k])) for k in ("x", "y", "w", "h"))
        cv2.rectangle(img, (x, y), (x + w, y + h), (0, 220, 0), 2 * scale)
        label = f"{f['face_id']} {f['emotion']} {f['confidence']:.2f}"
        cv2.putText(
            img,
            label,
            (x, max(12 * scale, y - 4 * scale)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5 * scale,
            (0, 220, 0),
            scale,
            cv2.LINE_AA,
        )
    if not cv2.imwrite(str(path), img):
        raise OSError(f"cannot write {path}")
