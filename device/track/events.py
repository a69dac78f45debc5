"""Payloads the daemon emits: emotion events, the state snapshot and stats.

Each payload is a plain JSON object whose shape is documented by a JSON Schema in
`emotion_edge/schemas/` (event.schema.json, state.schema.json, stats.schema.json). Every
payload names its schema in a "schema" field, so a stdout JSON-lines consumer can tell them
apart without MQTT topics.

`EventEngine` decides when a tracked face deserves an event: it appears (after `min_hits`
detections, so one-frame false positives stay quiet), its dominant emotion changes, or it
disappears (only faces that were announced).

A change is reported when the new emotion reaches `min_confidence`, beats the reported one by
a margin and keeps doing so for `min_dwell_s`. The margin depends on the evidence: within
`after_change_s` of a change point in the face's raw probabilities (track/change_point.py: the
face looks different from a moment ago) it is `hysteresis_after_change`, so a real change is
told while it is news; otherwise it is the larger `hysteresis`, so probabilities that drift or
flicker on an unchanged face do not spam. Going back to the emotion reported just before,
within `revert_s` of the last change, always needs `hysteresis`: a face that flickers between
two emotions on a noisy classifier is told once, not every time the lead swaps.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal

import numpy as np
from emotion_edge.config import TrackingConfig
from emotion_edge.track.room import room_summary

EVENT_SCHEMA = "emotion-edge/event/1"
STATE_SCHEMA = "emotion-edge/state/1"
STATS_SCHEMA = "emotion-edge/stats/1"

EventKind = Literal["appeared", "changed", "disappeared"]


def iso_utc(ts: float) -> str:
    """ISO 8601 UTC with milliseconds, e.g. 2026-11-22T05:19:04.123Z."""
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def box_dict(box: tuple[float, float, float, float]) -> dict:
    x, y, w, h = box
    return {
        "x": round(float(x), 1),
        "y": round(float(y), 1),
        "w": round(float(w), 1),
        "h": round(float(h), 1),
    }


def top_k(probs: np.ndarray, labels: tuple[str, ...], k: int) -> list[dict]:
    order = np.argsort(-probs, kind="stable")[: max(1, k)]
    return [{"emotion": labels[i], "confidence": round(float(probs[i]), 4)} for i in order]


@dataclass
class EmotionEvent:
    """One event about one face; `to_payload()` is what goes over MQTT / stdout."""

    kind: EventKind
    device_id: str
    face_id: int
    emotion: str
    confidence: float
    top: list[dict]
    box: tuple[float, float, float, float]
    frame_index: int
    frame_size: tuple[int, int]  # width, height
    captured_ts: float
    model_version: str
    previous_emotion: str | None = None
    duration_s: float | None = None  # how long the face was tracked (disappeared only)
    # disappeared only: the emotion that led the smoothed probabilities for the largest share
    # of the face's tracked time, and that share
    dominant_emotion: str | None = None
    dominant_share: float | None = None
    snapshot_jpeg_b64: str | None = None  # only when [privacy] allow_snapshots = true
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    published_ts: float | None = None

    def to_payload(self, published_ts: float | None = None) -> dict:
        pub = published_ts if published_ts is not None else (self.published_ts or time.time())
        payload = {
            "schema": EVENT_SCHEMA,
            "event_id": self.event_id,
            "device_id": self.device_id,
            "face_id": self.face_id,
            "kind": self.kind,
            "emotion": self.emotion,
            "confidence": round(float(self.confidence), 4),
            "previous_emotion": self.previous_emotion,
            "top": self.top,
            "box": box_dict(self.box),
            "frame": {
                "index": int(self.frame_index),
                "width": int(self.frame_size[0]),
                "height": int(self.frame_size[1]),
            },
            "captured_at": iso_utc(self.captured_ts),
            "captured_ts": round(self.captured_ts, 3),
            "published_at": iso_utc(pub),
            "published_ts": round(pub, 3),
            "model_version": self.model_version,
        }
        if self.duration_s is not None:
            payload["duration_s"] = round(self.duration_s, 3)
        if self.dominant_emotion is not None:
            payload["dominant_emotion"] = self.dominant_emotion
            payload["dominant_share"] = round(float(self.dominant_share or 0.0), 4)
        if self.snapshot_jpeg_b64 is not None:
            payload["snapshot_jpeg_b64"] = self.snapshot_jpeg_b64
        return payload


@dataclass
class FaceState:
    """What the engine remembers of one announced (or pending) face."""

    face_id: int
    first_seen_ts: float
    announced: bool = False
    emotion: str | None = None  # the emotion last reported in an event
    confidence: float = 0.0  # its smoothed probability when it was reported
    candidate: str | None = None  # a different emotion currently winning, not yet reported
    candidate_since: float = 0.0
    probs: np.ndarray | None = None
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    last_ts: float = 0.0
    detected: bool = True  # found by the detector in the newest frame (else carried)
    lead_s: dict[str, float] = field(default_factory=dict)  # seconds each label led
    previous: str | None = None  # the emotion reported before `emotion`
    changed_ts: float = 0.0  # when `emotion` was reported

    def dominant(self) -> tuple[str | None, float]:
        """The label that led for the largest share of the tracked time, and that share."""
        total = sum(self.lead_s.values())
        if total <= 0:
            return self.emotion, 1.0
        lab = max(self.lead_s, key=self.lead_s.__getitem__)
        return lab, self.lead_s[lab] / total


@dataclass
class FaceObservation:
    """One tracked face in this frame, with its smoothed probabilities."""

    face_id: int
    box: tuple[float, float, float, float]
    hits: int
    probs: np.ndarray  # smoothed, sums to 1
    detected: bool = True  # False: carried by the tracker through a detection miss
    change_ts: float | None = None  # capture time of the latest change point of its evidence


class EventEngine:
    """Turns per-frame smoothed face probabilities into appeared/changed/disappeared events."""

    def __init__(
        self, cfg: TrackingConfig, labels: tuple[str, ...], device_id: str, model_version: str
    ):
        self.cfg = cfg
        self.labels = labels
        self.device_id = device_id
        self.model_version = model_version
        self.faces: dict[int, FaceState] = {}

    def _event(
        self,
        kind: EventKind,
        st: FaceState,
        probs: np.ndarray,
        emotion: str,
        frame_index: int,
        frame_size: tuple[int, int],
        ts: float,
        previous: str | None = None,
        duration: float | None = None,
        confidence: float | None = None,
    ) -> EmotionEvent:
        idx = self.labels.index(emotion)
        dominant, share = st.dominant() if kind == "disappeared" else (None, None)
        return EmotionEvent(
            kind=kind,
            device_id=self.device_id,
            face_id=st.face_id,
            emotion=emotion,
            confidence=float(probs[idx]) if confidence is None else confidence,
            dominant_emotion=dominant,
            dominant_share=share,
            top=top_k(probs, self.labels, self.cfg.top_k),
            box=st.box,
            frame_index=frame_index,
            frame_size=frame_size,
            captured_ts=ts,
            model_version=self.model_version,
            previous_emotion=previous,
            duration_s=duration,
        )

    def update(
        self,
        observations: list[FaceObservation],
        removed_ids: list[int],
        frame_index: int,
        frame_size: tuple[int, int],
        ts: float,
        announce_now: bool = False,
    ) -> list[EmotionEvent]:
        """Events for this frame. `ts` is the frame's capture time (epoch seconds);
        `announce_now` (a still photo) announces a face on its first detection."""
        cfg = self.cfg
        events: list[EmotionEvent] = []
        for ob in observations:
            st = self.faces.get(ob.face_id)
            if st is None:
                st = self.faces[ob.face_id] = FaceState(ob.face_id, first_seen_ts=ts)
            best = self.labels[int(np.argmax(ob.probs))]
            if st.probs is not None:
                lead = self.labels[int(np.argmax(st.probs))]
                st.lead_s[lead] = st.lead_s.get(lead, 0.0) + max(0.0, ts - st.last_ts)
            st.probs, st.box, st.last_ts, st.detected = ob.probs, ob.box, ts, ob.detected
            if not ob.detected:
                continue  # carried, not seen: nothing new to judge
            if not st.announced:
                if announce_now or ob.hits >= cfg.min_hits:
                    st.announced, st.emotion = True, best
                    st.confidence = float(ob.probs[self.labels.index(best)])
                    events.append(
                        self._event("appeared", st, ob.probs, best, frame_index, frame_size, ts)
                    )
                continue
            if best == st.emotion:
                st.candidate = None
                continue
            p_best = float(ob.probs[self.labels.index(best)])
            p_cur = float(ob.probs[self.labels.index(st.emotion)])
            fresh = ob.change_ts is not None and ts - ob.change_ts <= cfg.after_change_s
            if best == st.previous and ts - st.changed_ts < cfg.revert_s:
                fresh = False  # back to what it just left: flicker until it beats hysteresis
            margin = cfg.hysteresis_after_change if fresh else cfg.hysteresis
            if p_best < cfg.min_confidence or p_best - p_cur < margin:
                st.candidate = None
                continue
            if st.candidate != best:
                st.candidate, st.candidate_since = best, ts
            if ts - st.candidate_since >= cfg.min_dwell_s:
                prev, st.emotion, st.candidate = st.emotion, best, None
                st.previous, st.changed_ts = prev, ts
                st.confidence = p_best
                events.append(
                    self._event(
                        "changed", st, ob.probs, best, frame_index, frame_size, ts, previous=prev
                    )
                )
        for fid in removed_ids:
            st = self.faces.pop(fid, None)
            if st is None or not st.announced or st.probs is None:
                continue
            # emotion and confidence: the last announced (stable) emotion and its confidence
            # when announced; top: the last smoothed probabilities; dominant_*: over its life.
            # The box is the face's last known one; time and frame are those at which it was
            # declared gone.
            events.append(
                self._event(
                    "disappeared",
                    st,
                    st.probs,
                    st.emotion,
                    frame_index,
                    frame_size,
                    ts,
                    duration=st.last_ts - st.first_seen_ts,
                    confidence=st.confidence,
                )
            )
        return events

    def state_faces(self) -> list[dict]:
        """Announced faces for the state payload, oldest first."""
        out = []
        for st in sorted(self.faces.values(), key=lambda s: s.face_id):
            if not st.announced or st.probs is None:
                continue
            idx = self.labels.index(st.emotion)
            out.append(
                {
                    "face_id": st.face_id,
                    "emotion": st.emotion,
                    "confidence": round(float(st.probs[idx]), 4),
                    "top": top_k(st.probs, self.labels, self.cfg.top_k),
                    "box": box_dict(st.box),
                    "detected": st.detected,
                    "first_seen_at": iso_utc(st.first_seen_ts),
                    "tracked_s": round(st.last_ts - st.first_seen_ts, 3),
                }
            )
        return out

    def room(self) -> dict:
        """The room object of the state payload, over the announced faces in view."""
        probs = [
            st.probs
            for st in sorted(self.faces.values(), key=lambda s: s.face_id)
            if st.announced and st.probs is not None
        ]
        return room_summary(probs, self.labels)


def state_payload(
    device_id: str,
    model_version: str,
    faces: list[dict],
    frame_index: int,
    ts: float | None = None,
    room: dict | None = None,
) -> dict:
    """Retained snapshot of the faces on screen now.

    `dominant_emotion` is the emotion of the largest face (the one nearest the camera), or
    null with no face; `room` (track/room.py) sums up every face in view.
    """
    ts = time.time() if ts is None else ts
    dominant = None
    if faces:
        biggest = max(faces, key=lambda f: f["box"]["w"] * f["box"]["h"])
        dominant = biggest["emotion"]
    return {
        "schema": STATE_SCHEMA,
        "device_id": device_id,
        "model_version": model_version,
        "updated_at": iso_utc(ts),
        "updated_ts": round(ts, 3),
        "frame_index": int(frame_index),
        "face_count": len(faces),
        "dominant_emotion": dominant,
        "room": room if room is not None else room_summary([], ()),
        "faces": faces,
    }
