"""Accuracy as the device sees faces: FER2013 faces found by the daemon's detector in a frame.

Each test face is upscaled and placed in a larger camera-like frame (640x480, a blurred-noise
background, several face sizes and random positions), found by the daemon's default detector,
cropped by a crop rule (scale and vertical shift of the detector box, as in
`emotion_edge.preprocess.crop_face`) and classified by the device's own `EmotionClassifier`.
The same faces classified from the dataset's own 48x48 crops give the reference: the gap
between the two is what the detector and crop rule cost.

Crop rules are compared on PublicTest (selection); PrivateTest is reported for the rule
chosen there and for the shipped rule, never used to choose.

    python -m benchmarks.device_faces --data ../shared/data
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from emotion_edge.classify.classifier import DEFAULT_MODEL, EmotionClassifier
from emotion_edge.config import DetectorConfig
from emotion_edge.detect.detector import make_detector
from emotion_edge.preprocess import crop_face

from benchmarks.common import RESULTS_DIR, log

FRAME_W, FRAME_H = 640, 480
DEFAULT_SIZES = (160, 240, 320)  # face side in pixels in the 640x480 frame
DEFAULT_SCALES = (1.0, 1.1, 1.2, 1.25, 1.3, 1.4)
DEFAULT_SHIFTS = (0.0, -0.05, -0.1, -0.15)


@dataclass(frozen=True)
class CropRule:
    scale: float
    shift_y: float

    def __str__(self) -> str:
        return f"scale {self.scale:g}, shift_y {self.shift_y:+g}"


def backgrounds(n: int = 8, seed: int = 0) -> list[np.ndarray]:
    """Camera-like backgrounds: smooth random shading at mid-grey levels."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        noise = rng.integers(0, 256, (FRAME_H, FRAME_W)).astype(np.uint8)
        smooth = cv2.GaussianBlur(noise, (0, 0), rng.uniform(6, 20))
        out.append(cv2.normalize(smooth, None, 40, 200, cv2.NORM_MINMAX))
    return out


def place(face: np.ndarray, side: int, bg: np.ndarray, rng) -> tuple[np.ndarray, tuple]:
    """The face upscaled to `side` pixels at a random position; (frame, (x, y, side))."""
    x = int(rng.integers(0, FRAME_W - side + 1))
    y = int(rng.integers(0, FRAME_H - side + 1))
    frame = bg.copy()
    frame[y : y + side, x : x + side] = cv2.resize(
        face, (side, side), interpolation=cv2.INTER_CUBIC
    )
    return frame, (x, y, side)


def find_face(detections, where: tuple) -> tuple | None:
    """The best-scoring detection whose centre lies inside the placed face, else None."""
    x, y, side = where
    best = None
    for d in detections:
        bx, by, bw, bh = d.box
        cx, cy = bx + bw / 2, by + bh / 2
        if x <= cx <= x + side and y <= cy <= y + side and (best is None or d.score > best.score):
            best = d
    return None if best is None else tuple(best.box)


def run_split(
    images: np.ndarray,
    labels: np.ndarray,
    detector,
    clf: EmotionClassifier,
    sizes: tuple[int, ...],
    rules: list[CropRule],
    seed: int,
) -> dict:
    """Per size: detection rate, device accuracy per crop rule, reference accuracy."""
    bgs = backgrounds(seed=seed)
    rng = np.random.default_rng(seed)
    reference = clf.predict_faces(images).argmax(1)
    out: dict = {"n_faces": int(len(images)), "sizes": {}}
    pooled = {"found": [], "ref_correct": [], "rule_correct": {str(r): [] for r in rules}}
    for side in sizes:
        t0 = time.perf_counter()
        found, crops = [], {str(r): [] for r in rules}
        for i, face in enumerate(images):
            frame, where = place(face, side, bgs[i % len(bgs)], rng)
            box = find_face(detector.detect(frame), where)
            found.append(box is not None)
            if box is not None:
                for r in rules:
                    crops[str(r)].append(crop_face(frame, box, r.scale, r.shift_y))
        found_a = np.array(found)
        det_s = time.perf_counter() - t0
        ref_ok = reference[found_a] == labels[found_a]
        entry = {
            "detection_rate": round(float(found_a.mean()), 4),
            "detected": int(found_a.sum()),
            "reference_accuracy_all": round(float(np.mean(reference == labels)), 4),
            "reference_accuracy_detected": round(float(ref_ok.mean()), 4) if len(ref_ok) else None,
            "rules": {},
            "seconds": round(det_s, 1),
        }
        pooled["found"].append(found_a)
        pooled["ref_correct"].append(ref_ok)
        for r in rules:
            batch = np.stack(crops[str(r)]) if crops[str(r)] else np.zeros((0, 48, 48), np.uint8)
            pred = clf.predict_faces(batch).argmax(1)
            ok = pred == labels[found_a]
            pooled["rule_correct"][str(r)].append(ok)
            entry["rules"][str(r)] = round(float(ok.mean()), 4) if len(ok) else None
        out["sizes"][str(side)] = entry
        log(f"  face {side} px: detected {entry['detection_rate']:.1%} ({det_s:.0f} s)")
    found_all = np.concatenate(pooled["found"])
    ref_all = np.concatenate(pooled["ref_correct"])
    out["detection_rate"] = round(float(found_all.mean()), 4)
    out["reference_accuracy_detected"] = round(float(ref_all.mean()), 4)
    out["reference_accuracy_all"] = round(float(np.mean(reference == labels)), 4)
    out["rules"] = {}
    for r in rules:
        ok = np.concatenate(pooled["rule_correct"][str(r)])
        acc = float(ok.mean())
        out["rules"][str(r)] = {
            **asdict(r),
            "accuracy_detected": round(acc, 4),
            "gap_points": round(100 * (float(ref_all.mean()) - acc), 2),
            "end_to_end_accuracy": round(float(ok.sum()) / len(found_all), 4),
        }
    return out


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.device_faces",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", required=True, help="folder with fer2013.csv[.gz] (+ FER+ votes)")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="int8 .tflite + sidecar")
    p.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="face sides, px")
    p.add_argument("--scales", default=",".join(map(str, DEFAULT_SCALES)))
    p.add_argument("--shifts", default=",".join(map(str, DEFAULT_SHIFTS)))
    p.add_argument("--limit", type=int, default=0, help="first N faces per split (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "device_faces.json")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from emotion_edge_train.data import load_fer  # TensorFlow-free reader of FER2013

    ds = load_fer(args.data)
    clf = EmotionClassifier(args.model, num_threads=1)
    detector = make_detector(DetectorConfig())
    sizes = tuple(int(v) for v in args.sizes.split(","))
    rules = [CropRule(s, d) for s in _floats(args.scales) for d in _floats(args.shifts)]
    shipped = CropRule(clf.meta.face_crop_scale, clf.meta.face_crop_shift_y)
    if shipped not in rules:
        rules.append(shipped)

    def faces(split: str):
        idx = ds.split(split)
        if args.limit:
            idx = idx[: args.limit]
        return ds.images[idx], ds.labels[idx]

    log(f"PublicTest: {len(rules)} crop rules, face sizes {sizes}")
    public = run_split(*faces("PublicTest"), detector, clf, sizes, rules, args.seed)
    chosen = max(rules, key=lambda r: public["rules"][str(r)]["accuracy_detected"])
    report_rules = [chosen] if chosen == shipped else [chosen, shipped]
    log(f"PrivateTest: chosen on PublicTest: {chosen}; shipped: {shipped}")
    private = run_split(*faces("PrivateTest"), detector, clf, sizes, report_rules, args.seed + 1)
    result = {
        "benchmark": "device_faces",
        "model": str(args.model),
        "model_version": clf.version,
        "detector": detector.name,
        "frame": [FRAME_W, FRAME_H],
        "sizes": list(sizes),
        "limit": args.limit,
        "shipped_rule": asdict(shipped),
        "chosen_rule": asdict(chosen),
        "PublicTest": public,
        "PrivateTest": private,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(report_table(result))
    return 0


def report_table(result: dict) -> str:
    """Markdown table of the PrivateTest figures (the report split)."""
    lines = [
        "| split | crop rule | detection rate | dataset-crop acc. | device acc. | gap (points) |",
        "|---|---|---|---|---|---|",
    ]
    for split in ("PublicTest", "PrivateTest"):
        r = result[split]
        names = list(r["rules"])
        if split == "PublicTest":
            chosen = str(CropRule(**result["chosen_rule"]))
            shipped = str(CropRule(**result["shipped_rule"]))
            names = [n for n in names if n in (chosen, shipped)]
        for name in names:
            v = r["rules"][name]
            lines.append(
                f"| {split} | {name} | {r['detection_rate']:.1%} | "
                f"{r['reference_accuracy_detected']:.2%} | {v['accuracy_detected']:.2%} | "
                f"{v['gap_points']:+.2f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
