"""Score a face detector against hand-labelled boxes (dlib's imglab XML format).

Used by tests/test_detector.py and the benchmarks: recall (labelled faces found), precision
(detections that are faces) and time per image. A detection matching a box marked ignore='1'
counts neither way. Matching is greedy by score at IoU >= `iou_thr` (0.3 by default: labelled
boxes and BlazeFace boxes frame a face differently, both are right).

    python -m emotion_edge.tools.detector_eval \
        ../shared/samples/dlib_faces/testing.xml --kind blazeface
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from emotion_edge.config.tables import DETECTOR_KINDS
from emotion_edge.detect.detector import (
    Detection,
    DetectorConfig,
    FaceDetector,
    detect_photo,
    make_detector,
)
from emotion_edge.geometry import iou

Box = tuple[float, float, float, float]  # x, y, w, h


@dataclass
class LabelledImage:
    path: Path
    boxes: list[Box]  # faces to find
    ignored: list[Box] = field(default_factory=list)  # faces that count neither way


@dataclass
class ImageScore:
    file: str
    labelled: int
    found: int  # true positives
    false_pos: int
    detections: int
    ms: float


@dataclass
class EvalResult:
    detector: str
    images: int
    labelled: int
    true_pos: int
    false_pos: int
    false_neg: int
    recall: float
    precision: float
    ms_median: float
    per_image: list[ImageScore]

    def summary(self) -> str:
        return (
            f"{self.detector}: recall {self.recall:.3f} ({self.true_pos}/{self.labelled}), "
            f"precision {self.precision:.3f} ({self.false_pos} false positives), "
            f"{self.images} images, median {self.ms_median:.1f} ms/image"
        )


def load_dlib_xml(xml_path: str | Path) -> list[LabelledImage]:
    """Images and boxes of an imglab XML file; image paths resolved beside the XML."""
    xml_path = Path(xml_path)
    root = ET.parse(xml_path).getroot()
    out = []
    for img in root.iter("image"):
        boxes, ignored = [], []
        for b in img.iter("box"):
            box = (
                float(b.get("left")),
                float(b.get("top")),
                float(b.get("width")),
                float(b.get("height")),
            )
            (ignored if b.get("ignore", "0") == "1" else boxes).append(box)
        out.append(LabelledImage(xml_path.parent / img.get("file"), boxes, ignored))
    return out


def match(
    dets: list[Detection], boxes: list[Box], ignored: list[Box] = (), iou_thr: float = 0.3
) -> tuple[int, int]:
    """(true positives, false positives) of one image, greedy by detection score."""
    free = list(boxes)
    tp = fp = 0
    for d in sorted(dets, key=lambda d: -d.score):
        best, best_iou = None, iou_thr
        for i, b in enumerate(free):
            v = iou(d.box, b)
            if v >= best_iou:
                best, best_iou = i, v
        if best is not None:
            free.pop(best)
            tp += 1
        elif not any(iou(d.box, b) >= iou_thr for b in ignored):
            fp += 1
    return tp, fp


def read_gray(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return img


def evaluate(
    detector: FaceDetector, images: list[LabelledImage], iou_thr: float = 0.3
) -> EvalResult:
    per, times = [], []
    for li in images:
        gray = read_gray(li.path)
        t0 = time.perf_counter()
        dets = detect_photo(detector, gray)
        ms = (time.perf_counter() - t0) * 1e3
        times.append(ms)
        tp, fp = match(dets, li.boxes, li.ignored, iou_thr)
        per.append(ImageScore(li.path.name, len(li.boxes), tp, fp, len(dets), round(ms, 2)))
    labelled = sum(p.labelled for p in per)
    tp = sum(p.found for p in per)
    fp = sum(p.false_pos for p in per)
    return EvalResult(
        detector=detector.name,
        images=len(per),
        labelled=labelled,
        true_pos=tp,
        false_pos=fp,
        false_neg=labelled - tp,
        recall=tp / labelled if labelled else 0.0,
        precision=tp / (tp + fp) if tp + fp else 1.0,
        ms_median=statistics.median(times) if times else 0.0,
        per_image=per,
    )


def count_faces(detector: FaceDetector, path: str | Path) -> int:
    """Detections in one image (e.g. a photo with no human face, where 0 is right)."""
    return len(detect_photo(detector, read_gray(Path(path))))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m emotion_edge.tools.detector_eval",
        description="Recall/precision of a face detector on dlib imglab XML boxes.",
    )
    p.add_argument("xml", nargs="+", help="imglab XML file(s), e.g. dlib_faces/testing.xml")
    p.add_argument("--kind", default=DetectorConfig.kind, help=" | ".join(DETECTOR_KINDS))
    p.add_argument("--min-score", type=float, default=DetectorConfig.min_score)
    p.add_argument("--min-face-px", type=int, default=DetectorConfig.min_face_px)
    p.add_argument("--iou", type=float, default=0.3, help="IoU for a match (default 0.3)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = p.parse_args(argv)
    cfg = DetectorConfig(kind=args.kind, min_score=args.min_score, min_face_px=args.min_face_px)
    images = [li for x in args.xml for li in load_dlib_xml(x)]
    res = evaluate(make_detector(cfg), images, args.iou)
    print(json.dumps(asdict(res), indent=1) if args.json else res.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
