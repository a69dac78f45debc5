"""Accuracy as the device sees faces: FER2013 faces found by the daemon's detector in a frame.

Each test face is upscaled and placed in a larger camera-like frame (640x480, a blurred-noise
background, several face sizes and random positions), found by the daemon's default detector,
cropped by a crop rule (scale and vertical shift of the detector box, as in
`emotion_edge.preprocess.crop_face`) and classified by the device's own `EmotionClassifier`.
The same faces classified from the dataset's own 48x48 crops give the reference: the gap
between the two is what the detector and crop rule cost.

Crop rules are compared on PublicTest (selection); PrivateTest is reported for the rule
chosen there and for the shipped rule, never used to choose.

    python -m benchmarks.device_faces --data ../shared/data    # -> results/device_faces.json
    python -m benchmarks.run --only device_faces --data ../shared/data   # same, + RESULTS.md
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from emotion_edge.classify.classifier import DEFAULT_MODEL, EmotionClassifier
from emotion_edge.config import DetectorConfig
from emotion_edge.detect.detector import make_detector
from emotion_edge.preprocess import crop_face

from benchmarks.common import REPO, RESULTS_DIR, log, write_json

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
    ref_acc = float(ref_all.mean()) if len(ref_all) else None
    out["detection_rate"] = round(float(found_all.mean()), 4)
    out["reference_accuracy_detected"] = None if ref_acc is None else round(ref_acc, 4)
    out["reference_accuracy_all"] = round(float(np.mean(reference == labels)), 4)
    out["rules"] = {}
    for r in rules:
        ok = np.concatenate(pooled["rule_correct"][str(r)])
        acc = float(ok.mean()) if len(ok) else None
        out["rules"][str(r)] = {
            **asdict(r),
            "accuracy_detected": None if acc is None else round(acc, 4),
            "gap_points": None if acc is None else round(100 * (ref_acc - acc), 2),
            # every placed face counts: a face the detector missed is a wrong answer
            "end_to_end_accuracy": round(float(ok.sum()) / len(found_all), 4),
        }
    return out


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def _model_name(model: Path) -> str:
    model = Path(model).resolve()
    return str(model.relative_to(REPO)) if model.is_relative_to(REPO) else str(model)


def run(
    data: Path,
    model: Path = DEFAULT_MODEL,
    sizes: tuple[int, ...] = DEFAULT_SIZES,
    scales: tuple[float, ...] = DEFAULT_SCALES,
    shifts: tuple[float, ...] = DEFAULT_SHIFTS,
    limit: int = 0,
    seed: int = 0,
) -> dict:
    """The whole benchmark: every crop rule of the grid (+ the shipped one) on PublicTest, the
    rule with the best device accuracy there and the shipped rule on PrivateTest.

    `limit` keeps the first N faces of each split (0 = all); the result is JSON-ready."""
    from emotion_edge_train.data import load_fer  # TensorFlow-free reader of FER2013

    t0 = time.perf_counter()
    ds = load_fer(data)
    clf = EmotionClassifier(model, num_threads=1)
    detector = make_detector(DetectorConfig())
    sizes = tuple(int(v) for v in sizes)
    rules = [CropRule(float(s), float(d)) for s in scales for d in shifts]
    shipped = CropRule(clf.meta.face_crop_scale, clf.meta.face_crop_shift_y)
    if shipped not in rules:
        rules.append(shipped)

    def faces(split: str):
        idx = ds.split(split)
        if limit:
            idx = idx[:limit]
        return ds.images[idx], ds.labels[idx]

    log(f"device_faces: PublicTest, {len(rules)} crop rules, face sizes {sizes}")
    public = run_split(*faces("PublicTest"), detector, clf, sizes, rules, seed)
    chosen = max(rules, key=lambda r: public["rules"][str(r)]["accuracy_detected"] or 0.0)
    report_rules = [chosen] if chosen == shipped else [chosen, shipped]
    log(f"device_faces: PrivateTest, chosen on PublicTest: {chosen}; shipped: {shipped}")
    private = run_split(*faces("PrivateTest"), detector, clf, sizes, report_rules, seed + 1)
    return {
        "benchmark": "device_faces",
        "model": _model_name(model),
        "model_version": clf.version,
        "detector": detector.name,
        "frame": [FRAME_W, FRAME_H],
        "sizes": list(sizes),
        "grid": {"scales": [float(v) for v in scales], "shifts": [float(v) for v in shifts]},
        "limit": limit,
        "seed": seed,
        "shipped_rule": asdict(shipped),
        "chosen_rule": asdict(chosen),
        "PublicTest": public,
        "PrivateTest": private,
        "seconds": round(time.perf_counter() - t0, 1),
    }


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
    result = run(
        Path(args.data),
        args.model,
        sizes=tuple(int(v) for v in args.sizes.split(",")),
        scales=_floats(args.scales),
        shifts=_floats(args.shifts),
        limit=args.limit,
        seed=args.seed,
    )
    write_json(result, args.out)
    from benchmarks.report import device_faces as report_section

    print("\n".join(report_section(result)))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
