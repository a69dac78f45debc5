"""At what size does short-range BlazeFace find a face, in its own input pixels?

FER2013 PublicTest faces are pasted at known heights into a square background exactly the
net's input size (so a face's height in the frame is its height to the net) and the share
found is printed per height, for the short-range model at its native 128 px input and, the net
being fully convolutional, at a larger input. The detector kind `auto` (detect/multiscale.py)
takes its NET_MIN_FACE / NET_MAX_FACE band from this table.

    python -m benchmarks.blazeface_scale --data ../shared/data --faces 60
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

HEIGHTS = (12, 16, 20, 24, 28, 32, 40, 48, 64, 80, 96, 112, 128)


def paste(img: np.ndarray, face: np.ndarray, x: int, y: int, s: int) -> None:
    """A face upscaled to s x s, feathered by a soft ellipse into img at (x, y)."""
    import cv2

    f = cv2.resize(face, (s, s), interpolation=cv2.INTER_CUBIC if s > 48 else cv2.INTER_AREA)
    yy, xx = np.mgrid[0:s, 0:s]
    r = ((xx - s / 2) / (s / 2)) ** 2 + ((yy - s / 2) / (s / 2)) ** 2
    m = np.clip(2.5 * (1 - r), 0, 1)
    roi = img[y : y + s, x : x + s].astype(np.float32)
    img[y : y + s, x : x + s] = (m * f + (1 - m) * roi).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    import cv2
    from emotion_edge.config import DetectorConfig
    from emotion_edge.detect.multiscale import BlazeFaceViews, View
    from emotion_edge.models import MODELS_DIR

    from benchmarks.roll_alignment import load_faces

    p = argparse.ArgumentParser(prog="python -m benchmarks.blazeface_scale", description=__doc__)
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--faces", type=int, default=60, help="PublicTest faces per height")
    p.add_argument("--inputs", default="128,256", help="square input sizes to try")
    args = p.parse_args(argv)

    faces, _ = load_faces(args.data, args.faces)
    data = __import__("skimage.data", fromlist=["coffee"])
    bg = cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2GRAY)
    cfg = DetectorConfig(min_score=0.5, far_min_score=0.5, min_face_px=1)
    views = BlazeFaceViews(MODELS_DIR / "face_detection_short_range.tflite", cfg)
    sizes = [int(v) for v in args.inputs.split(",")]
    print("| face px in the input | " + " | ".join(f"found, {s} px input" for s in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for h in HEIGHTS:
        cells = []
        for side in sizes:
            if h > side:
                cells.append("-")
                continue
            found = 0
            for i, face in enumerate(faces):
                frame = cv2.resize(bg, (side, side))
                x = (side - h) // 2 + (i % 3 - 1) * (side - h) // 4
                y = (side - h) // 2
                paste(frame, face, x, y, h)
                dets = views.run(frame, View("near", 0, 0, side, side, 1.0))
                found += any(
                    abs(d.box[0] + d.box[2] / 2 - (x + h / 2)) < h / 2
                    and abs(d.box[1] + d.box[3] / 2 - (y + h / 2)) < h / 2
                    for d in dets
                )
            cells.append(f"{found / len(faces):.2f}")
        print(f"| {h} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
