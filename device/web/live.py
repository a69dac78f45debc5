"""The live view's model: the newest processed frame and its faces, and what is made of them.

`LiveView` is the pipeline's frame tap (emotion_edge.pipeline.FrameTap). On the pipeline thread
it only keeps a reference to the newest frame and its announced faces, and only while someone
watches (`hold` by a stream/push client, `poke` by a /api/state poll); with nobody watching
`on_frame` is one comparison. Turning a snapshot into the annotated JPEG (`render_jpeg`) and the
/api/state JSON (`state_json`) happens on the web server's thread, once per frame for all
clients.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from emotion_edge.track.events import FaceObservation, box_dict, iso_utc, top_k
from emotion_edge.video.frames import Frame

LIVE_SCHEMA = "emotion-edge/live/1"
# One colour per face id, the same on the picture's box and the page's card.
PALETTE = (
    "#22d3ee",
    "#f97316",
    "#a3e635",
    "#e879f9",
    "#facc15",
    "#60a5fa",
    "#f87171",
    "#34d399",
)
# A frame older than this is not "now": its faces are not listed, the camera shows as stalled.
STALE_S = 3.0


def face_color(face_id: int) -> str:
    return PALETTE[face_id % len(PALETTE)]


def _bgr(hex_color: str) -> tuple[int, int, int]:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return b, g, r


@dataclass(frozen=True)
class LiveFace:
    face_id: int
    box: tuple[float, float, float, float]  # x, y, w, h in frame pixels
    probs: np.ndarray  # smoothed, every label, sums to 1
    tracked_s: float


@dataclass(frozen=True)
class Snapshot:
    seq: int  # rises by one per stored frame
    frame: Frame
    faces: tuple[LiveFace, ...]
    processed_ts: float  # time.time() when the pipeline finished the frame


# face id -> (announced, first seen capture time), or None for a face the engine forgot
FaceInfo = Callable[[int], "tuple[bool, float] | None"]


class LiveView:
    """The frame tap: newest frame + faces while watched; frame rate and latency over them."""

    def __init__(self, face_info: FaceInfo, clock: Callable[[], float] = time.time):
        self._face_info = face_info
        self._clock = clock
        self._lock = threading.Lock()
        self._watchers = 0  # long-lived clients (picture streams, push channels)
        self._poke_until = 0.0  # monotonic time until which a /api/state poll keeps us on
        self._snap: Snapshot | None = None
        self._seq = 0
        self._recent: deque[tuple[float, float]] = deque(maxlen=64)  # (processed_ts, latency)

    # -- pipeline thread -------------------------------------------------------------------

    def on_frame(self, frame: Frame, faces: list[FaceObservation]) -> None:
        if self._watchers == 0 and time.monotonic() >= self._poke_until:
            return  # nobody watches: no cost beyond this line
        now = self._clock()
        live = []
        for ob in faces:
            info = self._face_info(ob.face_id)
            if info is None or not info[0]:
                continue  # not announced yet (tracking.min_hits): not shown either
            live.append(LiveFace(ob.face_id, ob.box, ob.probs, frame.timestamp - info[1]))
        with self._lock:
            self._seq += 1
            self._snap = Snapshot(self._seq, frame, tuple(live), now)
            self._recent.append((now, max(0.0, now - frame.timestamp)))

    def close(self) -> None:
        with self._lock:
            self._snap = None

    # -- web thread ------------------------------------------------------------------------

    @property
    def watched(self) -> bool:
        return self._watchers > 0 or time.monotonic() < self._poke_until

    def hold(self) -> None:
        with self._lock:
            self._watchers += 1

    def release(self) -> None:
        with self._lock:
            self._watchers = max(0, self._watchers - 1)
            if self._watchers == 0 and time.monotonic() >= self._poke_until:
                # nobody left: keep no picture of anyone, start the rates afresh next time
                self._snap = None
                self._recent.clear()

    def poke(self, linger_s: float = 5.0) -> None:
        """A one-shot reader (/api/state): store frames for the next `linger_s` seconds."""
        self._poke_until = max(self._poke_until, time.monotonic() + linger_s)

    def snapshot(self) -> Snapshot | None:
        with self._lock:
            return self._snap

    @property
    def seq(self) -> int:
        return self._seq

    def rates(self) -> tuple[float, float | None]:
        """(frames per second over the last ~2 s, mean capture-to-result latency in ms)."""
        now = self._clock()
        with self._lock:
            recent = [r for r in self._recent if now - r[0] <= 2.0]
        if not recent:
            return 0.0, None
        latency = 1000.0 * sum(r[1] for r in recent) / len(recent)
        if len(recent) < 2:
            return 0.0, latency
        span = max(recent[-1][0] - recent[0][0], now - recent[-1][0])
        fps = (len(recent) - 1) / span if span > 0 else 0.0
        return fps, latency


# -- made on the web thread ---------------------------------------------------------------------


def stream_size(frame_size: tuple[int, int], width: int) -> tuple[int, int]:
    """(width, height) of the streamed picture: `width` wide, the frame's aspect ratio."""
    w, h = frame_size
    return width, max(1, round(h * width / max(1, w)))


def render_jpeg(
    snap: Snapshot, labels: tuple[str, ...], width: int, quality: int
) -> tuple[bytes, tuple[int, int]]:
    """The frame scaled to `width`, each face's box, id, emotion and confidence drawn on it."""
    import cv2

    frame = snap.frame
    img = frame.color if frame.color is not None else frame.image
    h, w = img.shape[:2]
    out_w, out_h = stream_size((w, h), width)
    if (out_w, out_h) == (w, h):
        pic = img.copy()
    else:
        interp = cv2.INTER_AREA if out_w < w else cv2.INTER_LINEAR
        pic = cv2.resize(img, (out_w, out_h), interpolation=interp)
    if pic.ndim == 2:
        pic = cv2.cvtColor(pic, cv2.COLOR_GRAY2BGR)
    s = out_w / w
    thick = max(2, round(out_w / 320))
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.45, out_w / 1000)
    text_thick = max(1, round(scale * 1.6))
    for face in snap.faces:
        color = _bgr(face_color(face.face_id))
        x, y, bw, bh = (v * s for v in face.box)
        x0, y0 = max(0, round(x)), max(0, round(y))
        x1, y1 = min(out_w - 1, round(x + bw)), min(out_h - 1, round(y + bh))
        cv2.rectangle(pic, (x0, y0), (x1, y1), color, thick, cv2.LINE_AA)
        i = int(np.argmax(face.probs))
        text = f"#{face.face_id} {labels[i]} {100 * float(face.probs[i]):.0f}%"
        (tw, th), base = cv2.getTextSize(text, font, scale, text_thick)
        pad = max(2, thick)
        top = y0 - th - base - 2 * pad
        if top < 0:  # no room above the box: inside its top edge
            top = y0
        cv2.rectangle(pic, (x0, top), (x0 + tw + 2 * pad, top + th + base + 2 * pad), color, -1)
        cv2.putText(
            pic, text, (x0 + pad, top + pad + th), font, scale, (0, 0, 0), text_thick, cv2.LINE_AA
        )
    ok, buf = cv2.imencode(".jpg", pic, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes(), (out_w, out_h)


def camera_state(capture: dict, frame_age_s: float | None) -> str:
    """ok | starting | reopening | stalled | ended, from the capture thread's figures."""
    if capture.get("ended"):
        return "ended"
    if not capture.get("source_open", True):
        seen = capture.get("frames_read", 0) or capture.get("reopen_count", 0)
        return "reopening" if seen or capture.get("last_error") else "starting"
    if frame_age_s is not None and frame_age_s > STALE_S:
        return "stalled"
    return "ok"


def face_json(face: LiveFace, labels: tuple[str, ...]) -> dict:
    i = int(np.argmax(face.probs))
    return {
        "face_id": face.face_id,
        "color": face_color(face.face_id),
        "box": box_dict(face.box),
        "emotion": labels[i],
        "confidence": round(float(face.probs[i]), 4),
        "probs": {lab: round(float(p), 4) for lab, p in zip(labels, face.probs, strict=True)},
        "top": top_k(face.probs, labels, 3),
        "tracked_s": round(max(0.0, face.tracked_s), 2),
    }


def state_json(
    snap: Snapshot | None,
    *,
    device_id: str,
    model_version: str,
    labels: tuple[str, ...],
    rates: tuple[float, float | None],
    status: dict,
    web: dict,
    now: float,
) -> dict:
    """The /api/state (and push channel) payload; faces largest first."""
    frame = None
    faces: list[dict] = []
    age = None
    if snap is not None:
        age = max(0.0, now - snap.frame.timestamp)
        w, h = snap.frame.size
        frame = {
            "index": int(snap.frame.index),
            "width": w,
            "height": h,
            "captured_at": iso_utc(snap.frame.timestamp),
            "age_s": round(age, 3),
        }
        if age <= STALE_S:
            by_size = sorted(snap.faces, key=lambda f: -(f.box[2] * f.box[3]))
            faces = [face_json(f, labels) for f in by_size]
    capture = status.get("capture", {})
    output = status.get("output", {})
    mqtt_on = status.get("output_mode") == "mqtt"
    fps, latency = rates
    return {
        "schema": LIVE_SCHEMA,
        "device_id": device_id,
        "model_version": model_version,
        "labels": list(labels),
        "ts": round(now, 3),
        "fps": round(fps, 2),
        "latency_ms": None if latency is None else round(latency, 1),
        "face_count": len(faces),
        "largest_face_id": faces[0]["face_id"] if faces else None,
        "faces": faces,
        "frame": frame,
        "camera": {
            "state": camera_state(capture, age),
            "open": bool(capture.get("source_open", False)),
            "capture_fps": capture.get("capture_fps"),
            "reopen_count": capture.get("reopen_count", 0),
            "last_error": capture.get("last_error"),
        },
        "mqtt": {
            "enabled": mqtt_on,
            "connected": bool(output.get("connected")) if mqtt_on else None,
            "spool_depth": output.get("spool_depth") if mqtt_on else None,
        },
        "web": web,
    }
