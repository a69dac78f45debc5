"""The live view's model: the newest processed frame and its faces, and what is made of them.

`LiveView` is the pipeline's frame tap (emotion_edge.pipeline.FrameTap). On the pipeline thread
it only keeps a reference to the newest frame and its announced faces, and only while someone
watches (`hold` by a stream/push client, `poke` by a /api/state poll); with nobody watching
`on_frame` is one comparison. Turning a snapshot into the annotated JPEG (`render_jpeg`) and the
/api/state JSON (`state_json`) happens on the web server's thread, once per frame for all
clients.

One rule for what a face "is" right now, used by the picture's label and the page's card alike
(`face_label`): the face's smoothed leading emotion and its probability in whole percent, from
the same snapshot. Both carry the snapshot's `seq`, so the page shows a picture only next to the
state of the very same frame.

While watched, the tap also keeps a cheap motion figure (the share of a 80-px-wide grey copy
that changed since the previous frame): movement with no face for a while means people are
there but too far or too small for the detector, and the page says how to reach them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from emotion_edge.track.events import FaceObservation, box_dict, iso_utc, top_k
from emotion_edge.track.room import room_summary
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
# Motion: a pixel of the small grey copy "moved" when it changed by more than MOTION_LEVEL grey
# levels since the previous frame; the frame "has movement" when MOTION_MIN of them did. Area
# averaging to 80 px wide removes most sensor noise, so a still room stays under MOTION_MIN.
MOTION_WIDTH = 80
MOTION_LEVEL = 12
MOTION_MIN = 0.004
# The far-faces hint: no face found for this long while something moved in the last MOTION_RECENT_S.
HINT_AFTER_S = 8.0
MOTION_RECENT_S = 3.0


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
    detected: bool = True  # False: carried by the tracker through a detection miss

    def leading(self) -> int:
        """Index of the smoothed leading emotion (the first of equals, as np.argmax)."""
        return int(np.argmax(self.probs))

    def percent(self) -> int:
        """The leading emotion's probability in whole percent (`whole_percent`)."""
        return whole_percent(self.probs[self.leading()])


@dataclass(frozen=True)
class Scene:
    """What the frame tap saw apart from faces, for the "faces too far" hint."""

    motion: float = 0.0  # share of the small grey copy that changed since the previous frame
    no_face_s: float = 0.0  # seconds since a face was last found (0 while one is)
    moved_s_ago: float | None = None  # seconds since the last frame with movement; None: none yet


@dataclass(frozen=True)
class Snapshot:
    seq: int  # rises by one per stored frame
    frame: Frame
    faces: tuple[LiveFace, ...]
    processed_ts: float  # time.time() when the pipeline finished the frame
    scene: Scene = Scene()


def whole_percent(p: float) -> int:
    """A probability in whole percent, rounded half up (Python's "%.0f" rounds 24.5 to 24, the
    page's Math.round to 25: rounded once here, both show this number)."""
    return int(np.floor(100.0 * float(p) + 0.5))


def face_label(face: LiveFace, labels: tuple[str, ...]) -> str:
    """The text on the face's box: the same emotion and percent as its card's top row."""
    return f"#{face.face_id} {labels[face.leading()]} {face.percent()}%"


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
        # motion (pipeline thread only): previous small grey copy, frame times of the last
        # face found and the last movement
        self._small: np.ndarray | None = None
        self._face_ts: float | None = None
        self._moved_ts: float | None = None

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
            live.append(
                LiveFace(ob.face_id, ob.box, ob.probs, frame.timestamp - info[1], ob.detected)
            )
        scene = self._scene(frame, bool(faces))
        with self._lock:
            self._seq += 1
            self._snap = Snapshot(self._seq, frame, tuple(live), now, scene)
            self._recent.append((now, max(0.0, now - frame.timestamp)))

    def _scene(self, frame: Frame, face_found: bool) -> Scene:
        """Motion against the previous watched frame; about 0.1 ms at 640x480."""
        import cv2

        ts = frame.timestamp
        img = frame.image
        h, w = img.shape[:2]
        small = cv2.resize(
            img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY),
            (MOTION_WIDTH, max(1, round(h * MOTION_WIDTH / max(1, w)))),
            interpolation=cv2.INTER_AREA,
        ).astype(np.int16)
        prev, self._small = self._small, small
        motion = 0.0
        if prev is not None and prev.shape == small.shape:
            motion = float(np.mean(np.abs(small - prev) > MOTION_LEVEL))
        # locals: release() on the web thread may clear the attributes meanwhile
        moved_ts = ts if motion >= MOTION_MIN else self._moved_ts
        face_ts = self._face_ts
        if face_found or face_ts is None:
            face_ts = ts  # "no face for N s" counts from when watching began
        self._moved_ts, self._face_ts = moved_ts, face_ts
        return Scene(
            motion=motion,
            no_face_s=max(0.0, ts - face_ts),
            moved_s_ago=None if moved_ts is None else max(0.0, ts - moved_ts),
        )

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
                self._small = self._face_ts = self._moved_ts = None

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


def _dashed_rect(pic, p0, p1, color, thick: int, dash: int) -> None:
    """A rectangle drawn as dashes: a face the tracker carries without a detection."""
    import cv2

    (x0, y0), (x1, y1) = p0, p1
    for a, b, fixed, horizontal in (
        (x0, x1, y0, True),
        (x0, x1, y1, True),
        (y0, y1, x0, False),
        (y0, y1, x1, False),
    ):
        for start in range(a, b, 2 * dash):
            end = min(b, start + dash)
            if horizontal:
                cv2.line(pic, (start, fixed), (end, fixed), color, thick, cv2.LINE_AA)
            else:
                cv2.line(pic, (fixed, start), (fixed, end), color, thick, cv2.LINE_AA)


def render_jpeg(
    snap: Snapshot, labels: tuple[str, ...], width: int, quality: int
) -> tuple[bytes, tuple[int, int]]:
    """The frame scaled to `width`, each face's box and `face_label` drawn on it (dashed for a
    face carried without a detection), and the frame's index in the bottom-left corner."""
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
        if face.detected:
            cv2.rectangle(pic, (x0, y0), (x1, y1), color, thick, cv2.LINE_AA)
        else:
            _dashed_rect(pic, (x0, y0), (x1, y1), color, thick, dash=max(4, 4 * thick))
        text = face_label(face, labels)
        (tw, th), base = cv2.getTextSize(text, font, scale, text_thick)
        pad = max(2, thick)
        top = y0 - th - base - 2 * pad
        if top < 0:  # no room above the box: inside its top edge
            top = y0
        cv2.rectangle(pic, (x0, top), (x0 + tw + 2 * pad, top + th + base + 2 * pad), color, -1)
        cv2.putText(
            pic, text, (x0 + pad, top + pad + th), font, scale, (0, 0, 0), text_thick, cv2.LINE_AA
        )
    # the frame's index, so a person (or a screenshot) can pair the picture with the page
    tag = f"frame {int(frame.index)}"
    tag_scale = scale * 0.7
    (tw, th), base = cv2.getTextSize(tag, font, tag_scale, 1)
    cv2.rectangle(pic, (0, out_h - th - base - 6), (tw + 8, out_h), (0, 0, 0), -1)
    cv2.putText(pic, tag, (4, out_h - base - 3), font, tag_scale, (220, 220, 220), 1, cv2.LINE_AA)
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
    i = face.leading()
    top = top_k(face.probs, labels, 3)
    for t in top:  # whole percents rounded here, once, so the page shows what the picture says
        t["percent"] = whole_percent(face.probs[labels.index(t["emotion"])])
    return {
        "face_id": face.face_id,
        "color": face_color(face.face_id),
        "box": box_dict(face.box),
        "detected": face.detected,
        "emotion": labels[i],
        "confidence": round(float(face.probs[i]), 4),
        "percent": face.percent(),
        "label": face_label(face, labels),
        "probs": {lab: round(float(p), 4) for lab, p in zip(labels, face.probs, strict=True)},
        "top": top,
        "tracked_s": round(max(0.0, face.tracked_s), 2),
    }


def far_faces_hint(scene: Scene, detector_kind: str) -> str | None:
    """How to reach farther faces, when something moves but no face has been found for a while
    and the detector is not already the all-distances one ("auto")."""
    if not detector_kind or detector_kind == "auto":
        return None
    if scene.no_face_s < HINT_AFTER_S:
        return None
    if scene.moved_s_ago is None or scene.moved_s_ago > MOTION_RECENT_S:
        return None
    return (
        f"Movement but no face for {scene.no_face_s:.0f} s: faces far from the camera may be "
        f'too small for the "{detector_kind}" detector. Set [detector] kind = "auto" to find '
        "faces down to about 24 px tall, or move the camera closer."
    )


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
    detector_kind: str = "",
) -> dict:
    """The /api/state (and push channel) payload; faces largest first.

    `frame.seq` is the snapshot's sequence number; the picture stream's part for the same
    snapshot carries it as X-Frame-Seq, so a page can pair the two."""
    frame = None
    faces: list[dict] = []
    shown: list[LiveFace] = []
    age = None
    hint = None
    scene = None
    if snap is not None:
        age = max(0.0, now - snap.frame.timestamp)
        w, h = snap.frame.size
        frame = {
            "seq": int(snap.seq),
            "index": int(snap.frame.index),
            "width": w,
            "height": h,
            "captured_at": iso_utc(snap.frame.timestamp),
            "age_s": round(age, 3),
        }
        if age <= STALE_S:
            shown = sorted(snap.faces, key=lambda f: -(f.box[2] * f.box[3]))
            faces = [face_json(f, labels) for f in shown]
            hint = None if faces else far_faces_hint(snap.scene, detector_kind)
        scene = {
            "motion": round(snap.scene.motion, 4),
            "no_face_s": round(snap.scene.no_face_s, 2),
            "moved_s_ago": None
            if snap.scene.moved_s_ago is None
            else round(snap.scene.moved_s_ago, 2),
        }
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
        # the faces on the page as a whole, by the one room rule (track.room)
        "room": room_summary([f.probs for f in shown], labels),
        "frame": frame,
        "scene": scene,
        "hint": hint,
        "detector": detector_kind or None,
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
