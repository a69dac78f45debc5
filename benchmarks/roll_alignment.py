"""Does turning a tilted face upright before classifying it help? (preprocess.crop_face_aligned)

FER2013 PublicTest faces are rotated by a known roll (uniform in +-R degrees), pasted into a
640x480 frame at 200 px, found by the daemon's short-range BlazeFace, and classified by the
shipped model from a straight crop (crop_face) and from a crop turned by the roll the eye
keypoints give (crop_face_aligned, which leaves faces under MIN_ALIGN_DEG straight). Prints the
accuracy of both against FER2013's labels for each R, and how far the keypoint roll is off.

    python -m benchmarks.roll_alignment --data ../shared/data --faces 600
"""

from __future__ import annotations

import argparse
import csv
import gzip
from pathlib import Path

import numpy as np


def load_faces(data: Path, n: int) -> tuple[list[np.ndarray], list[int]]:
    faces, labels = [], []
    with gzip.open(data / "fer2013.csv.gz", "rt") as fh:
        rows = csv.reader(fh)
        next(rows)
        for label, pixels, usage in rows:
            if usage != "PublicTest":
                continue
            faces.append(np.array(pixels.split(), np.uint8).reshape(48, 48))
            labels.append(int(label))
            if len(faces) >= n:
                break
    return faces, labels


def main(argv: list[str] | None = None) -> int:
    import cv2
    import emotion_edge.preprocess as pre
    from emotion_edge.classify.classifier import EmotionClassifier, resolve_model_path
    from emotion_edge.config import DetectorConfig
    from emotion_edge.detect.detector import make_detector
    from emotion_edge.preprocess import crop_face, crop_face_aligned, eye_roll_deg

    p = argparse.ArgumentParser(prog="python -m benchmarks.roll_alignment", description=__doc__)
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--faces", type=int, default=600, help="PublicTest faces (first N)")
    p.add_argument("--rolls", default="0,15,30,45", help="max roll R of each run, degrees")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--min-align-deg", type=float, default=None, help="override preprocess.MIN_ALIGN_DEG"
    )
    args = p.parse_args(argv)
    if args.min_align_deg is not None:
        import emotion_edge.preprocess as pre

        pre.MIN_ALIGN_DEG = args.min_align_deg

    faces, labels = load_faces(args.data, args.faces)
    det = make_detector(DetectorConfig(kind="blazeface"))
    clf = EmotionClassifier(resolve_model_path(None))
    rng = np.random.default_rng(args.seed)
    print(f"aligned crops turn faces rolled >= {pre.MIN_ALIGN_DEG:g} degrees (keypoint estimate)")
    print(
        "| roll +- deg | faces found | straight crop | aligned crop | keypoint roll error "
        "| eye line >= MIN_ALIGN_DEG |"
    )
    print("|---|---|---|---|---|---|")
    for max_roll in (float(r) for r in args.rolls.split(",")):
        straight, aligned, errors, leaning = [], [], [], []
        for face, label in zip(faces, labels, strict=True):
            roll = float(rng.uniform(-max_roll, max_roll)) if max_roll else 0.0
            big = cv2.copyMakeBorder(
                cv2.resize(face, (200, 200), interpolation=cv2.INTER_CUBIC),
                60, 60, 60, 60, cv2.BORDER_REPLICATE,
            )  # fmt: skip
            m = cv2.getRotationMatrix2D((big.shape[1] / 2, big.shape[0] / 2), roll, 1.0)
            big = cv2.warpAffine(big, m, big.shape[::-1], borderMode=cv2.BORDER_REPLICATE)
            frame = np.full((480, 640), 110, np.uint8)
            frame[100 : 100 + big.shape[0], 200 : 200 + big.shape[1]] = big
            found = det.detect(frame)
            if not found:
                continue
            d = max(found, key=lambda x: x.score)
            est = eye_roll_deg(d.keypoints)
            (rx, ry), (lx, ly) = d.keypoints[0], d.keypoints[1]
            leaning.append(abs(np.degrees(np.arctan2(ly - ry, lx - rx))) >= pre.MIN_ALIGN_DEG)
            errors.append(abs(est + roll))  # OpenCV's positive angle turns counter-clockwise
            probs = clf.predict_faces(
                np.stack([crop_face(frame, d.box), crop_face_aligned(frame, d.box, est)])
            )
            straight.append(int(np.argmax(probs[0])) == label)
            aligned.append(int(np.argmax(probs[1])) == label)
        print(
            f"| {max_roll:g} | {len(straight)}/{len(faces)} | {np.mean(straight):.4f} "
            f"| {np.mean(aligned):.4f} | {np.median(errors):.1f} deg median "
            f"| {sum(leaning)}/{len(leaning)} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
