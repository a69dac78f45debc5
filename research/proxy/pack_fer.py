"""Pack the committed recipe's exact Training/PublicTest/PrivateTest arrays for a GPU machine.

The images go as lossless WebP mosaics of 1,000 faces (about 56 MB, which fits the 64 MiB a
device call carries); the targets as an .npz with both the FER2013 one-hot and the FER+ vote
distribution of every Training row, so the proxy can mix them at any --fer2013-weight.

    .venv/bin/python research/proxy/pack_fer.py --data ../shared/data --out .gpu
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from emotion_edge.preprocess import resolve_labels
from emotion_edge_train.config import TrainConfig
from emotion_edge_train.data import fold_keys, load_fer, make_targets
from emotion_edge_train.teachers import dataset_fingerprint
from emotion_edge_train.train import prepare_rows

MOSAIC_ROWS, MOSAIC_COLS = 20, 50  # 1,000 faces per image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", help="folder with fer2013.csv(.gz)")
    parser.add_argument("--out", default=".gpu", help="output folder (keep it git-ignored)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    ds = load_fer(args.data)
    labels = resolve_labels([])
    one_hot = TrainConfig(fer2013_weight=1.0)
    train_rows, y_fer, val_rows, y_val, _ = prepare_rows(ds, one_hot, labels)
    rows_plus, y_plus = make_targets(ds, train_rows, labels, "mixed", 0.0)
    assert (rows_plus == train_rows).all()
    test_rows, y_test = make_targets(ds, ds.split("PrivateTest"), labels, "fer2013")

    packed = np.concatenate([train_rows, val_rows, test_rows])
    images = ds.images[packed].reshape(-1, 48, 48)
    per = MOSAIC_ROWS * MOSAIC_COLS
    chunks = []
    for start in range(0, len(images), per):
        block = np.zeros((per, 48, 48), np.uint8)
        part = images[start : start + per]
        block[: len(part)] = part
        mosaic = (
            block.reshape(MOSAIC_ROWS, MOSAIC_COLS, 48, 48)
            .transpose(0, 2, 1, 3)
            .reshape(MOSAIC_ROWS * 48, MOSAIC_COLS * 48)
        )
        ok, buf = cv2.imencode(".webp", mosaic, [cv2.IMWRITE_WEBP_QUALITY, 101])  # 101: lossless
        if not ok or not (cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE) == mosaic).all():
            raise RuntimeError("lossless WebP round trip failed")
        chunks.append(buf.reshape(-1))
    np.savez(
        out / "meta.npz",
        y_fer=y_fer,
        y_plus=y_plus,
        y_val=y_val.argmax(1),
        y_test=y_test.argmax(1),
        n=np.array([len(train_rows), len(val_rows), len(test_rows)]),
        # dataset row numbers of the packed faces, so that the proxy's predictions can go back
        # to the dataset (soft_labels.py), and their fold keys, so that folds follow
        # `fit --holdout-fold` (key % K; identical images share a key)
        rows=packed,
        fold_keys=fold_keys(ds.images)[packed],
        fingerprint=np.array(dataset_fingerprint(ds)),
        lens=np.array([len(c) for c in chunks]),
    )
    np.concatenate(chunks).tofile(out / "images.webps")
    print(f"{len(train_rows)} / {len(val_rows)} / {len(test_rows)} faces -> {out}")


if __name__ == "__main__":
    main()
