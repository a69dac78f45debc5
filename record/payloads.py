"""What the recorder accepts, checked field by field and turned into complete table rows.

Every message (an MQTT PUBLISH or a JSON line) goes through `parse_message`, which returns
`Parsed` (rows for every table the message touches, built in full before anything is written,
so a bad field can never leave a partial row), `None` for payloads that are recorded nowhere
(the daemon's state and stats), or raises `Reject` with a short reason that the recorder
counts: too_large, malformed, unknown_schema, unknown_version, bad_field, topic_mismatch,
unknown_device, clock_skew.

Markers (emotion-edge/marker/1) are also built here: by emotion-edge-mark, from a schedule
file, and by the recorder for in-process sessions.
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from emotion_edge.preprocess import FER2013_LABELS
from emotion_edge.track.events import iso_utc

LABELS: tuple[str, ...] = tuple(FER2013_LABELS)
EVENT_SCHEMA = "emotion-edge/event/1"
TIMELINE_SCHEMA = "emotion-edge/timeline/1"
MARKER_SCHEMA = "emotion-edge/marker/1"
RECORDED = {EVENT_SCHEMA: "event", TIMELINE_SCHEMA: "timeline", MARKER_SCHEMA: "marker"}
NOT_RECORDED = {"emotion-edge/state/1", "emotion-edge/stats/1"}
# MQTT topic name -> payload kind carried there
TOPIC_KINDS = {"events": "event", "timeline": "timeline", "markers": "marker"}
AVAILABILITY = ("online", "offline", "stopped")

DEFAULT_MAX_BYTES = 256 * 1024
DEFAULT_MAX_SKEW_S = 300.0

_DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_EVENT_KINDS = ("appeared", "changed", "disappeared")
MARKER_KINDS = ("stimulus", "session")
MARKER_ACTIONS = ("start", "end")


class Reject(Exception):
    """A message the recorder does not store; `reason` is the counter it goes to."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Parsed:
    kind: str  # event | timeline | marker | availability
    device_id: str
    key: str  # event_id | sample_id | marker_id | "" (availability)
    ts: float
    rows: dict[str, list[dict]] = field(default_factory=dict)


@dataclass(frozen=True)
class Limits:
    max_bytes: int = DEFAULT_MAX_BYTES
    # a timestamp further ahead of the recorder's clock than this is a device with a wrong
    # clock (samples in the past are normal: spooled while the broker was away); None = off
    max_future_skew_s: float | None = DEFAULT_MAX_SKEW_S
    devices: frozenset[str] | None = None  # None: any well-formed device id


# -- field checks -------------------------------------------------------------------------------


def _get(d: dict, key: str, where: str):
    if key not in d:
        raise Reject("bad_field", f"{where}: missing {key!r}")
    return d[key]


def _str(d: dict, key: str, where: str, max_len: int = 200, optional: bool = False) -> str | None:
    if optional and d.get(key) is None:
        return None
    v = _get(d, key, where)
    if not isinstance(v, str) or len(v) > max_len:
        raise Reject("bad_field", f"{where}: {key!r} must be a string of <= {max_len} chars")
    return v


def _num(d: dict, key: str, where: str, lo: float | None = None, hi: float | None = None) -> float:
    v = _get(d, key, where)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise Reject("bad_field", f"{where}: {key!r} must be a finite number")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise Reject("bad_field", f"{where}: {key!r} = {v} out of range [{lo}, {hi}]")
    return float(v)


def _int(d: dict, key: str, where: str, lo: int = 0) -> int:
    v = _get(d, key, where)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or v > 2**62:
        raise Reject("bad_field", f"{where}: {key!r} must be an integer >= {lo}")
    return v


def _obj(d: dict, key: str, where: str) -> dict:
    v = _get(d, key, where)
    if not isinstance(v, dict):
        raise Reject("bad_field", f"{where}: {key!r} must be an object")
    return v


def _id(d: dict, key: str, where: str) -> str:
    v = _get(d, key, where)
    if not isinstance(v, str) or not _ID_RE.match(v):
        raise Reject("bad_field", f"{where}: {key!r} must be 32 lowercase hex digits")
    return v


def _label(v, where: str, key: str) -> str:
    if v not in LABELS:
        raise Reject("bad_field", f"{where}: {key!r} = {v!r} is not one of {', '.join(LABELS)}")
    return v


def _box(d: dict, where: str) -> dict:
    b = _obj(d, "box", where)
    return {
        "box_x": _num(b, "x", where),
        "box_y": _num(b, "y", where),
        "box_w": _num(b, "w", where, lo=0),
        "box_h": _num(b, "h", where, lo=0),
    }


def check_device(device_id, limits: Limits, where: str) -> str:
    if not isinstance(device_id, str) or not _DEVICE_RE.match(device_id):
        raise Reject("bad_field", f"{where}: device_id {device_id!r} is not a valid device id")
    if limits.devices is not None and device_id not in limits.devices:
        raise Reject("unknown_device", f"{where}: device {device_id!r} is not in --allow-device")
    return device_id


def split_topic(topic: str) -> tuple[str, str, str]:
    """'<prefix>/<device>/<name>' -> (prefix, device, name); the prefix may contain '/'."""
    parts = topic.split("/")
    if len(parts) < 3:
        raise Reject("topic_mismatch", f"topic {topic!r} is not <prefix>/<device>/<name>")
    return "/".join(parts[:-2]), parts[-2], parts[-1]


# -- parsing ------------------------------------------------------------------------------------


def parse_message(
    data: bytes | str,
    topic: str | None = None,
    *,
    limits: Limits = Limits(),
    now: float | None = None,
) -> Parsed | None:
    """Check one message and build its rows; see the module docstring."""
    size = len(data)
    if size > limits.max_bytes:
        raise Reject("too_large", f"{size} bytes > --max-payload-bytes {limits.max_bytes}")
    now = time.time() if now is None else now
    topic_device = topic_name = None
    if topic is not None:
        _, topic_device, topic_name = split_topic(topic)
        if topic_name == "availability":
            return _availability(data, topic_device, limits, now)
        if topic_name not in TOPIC_KINDS:
            raise Reject("topic_mismatch", f"topic {topic!r}: not a recorded topic")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        payload = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Reject("malformed", f"not JSON ({str(exc)[:80]})") from None
    if not isinstance(payload, dict):
        raise Reject("malformed", f"a JSON {type(payload).__name__}, not an object")
    schema = payload.get("schema")
    if schema in NOT_RECORDED:
        return None
    kind = RECORDED.get(schema)
    if kind is None:
        parts = str(schema).split("/")
        if len(parts) == 3 and parts[0] == "emotion-edge":
            raise Reject("unknown_version", f"schema {str(schema)[:80]!r} is not known here")
        raise Reject("unknown_schema", f"schema field {str(schema)[:80]!r}")
    if topic_name is not None and TOPIC_KINDS[topic_name] != kind:
        raise Reject("topic_mismatch", f"a {kind} payload on topic {topic!r}")
    device = check_device(payload.get("device_id"), limits, kind)
    if topic_device is not None and device != topic_device:
        raise Reject("topic_mismatch", f"device_id {device!r} on topic of {topic_device!r}")
    if kind == "event":
        parsed = parse_event(payload, now)
    elif kind == "timeline":
        parsed = parse_timeline(payload, now)
    else:
        return parse_marker(payload, now)  # markers may be ahead of time (schedules)
    skew = limits.max_future_skew_s
    if skew is not None and parsed.ts > now + skew:
        raise Reject(
            "clock_skew",
            f"{kind} from {device} is {parsed.ts - now:.0f} s ahead of this clock "
            f"(--max-skew-s {skew:g})",
        )
    return parsed


def _availability(data: bytes | str, device: str, limits: Limits, now: float) -> Parsed:
    check_device(device, limits, "availability")
    text = (data.decode("utf-8", "replace") if isinstance(data, bytes) else data).strip()
    if text not in AVAILABILITY:
        raise Reject("malformed", f"availability {text[:40]!r} is not {'/'.join(AVAILABILITY)}")
    row = {"device_id": device, "status": text, "received_ts": now}
    return Parsed("availability", device, "", now, {"availability": [row]})


def parse_event(p: dict, now: float) -> Parsed:
    w = "event"
    frame = _obj(p, "frame", w)
    top = _get(p, "top", w)
    if not isinstance(top, list) or not 1 <= len(top) <= len(LABELS):
        raise Reject("bad_field", "event: 'top' must be a list of 1-7 entries")
    top_clean = []
    for t in top:
        if not isinstance(t, dict):
            raise Reject("bad_field", "event: 'top' entries must be objects")
        top_clean.append(
            {
                "emotion": _label(t.get("emotion"), w, "top.emotion"),
                "confidence": _num(t, "confidence", w, 0, 1),
            }
        )
    kind = _get(p, "kind", w)
    if kind not in _EVENT_KINDS:
        raise Reject("bad_field", f"event: kind {kind!r} is not one of {', '.join(_EVENT_KINDS)}")
    prev = p.get("previous_emotion")
    duration = p.get("duration_s")
    row = {
        "event_id": _id(p, "event_id", w),
        "device_id": p["device_id"],
        "face_id": _int(p, "face_id", w, lo=1),
        "kind": kind,
        "emotion": _label(p.get("emotion"), w, "emotion"),
        "confidence": _num(p, "confidence", w, 0, 1),
        "previous_emotion": None if prev is None else _label(prev, w, "previous_emotion"),
        "top": json.dumps(top_clean, separators=(",", ":")),
        **_box(p, w),
        "frame_index": _int(frame, "index", w),
        "frame_width": _int(frame, "width", w, lo=1),
        "frame_height": _int(frame, "height", w, lo=1),
        "captured_ts": _num(p, "captured_ts", w),
        "published_ts": _num(p, "published_ts", w),
        "duration_s": None if duration is None else _num(p, "duration_s", w, lo=0),
        "model_version": _str(p, "model_version", w, 200),
        "received_ts": now,
    }
    return Parsed("event", row["device_id"], row["event_id"], row["captured_ts"], {"events": [row]})


def parse_timeline(p: dict, now: float) -> Parsed:
    w = "timeline"
    frame = _obj(p, "frame", w)
    faces = _get(p, "faces", w)
    if not isinstance(faces, list) or len(faces) > 256:
        raise Reject("bad_field", "timeline: 'faces' must be a list of <= 256 faces")
    sample_id = _id(p, "sample_id", w)
    device = p["device_id"]
    ts = _num(p, "captured_ts", w)
    file_name = _str(p, "file", w, 1000, optional=True)
    face_rows = []
    seen = set()
    for f in faces:
        if not isinstance(f, dict):
            raise Reject("bad_field", "timeline: faces must be objects")
        probs = _obj(f, "probs", w)
        face_id = _int(f, "face_id", w, lo=1)
        if face_id in seen:
            raise Reject("bad_field", f"timeline: face_id {face_id} twice in one sample")
        seen.add(face_id)
        face_rows.append(
            {
                "sample_id": sample_id,
                "face_id": face_id,
                "device_id": device,
                "captured_ts": ts,
                "file_name": file_name,
                **_box(f, w),
                **{f"p_{lab}": _num(probs, lab, w, 0, 1) for lab in LABELS},
                "emotion": _label(f.get("emotion"), w, "emotion"),
                "confidence": _num(f, "confidence", w, 0, 1),
            }
        )
    sample = {
        "sample_id": sample_id,
        "device_id": device,
        "captured_ts": ts,
        "published_ts": _num(p, "published_ts", w),
        "frame_index": _int(frame, "index", w),
        "frame_width": _int(frame, "width", w, lo=1),
        "frame_height": _int(frame, "height", w, lo=1),
        "file_name": file_name,
        "face_count": len(face_rows),
        "model_version": _str(p, "model_version", w, 200),
        "received_ts": now,
    }
    return Parsed(
        "timeline", device, sample_id, ts, {"samples": [sample], "timeline_faces": face_rows}
    )


def parse_marker(p: dict, now: float) -> Parsed:
    w = "marker"
    kind = _get(p, "kind", w)
    action = _get(p, "action", w)
    if kind not in MARKER_KINDS or action not in MARKER_ACTIONS:
        raise Reject("bad_field", f"marker: kind/action {kind!r}/{action!r}")
    label = _str(p, "label", w, 200)
    if not label:
        raise Reject("bad_field", "marker: empty label")
    tags = p.get("tags", [])
    if not isinstance(tags, list) or len(tags) > 64:
        raise Reject("bad_field", "marker: 'tags' must be a list of <= 64 strings")
    for t in tags:
        if not isinstance(t, str) or not 0 < len(t) <= 200:
            raise Reject("bad_field", "marker: tags must be strings of 1-200 chars")
    meta = p.get("meta", {})
    if not isinstance(meta, dict):
        raise Reject("bad_field", "marker: 'meta' must be an object")
    row = {
        "marker_id": _id(p, "marker_id", w),
        "device_id": p["device_id"],
        "kind": kind,
        "action": action,
        "label": label,
        "ts": _num(p, "ts", w),
        "session": _str(p, "session", w, 200, optional=True),
        "participant": _str(p, "participant", w, 200, optional=True),
        "group_name": _str(p, "group", w, 200, optional=True),
        "tags": json.dumps(tags, ensure_ascii=False),
        "meta": json.dumps(meta, ensure_ascii=False, separators=(",", ":"), default=str),
        "source": _str(p, "source", w, 200, optional=True),
        "received_ts": now,
    }
    return Parsed("marker", row["device_id"], row["marker_id"], row["ts"], {"markers": [row]})


# -- building markers ---------------------------------------------------------------------------


def marker_payload(
    device_id: str,
    kind: str,
    action: str,
    label: str,
    ts: float | None = None,
    *,
    session: str | None = None,
    participant: str | None = None,
    group: str | None = None,
    tags: Sequence[str] = (),
    meta: dict | None = None,
    source: str = "emotion-edge-mark",
) -> dict:
    """An emotion-edge/marker/1 payload (schemas/marker.schema.json)."""
    if kind not in MARKER_KINDS:
        raise ValueError(f"marker kind {kind!r}: one of {', '.join(MARKER_KINDS)}")
    if action not in MARKER_ACTIONS:
        raise ValueError(f"marker action {action!r}: start or end")
    if not label or len(label) > 200:
        raise ValueError("marker label: 1-200 characters")
    ts = time.time() if ts is None else float(ts)
    p = {
        "schema": MARKER_SCHEMA,
        "marker_id": uuid.uuid4().hex,
        "device_id": device_id,
        "kind": kind,
        "action": action,
        "label": label,
        "ts": round(ts, 3),
        "at": iso_utc(ts),
        "session": session,
        "participant": participant,
        "group": group,
        "tags": list(tags),
        "meta": dict(meta or {}),
        "source": source,
    }
    return p


def parse_time(text: str) -> float:
    """Epoch seconds from a number, or an ISO 8601 time (naive = local time)."""
    t = text.strip()
    try:
        return float(t)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither epoch seconds nor an ISO 8601 time") from None
    return dt.timestamp() if dt.tzinfo else dt.astimezone().timestamp()


def parse_offset(text: str) -> float:
    """Seconds from '12.5', '1:02.5' or '1:00:02'."""
    parts = text.strip().split(":")
    if not 1 <= len(parts) <= 3 or not all(parts):
        raise ValueError(f"{text!r} is not seconds, M:SS or H:MM:SS")
    value = 0.0
    for part in parts:
        value = value * 60 + float(part)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{text!r}: offsets are >= 0")
    return value


@dataclass(frozen=True)
class ScheduleRow:
    stimulus: str
    start_s: float
    end_s: float


def read_schedule(path: str | Path) -> list[ScheduleRow]:
    """A schedule CSV: stimulus, start offset, end offset (seconds from the session start,
    or M:SS); a header row and lines starting with '#' are skipped. ValueError names the line."""
    rows: list[ScheduleRow] = []
    with open(path, newline="", encoding="utf-8") as f:
        for n, rec in enumerate(csv.reader(f), 1):
            if not rec or not "".join(rec).strip() or rec[0].lstrip().startswith("#"):
                continue
            if len(rec) < 3:
                raise ValueError(f"{path}:{n}: need stimulus,start,end (got {len(rec)} fields)")
            name, a, b = (x.strip() for x in rec[:3])
            try:
                start, end = parse_offset(a), parse_offset(b)
            except ValueError as exc:
                if n == 1 and not rows:  # a header
                    continue
                raise ValueError(f"{path}:{n}: {exc}") from None
            if not name or end <= start:
                raise ValueError(f"{path}:{n}: needs a name and end > start")
            rows.append(ScheduleRow(name, start, end))
    if not rows:
        raise ValueError(f"{path}: no schedule rows (stimulus,start,end)")
    return rows


def schedule_markers(
    rows: Iterable[ScheduleRow], device_id: str, t0: float, session: str | None = None, **kw
) -> list[dict]:
    """start/end stimulus markers for a schedule whose offsets count from `t0`."""
    out = []
    for r in rows:
        for action, off in (("start", r.start_s), ("end", r.end_s)):
            out.append(
                marker_payload(
                    device_id, "stimulus", action, r.stimulus, t0 + off, session=session, **kw
                )
            )
    return out


def iso_local(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).astimezone().isoformat(timespec="seconds")
