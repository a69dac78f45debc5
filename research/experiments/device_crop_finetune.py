"""Experiment (not part of the recipe): does training on the daemon's own crops close the gap?

Fine-tunes a trained float model for a few epochs on the recipe's targets, each Training
image replaced by its daemon-framed re-crop (emotion_edge_train.device_crops: placed in a
camera-like frame, found by BlazeFace, cut by the shipped crop rule) with probability P, and
scores the model before and after on both framings of PublicTest (selection) and PrivateTest
(report): the dataset's crops and the daemon's re-crops (faces the detector found). Selection
of the epoch on PublicTest dataset crops, as in the recipe. Results in OUT/result.json.

    .venv/bin/python research/experiments/device_crop_finetune.py --data ../shared/data \
        --out runs/device_crop_ft
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from emotion_edge.preprocess import FACE_CROP_SCALE, FACE_CROP_SHIFT_Y, resolve_labels
from emotion_edge_train.batchnorm import recalibrate_if_better
from emotion_edge_train.config import TrainConfig
from emotion_edge_train.data import load_fer
from emotion_edge_train.device_crops import cached_device_framed
from emotion_edge_train.evaluate import predict_batched
from emotion_edge_train.teachers import dataset_fingerprint
from emotion_edge_train.tf_env import keras
from emotion_edge_train.train import compile_model, make_dataset, prepare_rows

log = logging.getLogger("device_crop_finetune")


def scores(model, ds, crops, found) -> dict:
    """Accuracy on dataset crops (all faces, and the detected ones) and on the re-crops."""
    from emotion_edge.preprocess import to_float_input

    def predict(x):
        return model.predict(to_float_input(x), batch_size=512, verbose=0)

    out = {}
    for split in ("PublicTest", "PrivateTest"):
        rows = ds.split(split)
        y = ds.labels[rows]
        pd = predict_batched(predict, ds.images[rows]).argmax(1)
        pc = predict_batched(predict, crops[rows]).argmax(1)
        f = found[rows]
        out[split] = {
            "dataset_all": round(float(np.mean(pd == y)), 4),
            "dataset_detected": round(float(np.mean(pd[f] == y[f])), 4),
            "device_detected": round(float(np.mean(pc[f] == y[f])), 4),
        }
        out[split]["gap_points"] = round(
            100 * (out[split]["dataset_detected"] - out[split]["device_detected"]), 2
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--init",
        default="train/artifacts/teachers/teacher_t1.h5",
        help="float model (default: model v1, which the documented runs used)",
    )
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--out", default="runs/device_crop_ft")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--lr", type=float, default=3e-4, help="Adam, cosine decay to 0")
    p.add_argument("--prob", type=float, default=0.5, help="chance of the daemon's re-crop")
    p.add_argument("--seed", type=int, default=4321)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    keras.utils.set_random_seed(args.seed)

    cfg = TrainConfig(data=args.data, device_crop_prob=args.prob)
    labels = resolve_labels(cfg.labels)
    ds = load_fer(cfg.data)
    crops, found = cached_device_framed(
        ds.images, dataset_fingerprint(ds), FACE_CROP_SCALE, FACE_CROP_SHIFT_Y
    )
    rows, y, val_rows, y_val, _ = prepare_rows(ds, cfg, labels)
    ones = np.ones(len(rows), np.float32)
    train_ds = make_dataset(ds.images[rows], y, ones, cfg, True, crops[rows])
    clean_ds = make_dataset(ds.images[rows], y, ones, cfg, training=False)
    val_ds = make_dataset(ds.images[val_rows], y_val, np.ones(len(y_val), np.float32), cfg, False)

    model = keras.models.load_model(args.init, compile=False)
    before = scores(model, ds, crops, found)
    log.info("before: %s", before)
    steps = int(train_ds.cardinality())
    compile_model(model, keras.optimizers.schedules.CosineDecay(args.lr, args.epochs * steps))
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=args.epochs,
        verbose=2,
        callbacks=[
            keras.callbacks.ModelCheckpoint(
                str(out / "best.h5"), monitor="val_accuracy", mode="max", save_best_only=True
            ),
            keras.callbacks.CSVLogger(str(out / "history.csv")),
        ],
    )
    best = keras.models.load_model(out / "best.h5", compile=False)
    bn = recalibrate_if_better(best, clean_ds, val_ds)
    best.save(out / "best.h5", save_format="h5", include_optimizer=False)
    after = scores(best, ds, crops, found)
    result = {
        "before": before,
        "after": after,
        **vars(args),
        "best_epoch": int(np.argmax(history.history["val_accuracy"]) + 1),
        "bn_recalibration": bn,
        "seconds": round(time.time() - started, 1),
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    log.info("result: %s", json.dumps(result))


if __name__ == "__main__":
    main()
