"""Face detection on grayscale frames: BlazeFace in LiteRT (default), OpenCV Haar as fallback.

BlazeFace (MediaPipe, Apache-2.0) ships in this package as two .tflite files taken from the
mediapipe 0.10.21 wheel (see models/NOTICE-blazeface.md and tools/extract_blazeface.py); their
sha256 is pinned here and checked at load. Decoding follows MediaPipe's own graph: letterbox to
the square input, scale to [-1, 1], SSD anchors, sigmoid scores, weighted NMS, undo letterbox.
The model was trained on RGB; the grayscale frame is replicated to three channels because
that is what every source gives cheaply (the Pi camera's Y plane). Measured on the 43 labelled
dlib faces (testing + training XML): short-range finds 10 from gray vs 11 from RGB, full-range
34 vs 43 - gray costs the full-range model some small faces.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from emotion_edge.config import DETECTOR_KINDS, DetectorConfig
from emotion_edge.errors import ConfigError, ModelError
from emotion_edge.models import MODELS_DIR, sha256_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlazeFaceSpec:
    """What differs between the two BlazeFace variants."""

    filename: str
    sha256: str
    input_size: int
    strides: tuple[int, ...]  # one entry per SSD layer; equal neighbours share a grid
    anchors_per_layer: int


BLAZEFACE = {
    "blazeface": BlazeFaceSpec(
        "face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
        128,
        (8, 16, 16, 16),
        2,
    ),
    "blazeface_full": BlazeFaceSpec(
        "face_detection_full_range_sparse.tflite",
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
        192,
        (4,),
        1,
    ),
}


@dataclass
class Detection:
    box: tuple[float, float, float, float]  # x, y, w, h in frame pixels
    score: float
    keypoints: np.ndarray | None = None  # (6, 2) for BlazeFace, else None


@runtime_checkable
class FaceDetector(Protocol):
    name: str

    def detect(self, gray: np.ndarray) -> list[Detection]: ...  # uint8 grayscale frame


# -- geometry -----------------------------------------------------------------------------------


def _iou_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x1, y1, x2, y2) box against N of them."""
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_nms(
    boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, iou_thr: float
) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """MediaPipe's WEIGHTED suppression: each cluster becomes the score-weighted mean of its
    members (boxes and keypoints) with the best member's score; steadier than plain NMS."""
    order = np.argsort(-scores)
    boxes, scores, keypoints = boxes[order], scores[order], keypoints[order]
    out = []
    alive = np.ones(len(scores), bool)
    for i in range(len(scores)):
        if not alive[i]:
            continue
        members = alive & (_iou_many(boxes[i], boxes) > iou_thr)
        members[i] = True
        w = scores[members][:, None]
        box = (boxes[members] * w).sum(0) / w.sum()
        kps = (keypoints[members] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, float(scores[i]), kps))
        alive &= ~members
    return out


def ssd_anchors(input_size: int, strides: tuple[int, ...], per_layer: int) -> np.ndarray:
    """(N, 2) anchor centres in [0, 1], in the model's output order.

    Consecutive layers with the same stride share one grid: for each cell, all their anchors
    (2 per layer) come together. Anchor size is fixed (1x1), so only centres are needed.
    """
    centres = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        grid = int(np.ceil(input_size / strides[i]))
        n = per_layer * (j - i)
        ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
        c = np.stack([(xs.ravel() + 0.5) / grid, (ys.ravel() + 0.5) / grid], 1)
        centres.append(np.repeat(c, n, axis=0))
        i = j
    return np.concatenate(centres).astype(np.float32)


# -- BlazeFace ----------------------------------------------------------------------------------


class BlazeFaceDetector:
    """BlazeFace short- or full-range in LiteRT on a grayscale frame replicated to RGB."""

    def __init__(self, cfg: DetectorConfig, model_path: Path | None = None) -> None:
        from emotion_edge.classify.litert import make_interpreter

        self.cfg = cfg
        self.spec = BLAZEFACE[cfg.kind]
        self.name = cfg.kind
        path = Path(model_path or cfg.model_path or MODELS_DIR / self.spec.filename).expanduser()
        if not path.is_file():
            raise ModelError(f"{path}: BlazeFace model not found")
        digest = sha256_file(path)
        if digest != self.spec.sha256:
            # The decoder below is specific to this exact model (anchors, output layout).
            raise ModelError(
                f"{path}: sha256 {digest[:16]}... is not the pinned "
                f"{self.spec.filename} ({self.spec.sha256[:16]}...); corrupt or a "
                "different model (re-extract it with emotion_edge.tools."
                "extract_blazeface)"
            )
        self.model_path = path
        self.interp = make_interpreter(model_path=str(path), num_threads=cfg.num_threads)
        inp = self.interp.get_input_details()[0]
        s = self.spec.input_size
        if tuple(inp["shape"]) != (1, s, s, 3):
            raise ModelError(
                f"{path}: input shape {tuple(inp['shape'])}, expected (1, {s}, {s}, 3)"
            )
        self._in = inp["index"]
        outs = sorted(self.interp.get_output_details(), key=lambda d: -int(d["shape"][-1]))
        self._reg, self._cls = outs[0]["index"], outs[1]["index"]  # [1,N,16], [1,N,1]
        self.anchors = ssd_anchors(s, self.spec.strides, self.spec.anchors_per_layer)
        if int(outs[0]["shape"][1]) != len(self.anchors):
            raise ModelError(f"{path}: {outs[0]['shape'][1]} boxes, expected {len(self.anchors)}")
        self._buf = np.zeros((1, s, s, 3), np.float32)
        self.last_ms: dict[str, float] = {}

    def letterbox(self, gray: np.ndarray) -> tuple[float, float, float]:
        """Fill the input tensor buffer; returns (scale, pad_x, pad_y) to undo it."""
        import cv2

        s = self.spec.input_size
        h, w = gray.shape[:2]
        scale = s / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        small = cv2.resize(gray, (nw, nh), interpolation=cv2.INTER_AREA)
        px, py = (s - nw) // 2, (s - nh) // 2
        buf = self._buf[0]
        buf.fill(-1.0)  # black border, as MediaPipe's letterbox pads with zero pixels
        buf[py : py + nh, px : px + nw, :] = (small.astype(np.float32) * (2.0 / 255.0) - 1.0)[
            ..., None
        ]
        return scale, px, py

    def detect(self, gray: np.ndarray) -> list[Detection]:
        if gray.ndim != 2 or gray.dtype != np.uint8:
            raise ValueError(f"expected a uint8 grayscale image, got {gray.dtype} {gray.shape}")
        t0 = time.perf_counter()
        scale, px, py = self.letterbox(gray)
        t1 = time.perf_counter()
        self.interp.set_tensor(self._in, self._buf)
        self.interp.invoke()
        raw = self.interp.get_tensor(self._reg)[0]
        logits = self.interp.get_tensor(self._cls)[0, :, 0]
        t2 = time.perf_counter()
        dets = self.decode(raw, logits, gray.shape, scale, px, py)
        self.last_ms = {
            "prep": (t1 - t0) * 1e3,
            "infer": (t2 - t1) * 1e3,
            "decode": (time.perf_counter() - t2) * 1e3,
        }
        return dets

    def decode(
        self,
        raw: np.ndarray,
        logits: np.ndarray,
        shape: tuple[int, ...],
        scale: float,
        px: float,
        py: float,
    ) -> list[Detection]:
        # Clipped as MediaPipe does (it clips at 100; 80 keeps exp() finite in float32).
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -80.0, 80.0)))
        keep = np.nonzero(scores >= self.cfg.min_score)[0]
        if keep.size == 0:
            return []
        s = float(self.spec.input_size)
        a = self.anchors[keep]
        r = raw[keep] / s
        cx, cy = r[:, 0] + a[:, 0], r[:, 1] + a[:, 1]
        bw, bh = r[:, 2], r[:, 3]
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        kps = r[:, 4:16].reshape(-1, 6, 2) + a[:, None, :]
        h, w = shape[:2]
        out = []
        for box, score, kp in weighted_nms(boxes, scores[keep], kps, self.cfg.nms_iou):
            # Normalised letterbox coordinates -> frame pixels.
            x1, y1, x2, y2 = ((box * s) - (px, py, px, py)) / scale
            x1, y1 = max(0.0, float(x1)), max(0.0, float(y1))
            x2, y2 = min(float(w), float(x2)), min(float(h), float(y2))
            bw_px, bh_px = x2 - x1, y2 - y1
            if min(bw_px, bh_px) < self.cfg.min_face_px:
                continue
            kp_px = (kp * s - (px, py)) / scale
            out.append(Detection((x1, y1, bw_px, bh_px), score, kp_px.astype(np.float32)))
        return out


# -- Haar fallback ------------------------------------------------------------------------------


class HaarDetector:
    """OpenCV's frontal-face Haar cascade: no model file to ship, slower and less accurate."""

    name = "haar"
    CASCADE = "haarcascade_frontalface_default.xml"

    def __init__(self, cfg: DetectorConfig) -> None:
        import cv2

        self.cfg = cfg
        base = getattr(getattr(cv2, "data", None), "haarcascades", None)
        if base is None or not hasattr(cv2, "CascadeClassifier"):
            raise ModelError(
                "OpenCV has no Haar cascades (OpenCV 5 dropped them); install "
                "opencv-python-headless<5"
            )
        path = Path(base) / self.CASCADE
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise ModelError(f"{path}: cannot load the Haar cascade")

    def detect(self, gray: np.ndarray) -> list[Detection]:
        if gray.ndim != 2 or gray.dtype != np.uint8:
            raise ValueError(f"expected a uint8 grayscale image, got {gray.dtype} {gray.shape}")
        m = self.cfg.min_face_px
        found = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(m, m))
        # A cascade has no calibrated score: every hit it keeps counts as 1.0.
        return [Detection((float(x), float(y), float(w), float(h)), 1.0) for x, y, w, h in found]


def detect_photo(detector: FaceDetector, gray: np.ndarray) -> list[Detection]:
    """All faces of a still photo: every view at once where the detector has several (kind
    auto: `scan_all`), else its one pass. A photo has no next frame to find a face in."""
    scan_all = getattr(detector, "scan_all", None)
    return scan_all(gray) if scan_all is not None else detector.detect(gray)


def make_detector(cfg: DetectorConfig) -> FaceDetector:
    """The configured detector. A missing packaged BlazeFace file falls back to Haar with a
    warning; an explicit model_path that is missing, or any file failing its sha256, is a
    ModelError."""
    if cfg.kind == "haar":
        return HaarDetector(cfg)
    if cfg.kind == "auto":
        from emotion_edge.detect.multiscale import MultiScaleDetector

        if not cfg.model_path and not (MODELS_DIR / BLAZEFACE["blazeface"].filename).is_file():
            log.warning("BlazeFace short-range model missing: detector auto falls back to Haar")
            return HaarDetector(cfg)
        return MultiScaleDetector(cfg)
    if cfg.kind not in BLAZEFACE:
        raise ConfigError(f"detector.kind: {cfg.kind!r} is not one of {', '.join(DETECTOR_KINDS)}")
    if not cfg.model_path:
        packaged = MODELS_DIR / BLAZEFACE[cfg.kind].filename
        if not packaged.is_file():
            log.warning(
                "BlazeFace model %s is missing from this install; falling back to the "
                "slower, less accurate Haar cascade (re-extract it with python -m "
                "emotion_edge.tools.extract_blazeface)",
                packaged,
            )
            return HaarDetector(cfg)
    return BlazeFaceDetector(cfg)
