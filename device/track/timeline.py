"""Timeline samples: every tracked face's smoothed probabilities, at a fixed interval.

Events carry only changes, so a timeline cannot be rebuilt from them. `TimelineSampler` is
called by the pipeline on every processed frame and returns an `emotion-edge/timeline/1`
payload (schemas/timeline.schema.json) once `interval_s` has passed since the last one, by the
frames' capture times, so a file processed faster than real time is still sampled by its own
clock. Interval 0 samples every frame it is given (offline analysis, one row per frame).

A sample with no face on screen is still emitted (`faces` empty): it tells a consumer the
device was looking and saw nobody, which an absence of messages cannot.

Each sample has a unique `sample_id`, so a consumer can de-duplicate samples that were
delivered twice (MQTT QoS 1 is at least once), as it does events on `event_id`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

import numpy as np
from emotion_edge.track.events import FaceObservation, box_dict, iso_utc

TIMELINE_SCHEMA = "emotion-edge/timeline/1"


def timeline_payload(
    device_id: str,
    model_version: str,
    labels: Sequence[str],
    faces: Sequence[FaceObservation],
    frame_index: int,
    frame_size: tuple[int, int],
    captured_ts: float,
    published_ts: float | None = None,
    file_name: str | None = None,
    sample_id: str | None = None,
) -> dict:
    """One timeline sample; `faces` carry probabilities in `labels` order (summing to 1)."""
    pub = time.time() if published_ts is None else published_ts
    out_faces = []
    for f in faces:
        probs = np.asarray(f.probs, np.float64)
        best = int(np.argmax(probs))
        out_faces.append(
            {
                "face_id": int(f.face_id),
                "box": box_dict(f.box),
                "probs": {lab: round(float(p), 4) for lab, p in zip(labels, probs, strict=True)},
                "emotion": labels[best],
                "confidence": round(float(probs[best]), 4),
                "detected": bool(getattr(f, "detected", True)),
            }
        )
    payload = {
        "schema": TIMELINE_SCHEMA,
        "sample_id": sample_id or uuid.uuid4().hex,
        "device_id": device_id,
        "model_version": model_version,
        "captured_at": iso_utc(captured_ts),
        "captured_ts": round(float(captured_ts), 3),
        "published_ts": round(float(pub), 3),
        "frame": {
            "index": int(frame_index),
            "width": int(frame_size[0]),
            "height": int(frame_size[1]),
        },
        "faces": out_faces,
    }
    if file_name is not None:
        payload["file"] = file_name
    return payload


class TimelineSampler:
    """Decides when a frame's faces become a timeline sample; see the module docstring."""

    def __init__(
        self,
        interval_s: float,
        labels: Sequence[str],
        device_id: str,
        model_version: str,
    ):
        if interval_s < 0:
            raise ValueError(f"interval_s must be >= 0, got {interval_s}")
        self.interval_s = float(interval_s)
        self.labels = tuple(labels)
        self.device_id = device_id
        self.model_version = model_version
        self._next_ts: float | None = None
        self.samples = 0

    def due(self, ts: float) -> bool:
        return self._next_ts is None or ts >= self._next_ts

    def sample(
        self,
        faces: Sequence[FaceObservation],
        frame_index: int,
        frame_size: tuple[int, int],
        ts: float,
        published_ts: float | None = None,
        file_name: str | None = None,
    ) -> dict | None:
        """The payload when a sample is due at frame time `ts`, else None.

        The next sample is due `interval_s` after this one was due (not after `ts`), so the
        rate holds on average at any frame rate; a long gap (no frames) does not cause a burst.
        """
        if not self.due(ts):
            return None
        if self._next_ts is None or ts - self._next_ts >= self.interval_s:
            self._next_ts = ts + self.interval_s
        else:
            self._next_ts += self.interval_s
        self.samples += 1
        return timeline_payload(
            self.device_id,
            self.model_version,
            self.labels,
            faces,
            frame_index,
            frame_size,
            ts,
            published_ts,
            file_name,
        )
