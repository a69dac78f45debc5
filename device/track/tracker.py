"""IoU tracker: stable face ids across frames.

Detections are matched to tracks greedily by IoU (highest first); a detection and a track left
over are still matched when their centres are close for their size (a small face moving a
few pixels, or one found again after a miss, has little IoU with its old box). A track that
goes unmatched is held, `detected` false, until it has been missed on more than `max_missed`
detection runs and for longer than `hold_s` seconds: a face keeps its id through detection
misses and short occlusions. Between detection runs (when the pipeline detects only every Nth
frame to stay within budget) `predict()` moves each box by its smoothed velocity, so the
classifier crops roughly where the face went.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from emotion_edge.config import TrackingConfig
from emotion_edge.geometry import SAME_FACE_MAX_RATIO, Box, iou, nested_same_face


def iou_matrix(a: Sequence[Box], b: Sequence[Box]) -> np.ndarray:
    m = np.zeros((len(a), len(b)), np.float32)
    for i, ba in enumerate(a):
        for j, bb in enumerate(b):
            m[i, j] = iou(ba, bb)
    return m


@dataclass
class Track:
    track_id: int
    box: Box
    score: float
    hits: int = 1  # detection runs that matched this track
    missed: int = 0  # consecutive detection runs without a match
    velocity: tuple[float, float] = (0.0, 0.0)  # px per frame of the box centre
    frames_since_detect: int = 0
    detected_box: Box | None = None  # box of the last matched detection (predict() moves .box)
    last_seen_ts: float | None = None  # capture time of the last matched detection

    def __post_init__(self) -> None:
        if self.detected_box is None:
            self.detected_box = self.box

    @property
    def visible(self) -> bool:
        """Seen on the last detection run (so its crop is worth classifying)."""
        return self.missed == 0


def _merge_duplicates(tracks: list[Track], inside: float = 0.7) -> tuple[list[Track], list[int]]:
    """One face cannot be two tracks: a track whose box lies mostly inside another's (or
    around it) is the same face framed tighter or looser by another detector view
    (geometry.nested_same_face: not a smaller face behind, in a close face's margin); the
    younger one (higher id) goes, the older keeps the face's id."""
    gone: set[int] = set()
    order = sorted(tracks, key=lambda t: t.track_id)
    for i, a in enumerate(order):
        if a.track_id in gone:
            continue
        for b in order[i + 1 :]:
            if b.track_id in gone:
                continue
            if nested_same_face(a.box, b.box, inside):
                gone.add(b.track_id)
                if b.missed == 0 and a.missed > 0:  # the older one takes the fresh sighting
                    a.box, a.detected_box, a.score = b.box, b.detected_box, b.score
                    a.missed, a.last_seen_ts = 0, b.last_seen_ts
    return [t for t in tracks if t.track_id not in gone], sorted(gone)


class IouTracker:
    def __init__(self, cfg: TrackingConfig | None = None):
        self.cfg = cfg or TrackingConfig()
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(
        self,
        boxes: Sequence[Box],
        scores: Sequence[float] | None = None,
        ts: float | None = None,
        frame_size: tuple[int, int] | None = None,
    ) -> tuple[list[Track], list[int]]:
        """Match one detection run at capture time `ts` (None: hold by runs only) on a frame
        of `frame_size` (width, height); return (live tracks, ids of tracks dropped now)."""
        scores = list(scores) if scores is not None else [1.0] * len(boxes)
        boxes = [tuple(float(v) for v in b) for b in boxes]
        matched_t: set[int] = set()
        matched_d: set[int] = set()
        if self.tracks and boxes:
            m = iou_matrix([t.box for t in self.tracks], boxes)
            pairs = np.argwhere(m >= self.cfg.iou_threshold)
            order = np.argsort(-m[pairs[:, 0], pairs[:, 1]], kind="stable") if len(pairs) else []
            for k in order:
                ti, di = (int(v) for v in pairs[k])
                if ti in matched_t or di in matched_d:
                    continue
                matched_t.add(ti)
                matched_d.add(di)
                self._match(self.tracks[ti], boxes[di], scores[di], ts)
            for ti, di in self._near_pairs(boxes, matched_t, matched_d):
                matched_t.add(ti)
                matched_d.add(di)
                self._match(self.tracks[ti], boxes[di], scores[di], ts)
        removed: list[int] = []
        kept: list[Track] = []
        for ti, t in enumerate(self.tracks):
            if ti not in matched_t:
                t.missed += 1
                t.frames_since_detect = 0
                held = ts is not None and t.last_seen_ts is not None
                if t.missed > self.cfg.max_missed and (
                    not held or ts - t.last_seen_ts > self._hold_for(t, frame_size)
                ):
                    removed.append(t.track_id)
                    continue
            kept.append(t)
        for di, b in enumerate(boxes):
            if di not in matched_d:
                kept.append(Track(self._next_id, b, float(scores[di]), last_seen_ts=ts))
                self._next_id += 1
        self.tracks, merged = _merge_duplicates(kept)
        return list(self.tracks), removed + merged

    def _hold_for(self, t: Track, frame_size: tuple[int, int] | None) -> float:
        """How long a missed face is held: hold_s, or hold_interior_s when it was last seen
        more than a face size away from every frame edge (people leave a picture through its
        edges; a face lost in the middle is more likely missed by the detector or hidden)."""
        if frame_size is None or self.cfg.hold_interior_s <= self.cfg.hold_s:
            return self.cfg.hold_s
        x, y, w, h = t.detected_box or t.box
        m = max(w, h)
        fw, fh = frame_size
        interior = x > m and y > m and x + w < fw - m and y + h < fh - m
        return self.cfg.hold_interior_s if interior else self.cfg.hold_s

    def _near_pairs(
        self, boxes: list[Box], matched_t: set[int], matched_d: set[int]
    ) -> list[tuple[int, int]]:
        """Unmatched (track, detection) pairs whose centres lie within `max_jump` face sizes
        (more after misses: the face moved while unseen) and whose sizes differ by less than
        1.6x; closest first."""
        cands = []
        for ti, t in enumerate(self.tracks):
            if ti in matched_t:
                continue
            tx, ty, tw, th = t.box
            size = max(tw, th)
            reach = self.cfg.max_jump * size * (1.0 + 0.5 * min(t.missed, 4))
            for di, (x, y, w, h) in enumerate(boxes):
                if di in matched_d:
                    continue
                ratio = max(w, h) / max(size, 1e-6)
                d = float(np.hypot(x + w / 2 - tx - tw / 2, y + h / 2 - ty - th / 2))
                # Sizes within 1.6x, or within 2.5x when the centres nearly coincide: views
                # at different scales frame one small face tighter or looser (detect/
                # multiscale.py), and a box inside another on the same centre is that face.
                concentric = d <= 0.25 * min(size, max(w, h))
                near_size = 1 / SAME_FACE_MAX_RATIO <= ratio <= SAME_FACE_MAX_RATIO
                if not (1 / 1.6 <= ratio <= 1.6 or (concentric and near_size)):
                    continue
                if d <= reach:
                    cands.append((d, ti, di))
        out, used_t, used_d = [], set(), set()
        for _, ti, di in sorted(cands):
            if ti not in used_t and di not in used_d:
                used_t.add(ti)
                used_d.add(di)
                out.append((ti, di))
        return out

    def _match(self, t: Track, box: Box, score: float, ts: float | None = None) -> None:
        steps = max(1, t.frames_since_detect + 1)
        last = t.detected_box
        ocx, ocy = last[0] + last[2] / 2, last[1] + last[3] / 2
        ncx, ncy = box[0] + box[2] / 2, box[1] + box[3] / 2
        if t.missed == 0:
            a = self.cfg.velocity_alpha
            vx = (ncx - ocx) / steps
            vy = (ncy - ocy) / steps
            t.velocity = (a * vx + (1 - a) * t.velocity[0], a * vy + (1 - a) * t.velocity[1])
        else:
            t.velocity = (0.0, 0.0)  # after a gap the old motion says little
        t.box, t.detected_box, t.score = box, box, score
        t.hits += 1
        t.missed = 0
        t.frames_since_detect = 0
        t.last_seen_ts = ts

    def predict(self) -> list[Track]:
        """Advance visible tracks one frame without a detection run."""
        for t in self.tracks:
            if t.visible:
                x, y, w, h = t.box
                t.box = (x + t.velocity[0], y + t.velocity[1], w, h)
            t.frames_since_detect += 1
        return list(self.tracks)

    def clear(self) -> list[int]:
        ids = [t.track_id for t in self.tracks]
        self.tracks = []
        return ids
