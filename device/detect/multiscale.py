"""Room-scale face detection: BlazeFace short-range run on several views of the frame.

BlazeFace short-range finds a face when the face is about 28-112 px tall in the network's
input, whatever the input's size (the net is fully convolutional: LiteRT resizes its input, and
its anchors follow the grid; benchmarks/blazeface_scale.py measures the band). Letterboxed into
128x128, a 640x480 frame shows its faces at a fifth of their size, so faces under ~140 px are
missed. `MultiScaleDetector` (detector kind "auto") therefore looks at each frame through views
that bring every face size into that band:

- near: the whole frame letterboxed to 128x128, every run (close-ups, faces >= ~140 px);
- far: tiles of the frame upscaled so a `far_min_face_px` face is ~30 px to the net, overlapping
  by the largest face they look for, and one mid view of the whole frame at a lower scale;
  `scan_px_per_frame` of tiles are credited each run, round-robin; every new far find gets a
  second look at two other scales (confirm) before it counts;
- roi: each face found in the last `roi_hold_runs` runs that the near view did not find again
  is looked for in a square around where its motion puts it (96x96 input), so a small face,
  once found, is detected on every run rather than once a scan.

Detections from all views are fused by score-ordered suppression (IoU, or one box mostly inside
another). `scan_all()` runs every view at once: photos, where time matters less than recall.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from emotion_edge.config import DetectorConfig
from emotion_edge.detect.detector import BlazeFaceDetector, Detection
from emotion_edge.errors import ModelError
from emotion_edge.geometry import intersection, iou, nested_same_face, same_face_nested

# Face heights (in network input pixels) that short-range BlazeFace finds reliably; measured on
# FER2013 faces pasted at known sizes (benchmarks/blazeface_scale.py, docs/benchmarks.md).
NET_MIN_FACE = 28.0
NET_MAX_FACE = 112.0
REFERENCE_SIDE = 640.0  # far_min_face_px is a face height in a frame this wide
GRID = 16  # the coarsest stride: input sides are padded to a multiple of it


@dataclass(frozen=True)
class View:
    """A region of the frame (x0, y0, x1, y1 in frame px; may reach past the frame, padded
    black) shown to the net at `scale` input px per frame px."""

    kind: str  # near | mid | far | roi
    x0: float
    y0: float
    x1: float
    y1: float
    scale: float

    @property
    def input_size(self) -> tuple[int, int]:
        w = math.ceil((self.x1 - self.x0) * self.scale / GRID) * GRID
        h = math.ceil((self.y1 - self.y0) * self.scale / GRID) * GRID
        return max(GRID, w), max(GRID, h)

    @property
    def pixels(self) -> int:
        w, h = self.input_size
        return w * h


def grid_anchors(w: int, h: int) -> np.ndarray:
    """(N, 2) anchor centres in input pixels for a w x h input, in the model's output order:
    the stride-8 grid with 2 anchors per cell, then the stride-16 grid with 6."""
    out = []
    for stride, n in ((8, 2), (16, 6)):
        gw, gh = w // stride, h // stride
        ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
        c = np.stack([(xs.ravel() + 0.5) * stride, (ys.ravel() + 0.5) * stride], 1)
        out.append(np.repeat(c, n, axis=0))
    return np.concatenate(out).astype(np.float32)


def fuse(dets: list[Detection], iou_thr: float, inside_thr: float = 0.6) -> list[Detection]:
    """Score-ordered suppression across views: a box overlapping a kept one by IoU > iou_thr,
    or lying mostly (> inside_thr of its area) inside it or around it as the same face
    (geometry.nested_same_face), is that face."""
    kept: list[Detection] = []
    for d in sorted(dets, key=lambda d: -d.score):
        if not any(
            iou(d.box, k.box) > iou_thr or nested_same_face(d.box, k.box, inside_thr) for k in kept
        ):
            kept.append(d)
    return kept


class BlazeFaceViews:
    """Runs short-range BlazeFace on views of any size: one interpreter per input shape."""

    def __init__(self, model_path: Path, cfg: DetectorConfig) -> None:
        self.model_path = model_path
        self.cfg = cfg
        self._interps: dict[tuple[int, int], tuple[object, int, int, int, np.ndarray]] = {}

    def _interp(self, w: int, h: int):
        key = (w, h)
        got = self._interps.get(key)
        if got is None:
            from emotion_edge.classify.litert import make_interpreter

            it = make_interpreter(model_path=str(self.model_path), num_threads=self.cfg.num_threads)
            inp = it.get_input_details()[0]["index"]
            it.resize_tensor_input(inp, [1, h, w, 3])
            it.allocate_tensors()
            outs = sorted(it.get_output_details(), key=lambda d: -int(d["shape"][-1]))
            anchors = grid_anchors(w, h)
            n_out = int(it.get_tensor(outs[0]["index"]).shape[1])
            if n_out != len(anchors):
                raise ModelError(
                    f"{self.model_path}: {n_out} boxes for {w}x{h}, not {len(anchors)}"
                )
            got = self._interps[key] = (it, inp, outs[0]["index"], outs[1]["index"], anchors)
        return got

    def run(self, gray: np.ndarray, view: View) -> list[Detection]:
        import cv2

        w_in, h_in = view.input_size
        it, inp, reg, cls, anchors = self._interp(w_in, h_in)
        fh, fw = gray.shape[:2]
        # the part of the view inside the frame, and where it lands in the input
        sx0, sy0 = max(0, int(round(view.x0))), max(0, int(round(view.y0)))
        sx1, sy1 = min(fw, int(round(view.x1))), min(fh, int(round(view.y1)))
        buf = np.full((1, h_in, w_in, 3), -1.0, np.float32)  # black outside the frame
        dx0 = min(w_in, max(0, int(round((sx0 - view.x0) * view.scale))))
        dy0 = min(h_in, max(0, int(round((sy0 - view.y0) * view.scale))))
        dw = min(w_in - dx0, int(round((sx1 - sx0) * view.scale)))
        dh = min(h_in - dy0, int(round((sy1 - sy0) * view.scale)))
        if sx1 > sx0 and sy1 > sy0 and dw > 0 and dh > 0:
            interp = cv2.INTER_AREA if view.scale < 1 else cv2.INTER_LINEAR
            small = cv2.resize(gray[sy0:sy1, sx0:sx1], (dw, dh), interpolation=interp)
            buf[0, dy0 : dy0 + dh, dx0 : dx0 + dw, :] = (
                small.astype(np.float32) * (2.0 / 255.0) - 1.0
            )[..., None]
        it.set_tensor(inp, buf)
        it.invoke()
        raw = it.get_tensor(reg)[0]
        logits = it.get_tensor(cls)[0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -80.0, 80.0)))
        # around a face already found (roi) the net only has to see it again: the whole-frame
        # threshold; a new find in an upscaled tile must score far_min_score
        thr = self.cfg.min_score if view.kind == "roi" else self.cfg.far_min_score
        keep = np.nonzero(scores >= thr)[0]
        if keep.size == 0:
            return []
        a, r = anchors[keep], raw[keep]
        cx, cy = r[:, 0] + a[:, 0], r[:, 1] + a[:, 1]
        boxes = np.stack(
            [cx - r[:, 2] / 2, cy - r[:, 3] / 2, cx + r[:, 2] / 2, cy + r[:, 3] / 2], 1
        )
        kps = r[:, 4:16].reshape(-1, 6, 2) + a[:, None, :]
        from emotion_edge.detect.detector import weighted_nms

        out = []
        for box, score, kp in weighted_nms(boxes, scores[keep], kps, self.cfg.nms_iou):
            x1, y1, x2, y2 = (float(v) for v in box)
            fx1, fy1 = x1 / view.scale + view.x0, y1 / view.scale + view.y0
            fx2, fy2 = x2 / view.scale + view.x0, y2 / view.scale + view.y0
            fx1, fy1 = max(0.0, fx1), max(0.0, fy1)
            fx2, fy2 = min(float(fw), fx2), min(float(fh), fy2)
            bw, bh = fx2 - fx1, fy2 - fy1
            if min(bw, bh) < self.cfg.min_face_px:
                continue
            kp_f = (kp / view.scale + (view.x0, view.y0)).astype(np.float32)
            out.append(Detection((fx1, fy1, bw, bh), float(score), kp_f))
        return out


LEVEL_STEP = 2.5  # scale ratio between levels: each covers NET_MIN..NET_MAX_FACE with overlap
# Neighbouring tiles overlap by the largest face their level must find whole (bigger ones are
# the next level's small faces), so every face of the level lies whole inside one tile.
TILE_OVERLAP = NET_MIN_FACE * LEVEL_STEP


def _spans(length: float, tile: float, overlap: float) -> list[tuple[float, float]]:
    """Start/end of the fewest tiles of size `tile` overlapping by `overlap` that cover
    [0, length], spread evenly."""
    if length <= tile:
        return [(0.0, tile)]
    n = int(np.ceil((length - overlap) / (tile - overlap)))
    stride = (length - tile) / (n - 1) if n > 1 else 0.0
    return [(i * stride, i * stride + tile) for i in range(n)]


def tile_views(fw: int, fh: int, scale: float, tile: int) -> list[View]:
    """Square tiles of `tile` input px covering the frame at `scale`, overlapping by
    TILE_OVERLAP input px."""
    side, over = tile / scale, TILE_OVERLAP / scale  # in frame px
    return [
        View("far", x0, y0, x1, y1, scale)
        for y0, y1 in _spans(fh, side, over)
        for x0, x1 in _spans(fw, side, over)
    ]


def scan_plan(fw: int, fh: int, far_scale: float, tile: int) -> list[View]:
    """The far and mid views of one scan of a fw x fh frame.

    Levels go down from `far_scale` by LEVEL_STEP until the near view (the whole frame in
    128 px) covers the rest; a level bigger than a tile is tiled."""
    near_scale = 128.0 / max(fw, fh)
    views: list[View] = []
    scale = far_scale
    first = True
    while scale > near_scale * 1.5:
        if max(fw, fh) * scale <= tile * 1.75:  # small enough for one view
            views.append(View("far" if first else "mid", 0.0, 0.0, float(fw), float(fh), scale))
        else:
            views.extend(tile_views(fw, fh, scale, tile))
        first = False
        scale /= LEVEL_STEP
    return views


@dataclass
class _Seen:
    """A face the detector found: where, how many runs ago, and when a roi view last looked."""

    det: Detection
    age: int
    roi_at: int
    velocity: tuple[float, float] = (0.0, 0.0)  # centre motion per run, px

    def predicted_centre(self) -> tuple[float, float]:
        x, y, w, h = self.det.box
        k = self.age + 1
        return x + w / 2 + self.velocity[0] * k, y + h / 2 + self.velocity[1] * k


ROI_PX = 96  # roi view input side: the face at ~38 px, inside the net's reliable band
ROI_SIDE = 2.5  # roi view side in face sizes
MAX_ROI_PER_FRAME = 6


class MultiScaleDetector:
    """Detector kind "auto": near + round-robin far/mid tiles + roi re-detection (see above)."""

    def __init__(self, cfg: DetectorConfig) -> None:
        near_cfg = DetectorConfig(**{**cfg.__dict__, "kind": "blazeface"})
        self.near = BlazeFaceDetector(near_cfg)  # loads and checks the pinned model file
        self.cfg = cfg
        self.name = "auto"
        self.views = BlazeFaceViews(self.near.model_path, near_cfg)
        self.tile = cfg.far_tile_px
        self.scan_px = cfg.scan_px_per_frame
        self.hold_frames = cfg.roi_hold_runs
        self._plan: list[View] = []
        self._plan_key: tuple[int, int] | None = None
        self._next = 0
        self._credit = 0.0
        self._memory: list[_Seen] = []
        self._runs = 0
        self.passes: Counter[str] = Counter()  # views run, by kind (stats)
        self.last_ms: dict[str, float] = {}

    def far_scale(self, fw: int, fh: int) -> float:
        """Upscaling of the far tiles: the smallest face looked for (far_min_face_px in a
        640 px wide frame, proportionally more in a bigger frame or photo of the same field of
        view) becomes ~30 px to the net. A 24 px face is 3.75 % of a 640 px frame: in a
        2000 px photo that is a 75 px face, and smaller specks are texture, not people."""
        return 30.0 / (self.cfg.far_min_face_px * max(1.0, max(fw, fh) / REFERENCE_SIDE))

    def _far_views(self, fw: int, fh: int) -> list[View]:
        """The next views of the scan: scan_px_per_frame input pixels are credited each run
        and a view runs once the credit covers it (a big tile every other run, say)."""
        if self._plan_key != (fw, fh):
            self._plan = scan_plan(fw, fh, self.far_scale(fw, fh), self.tile)
            self._plan_key = (fw, fh)
            self._next = 0
        self._credit = min(
            self._credit + self.scan_px, self.scan_px + max(v.pixels for v in self._plan)
        )
        out: list[View] = []
        while self._credit >= self._plan[self._next].pixels:
            v = self._plan[self._next]
            out.append(v)
            self._credit -= v.pixels
            self._next = (self._next + 1) % len(self._plan)
        return out

    def _roi_views(self, near: list[Detection], fw: int, fh: int) -> list[View]:
        """Squares around remembered faces the near view did not find again this run, where
        their motion puts them now: at most MAX_ROI_PER_FRAME, those looked at least recently
        first (with more faces, each is found every other run or so, and the tracker holds
        it between)."""
        todo = []
        for seen in self._memory:
            x, y, w, h = seen.det.box
            cx, cy = seen.predicted_centre()
            if any(
                abs(cx - (n.box[0] + n.box[2] / 2)) < w and abs(cy - (n.box[1] + n.box[3] / 2)) < h
                for n in near
            ):
                continue
            todo.append(seen)
        todo.sort(key=lambda seen: seen.roi_at)
        views = []
        for seen in todo[:MAX_ROI_PER_FRAME]:
            seen.roi_at = self._runs
            x, y, w, h = seen.det.box
            cx, cy = seen.predicted_centre()
            side = max(w, h) * ROI_SIDE  # the face at ~38 px of 96, room to move
            views.append(
                View(
                    "roi", cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2, ROI_PX / side
                )
            )
        return views

    def detect(self, gray: np.ndarray) -> list[Detection]:
        """One frame of the video schedule: near + roi + the next far tiles."""
        if gray.ndim != 2 or gray.dtype != np.uint8:
            raise ValueError(f"expected a uint8 grayscale image, got {gray.dtype} {gray.shape}")
        fh, fw = gray.shape[:2]
        t0 = time.perf_counter()
        near = self.near.detect(gray)
        timing = {"near": (time.perf_counter() - t0) * 1e3}
        kinds = ["near"]
        known = list(near)  # found by the whole frame or again around a known face
        scanned: list[Detection] = []  # new candidates from the far scan: confirmed below
        for v in self._roi_views(near, fw, fh) + self._far_views(fw, fh):
            tv = time.perf_counter()
            found = self.views.run(gray, v)
            (known if v.kind == "roi" else scanned).extend(found)
            timing[v.kind] = timing.get(v.kind, 0.0) + (time.perf_counter() - tv) * 1e3
            kinds.append(v.kind)
        tv = time.perf_counter()
        remembered = [m.det for m in self._memory]
        fresh = [d for d in fuse(scanned, self.cfg.nms_iou) if not _near_any(d, known + remembered)]
        known_scanned = [d for d in scanned if d not in fresh]
        confirmed = self._confirm(gray, fresh)
        if fresh:
            timing["confirm"] = (time.perf_counter() - tv) * 1e3
            kinds.extend(["confirm"] * (2 * len(fresh)))
        out = fuse(known + known_scanned + confirmed, self.cfg.nms_iou)
        self._remember(out)
        self.passes.update(kinds)
        self.last_ms = timing
        return out

    def scan_all(self, gray: np.ndarray) -> list[Detection]:
        """Every view at once, on every tile grid (photos); far finds are confirmed."""
        fh, fw = gray.shape[:2]
        near = list(self.near.detect(gray))
        scanned: list[Detection] = []
        for v in scan_plan(fw, fh, self.far_scale(fw, fh), self.tile):
            scanned.extend(self.views.run(gray, v))
        fresh = [d for d in fuse(scanned, self.cfg.nms_iou) if not _near_any(d, near)]
        return fuse(near + self._confirm(gray, fresh), self.cfg.nms_iou)

    def _confirm(self, gray: np.ndarray, cands: list[Detection]) -> list[Detection]:
        """A second look at each new far-scan find, in squares of 2 and 3 face sizes around
        it (the face at ~64 and ~43 px of 128): upscaled texture that fooled one view rarely
        fools another scale (measured on dlib's labelled photos: docs/benchmarks.md). Kept
        if the lower of its score and the better look's reaches far_min_score, with the
        look's box: a face cut by a tile edge is whole in the look."""
        out = []
        for d in cands:
            x, y, w, h = d.box
            cx, cy = x + w / 2, y + h / 2
            reach = max(w, h) * 0.75  # a cut box's centre is off the face's by up to half
            best: Detection | None = None
            for mult in (2.0, 3.0):
                side = max(w, h) * mult
                v = View(
                    "roi", cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2, 128 / side
                )
                for e in self.views.run(gray, v):
                    ex, ey = e.box[0] + e.box[2] / 2, e.box[1] + e.box[3] / 2
                    if abs(ex - cx) < reach and abs(ey - cy) < reach:
                        if best is None or e.score > best.score:
                            best = e
            if best is not None and min(d.score, best.score) >= self.cfg.far_min_score:
                out.append(Detection(best.box, min(d.score, best.score), best.keypoints))
        return out

    def _remember(self, found: list[Detection]) -> None:
        """Faces to look for around next time: this run's, and older ones not found again for
        fewer than roi_hold_runs runs (a face the detector missed once is not gone)."""
        self._runs += 1
        kept = []
        for d in found:
            prev = [m for m in self._memory if _overlap(m.det.box, d.box)]
            velocity = (0.0, 0.0)
            if prev:
                m = min(prev, key=lambda m: _centre_gap(m.det.box, d.box))
                dx, dy = _centre_gap_xy(m.det.box, d.box)
                a = 0.5  # smoothed: one noisy box should not throw the next view off
                velocity = (
                    a * dx / (m.age + 1) + (1 - a) * m.velocity[0],
                    a * dy / (m.age + 1) + (1 - a) * m.velocity[1],
                )
            kept.append(_Seen(d, 0, min((m.roi_at for m in prev), default=-1), velocity))
        for m in self._memory:
            if m.age + 1 >= self.hold_frames or any(_overlap(m.det.box, k.det.box) for k in kept):
                continue
            kept.append(_Seen(m.det, m.age + 1, m.roi_at, m.velocity))
        self._memory = kept


def _near_any(d: Detection, others: list[Detection]) -> bool:
    """Whether `d`'s centre lies inside one of `others` as the same face (already known)."""
    cx, cy = d.box[0] + d.box[2] / 2, d.box[1] + d.box[3] / 2
    return any(
        o.box[0] <= cx <= o.box[0] + o.box[2]
        and o.box[1] <= cy <= o.box[1] + o.box[3]
        and same_face_nested(d.box, o.box)
        for o in others
    )


def _centre_gap_xy(a, b) -> tuple[float, float]:
    """Centre of box b minus centre of box a."""
    return b[0] + b[2] / 2 - a[0] - a[2] / 2, b[1] + b[3] / 2 - a[1] - a[3] / 2


def _centre_gap(a, b) -> float:
    dx, dy = _centre_gap_xy(a, b)
    return dx * dx + dy * dy


def _overlap(a, b) -> bool:
    """Overlapping boxes of one face (a face behind, in a close one's margin, is another)."""
    return intersection(a, b) > 0 and same_face_nested(a, b)
