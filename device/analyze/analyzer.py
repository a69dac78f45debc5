"""One still image -> its faces and their emotions, through the daemon's own stages.

The detector and the classifier are built by the same factories the daemon uses
(`make_detector`, `load_classifier`) from the same config tables; a photo is scanned as the
daemon's images source scans one (`detect_photo`: every view of detector kind auto), and each
face is turned upright by its eye keypoints (`eye_roll_deg`) and cropped and classified by
`FaceClassifier.classify`, the pipeline's call: whatever the daemon changes in detection,
alignment or cropping, an analysed photo gets too. Tracking and smoothing are left out (a
photo has no time), so the probabilities are the model's raw output for each face.

    from emotion_edge import Analyzer, analyze_image
    result = analyze_image("photo.jpg")            # a path, bytes, or a BGR / gray array
    for face in result.faces:
        print(face.box, face.emotion, face.confidence)

An Analyzer is safe to share between threads (the detector is used under a lock; the
classifier has its own).
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from emotion_edge.analyze.image import DEFAULT_LIMITS, ImageLimits, decode_image
from emotion_edge.config import AppConfig, ClassifierConfig, DetectorConfig
from emotion_edge.detect.detector import detect_photo
from emotion_edge.preprocess import eye_roll_deg, square_crop_box
from emotion_edge.track.events import box_dict
from emotion_edge.track.events import top_k as top_emotions
from emotion_edge.web.live import PALETTE, _bgr

CROP_SIDE = 112  # pixels of a face thumbnail
ANNOTATED_QUALITY = 85


@dataclass(frozen=True)
class FaceResult:
    """One face: its box (x, y, w, h in image pixels), detector score and probabilities."""

    box: tuple[float, float, float, float]
    score: float
    probabilities: dict[str, float]
    top: list[dict]
    crop_jpeg: bytes | None = None

    @property
    def emotion(self) -> str:
        return self.top[0]["emotion"]

    @property
    def confidence(self) -> float:
        return self.top[0]["confidence"]

    def to_json(self, index: int) -> dict:
        out = {
            "index": index,
            "box": box_dict(self.box),
            "score": round(float(self.score), 4),
            "emotion": self.emotion,
            "confidence": self.confidence,
            "probabilities": self.probabilities,
            "top": self.top,
        }
        if self.crop_jpeg is not None:
            out["crop_jpeg_b64"] = base64.b64encode(self.crop_jpeg).decode("ascii")
        return out


@dataclass(frozen=True)
class AnalysisResult:
    request_id: str
    width: int
    height: int
    faces: list[FaceResult]
    detector: str
    model_version: str
    labels: tuple[str, ...]
    elapsed_ms: float
    annotated_jpeg: bytes | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        out = {
            "schema": "emotion-edge/analysis/1",
            "request_id": self.request_id,
            "image": {"width": self.width, "height": self.height},
            "detector": self.detector,
            "model_version": self.model_version,
            "labels": list(self.labels),
            "face_count": len(self.faces),
            "faces": [f.to_json(i) for i, f in enumerate(self.faces)],
            "elapsed_ms": round(self.elapsed_ms, 1),
        }
        if self.annotated_jpeg is not None:
            out["annotated_jpeg_b64"] = base64.b64encode(self.annotated_jpeg).decode("ascii")
        return out


class Analyzer:
    """Detector + classifier built once from config; `analyze()` per image."""

    def __init__(
        self,
        cfg: AppConfig | None = None,
        *,
        detector_cfg: DetectorConfig | None = None,
        classifier_cfg: ClassifierConfig | None = None,
        limits: ImageLimits = DEFAULT_LIMITS,
        top_k: int = 3,
    ) -> None:
        from emotion_edge.classify.classifier import load_classifier
        from emotion_edge.detect.detector import make_detector

        if cfg is None:
            from emotion_edge.config import load_config

            cfg = load_config(None)  # the defaults: packaged models, the default detector
        self.detector = make_detector(detector_cfg or cfg.detector)
        self.classifier = load_classifier(classifier_cfg or cfg.classifier)
        self.labels = tuple(self.classifier.labels)
        self.model_version = self.classifier.version
        self.limits = limits
        self.top_k = max(1, int(top_k))
        self._detect_lock = threading.Lock()

    def analyze(
        self,
        image: np.ndarray | bytes | str | Path,
        *,
        crops: bool = False,
        annotated: bool = False,
        top_k: int | None = None,
        scan: str = "photo",
        request_id: str | None = None,
    ) -> AnalysisResult:
        """Faces in `image`: JPEG/PNG bytes, a file path, or a decoded BGR/gray uint8 array.

        Raises emotion_edge.analyze.ImageError for bytes or files that are not a usable
        JPEG/PNG (too big, too many pixels, truncated, another format). `scan`: "photo" looks
        with every view of the detector, as the daemon scans a photo of an images: source;
        "frame" makes one pass, as the daemon does on a camera frame (faster, fewer small
        faces)."""
        import cv2

        t0 = time.perf_counter()
        k = self.top_k if top_k is None else max(1, min(int(top_k), len(self.labels)))
        if isinstance(image, (str, Path)):
            image = Path(image).expanduser().read_bytes()
        if isinstance(image, (bytes, bytearray, memoryview)):
            image = decode_image(bytes(image), self.limits)
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim not in (2, 3):
            raise ValueError(f"expected a uint8 gray or BGR image, got {img.dtype} {img.shape}")
        gray = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        t1 = time.perf_counter()
        with self._detect_lock:  # a LiteRT interpreter is not thread-safe
            if scan == "photo":  # as the daemon's images source: every detector view
                detections = detect_photo(self.detector, gray)
            elif scan == "frame":  # as the daemon on a camera frame
                detections = self.detector.detect(gray)
            else:
                raise ValueError(f"scan: 'photo' or 'frame', got {scan!r}")
        t2 = time.perf_counter()
        # largest (nearest) face first, as the state payload's dominant_emotion picks it
        detections = sorted(detections, key=lambda d: -float(d.box[2]) * float(d.box[3]))
        boxes = [tuple(float(v) for v in d.box) for d in detections]
        rolls = [eye_roll_deg(d.keypoints) for d in detections]  # the pipeline's alignment
        probs = self.classifier.classify(gray, boxes, rolls)  # the pipeline's crop + model
        t3 = time.perf_counter()
        faces = []
        for det, p in zip(detections, probs, strict=True):
            p = np.asarray(p, np.float64)
            faces.append(
                FaceResult(
                    box=tuple(float(v) for v in det.box),
                    score=float(det.score),
                    probabilities={
                        lab: round(float(v), 4) for lab, v in zip(self.labels, p, strict=True)
                    },
                    top=top_emotions(p, self.labels, k),
                    crop_jpeg=self._crop_jpeg(img, det.box) if crops else None,
                )
            )
        annotated_jpeg = self.annotate(img, faces) if annotated else None
        t4 = time.perf_counter()
        h, w = img.shape[:2]
        return AnalysisResult(
            request_id=request_id or uuid.uuid4().hex,
            width=int(w),
            height=int(h),
            faces=faces,
            detector=getattr(self.detector, "name", type(self.detector).__name__),
            model_version=self.model_version,
            labels=self.labels,
            elapsed_ms=(t4 - t0) * 1000.0,
            annotated_jpeg=annotated_jpeg,
            timings_ms={
                "decode": round((t1 - t0) * 1000.0, 2),
                "detect": round((t2 - t1) * 1000.0, 2),
                "classify": round((t3 - t2) * 1000.0, 2),
                "encode": round((t4 - t3) * 1000.0, 2),
            },
        )

    def _crop_jpeg(self, img: np.ndarray, box) -> bytes | None:
        """The face as the model saw it (its crop rule), in colour, CROP_SIDE pixels square."""
        import cv2

        x0, y0, x1, y1 = square_crop_box(
            box, img.shape, self.classifier.crop_scale, self.classifier.crop_shift_y
        )
        h, w = img.shape[:2]
        crop = img[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)]
        if crop.size == 0:
            return None
        interp = cv2.INTER_AREA if crop.shape[0] > CROP_SIDE else cv2.INTER_LINEAR
        crop = cv2.resize(crop, (CROP_SIDE, CROP_SIDE), interpolation=interp)
        ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, ANNOTATED_QUALITY])
        return buf.tobytes() if ok else None

    @staticmethod
    def annotate(img: np.ndarray, faces: list[FaceResult]) -> bytes:
        """JPEG of the image with each face's box, number, emotion and confidence."""
        import cv2

        pic = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img.copy()
        h, w = pic.shape[:2]
        thick = max(2, round(max(w, h) / 400))
        font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.45, max(w, h) / 1200)
        text_thick = max(1, round(scale * 1.6))
        for i, face in enumerate(faces):
            color = _bgr(PALETTE[i % len(PALETTE)])
            x, y, bw, bh = face.box
            x0, y0 = max(0, round(x)), max(0, round(y))
            x1, y1 = min(w - 1, round(x + bw)), min(h - 1, round(y + bh))
            cv2.rectangle(pic, (x0, y0), (x1, y1), color, thick, cv2.LINE_AA)
            text = f"{i + 1} {face.emotion} {100 * face.confidence:.0f}%"
            (tw, th), base = cv2.getTextSize(text, font, scale, text_thick)
            pad = max(2, thick)
            top = y0 - th - base - 2 * pad
            if top < 0:
                top = y0
            cv2.rectangle(pic, (x0, top), (x0 + tw + 2 * pad, top + th + base + 2 * pad), color, -1)
            cv2.putText(
                pic, text, (x0 + pad, top + pad + th), font, scale, (0, 0, 0), text_thick, 16
            )
        ok, buf = cv2.imencode(".jpg", pic, [cv2.IMWRITE_JPEG_QUALITY, ANNOTATED_QUALITY])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        return buf.tobytes()


_default: Analyzer | None = None
_default_lock = threading.Lock()


def analyze_image(
    image: np.ndarray | bytes | str | Path,
    *,
    crops: bool = False,
    annotated: bool = False,
    scan: str = "photo",
    analyzer: Analyzer | None = None,
) -> AnalysisResult:
    """Analyse one image with a default Analyzer (the packaged models, loaded once)."""
    global _default
    if analyzer is None:
        with _default_lock:
            if _default is None:
                _default = Analyzer()
            analyzer = _default
    return analyzer.analyze(image, crops=crops, annotated=annotated, scan=scan)
