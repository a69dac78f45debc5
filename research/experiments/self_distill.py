"""Experiment (not part of the recipe): fine-tune a trained float model on its own predictions.

The targets become alpha x the recipe's targets + (1 - alpha) x the model's flip-averaged
predictions on the clean Training images (flip test-time averaging scored +0.3 points
PrivateTest on the committed model, so the hope is to fold that gain into one pass), with
weaker augmentation and a small learning rate decaying to 0. Selection on PublicTest, then the
BatchNorm re-measurement, as in the recipe. Results in OUT/result.json; see docs/experiments.md.

    .venv/bin/python research/experiments/self_distill.py --out runs/self_distill
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from emotion_edge.preprocess import resolve_labels, to_float_input
from emotion_edge_train.batchnorm import accuracy, recalibrate_if_better
from emotion_edge_train.config import TrainConfig
from emotion_edge_train.data import load_fer
from emotion_edge_train.evaluate import SPLITS
from emotion_edge_train.tf_env import keras
from emotion_edge_train.train import compile_model, evaluate_model, make_dataset, prepare_rows

log = logging.getLogger("self_distill")


def flip_averaged(model, images: np.ndarray) -> np.ndarray:
    x = to_float_input(images)
    p = model.predict(x, batch_size=256, verbose=0)
    return 0.5 * (p + model.predict(x[:, :, ::-1], batch_size=256, verbose=0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--init",
        default="train/artifacts/teachers/teacher_t1.h5",
        help="float model (default: model v1, which the documented runs used)",
    )
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--out", default="runs/self_distill")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=3e-4, help="Adam, cosine decay to 0")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the recipe's targets")
    p.add_argument("--augment-strength", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=4321)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    keras.utils.set_random_seed(args.seed)

    cfg = TrainConfig(data=args.data, augment_strength=args.augment_strength)
    labels = resolve_labels(cfg.labels)
    ds = load_fer(cfg.data)
    rows, y_recipe, val_rows, y_val, _ = prepare_rows(ds, cfg, labels)
    teacher = flip_averaged(keras.models.load_model(args.init, compile=False), ds.images[rows])
    targets = (args.alpha * y_recipe + (1 - args.alpha) * teacher).astype(np.float32)
    ones = np.ones(len(rows), np.float32)
    train_ds = make_dataset(ds.images[rows], targets, ones, cfg, training=True)
    clean_ds = make_dataset(ds.images[rows], targets, ones, cfg, training=False)
    val_ds = make_dataset(ds.images[val_rows], y_val, np.ones(len(y_val), np.float32), cfg, False)

    model = keras.models.load_model(args.init, compile=False)
    steps = int(train_ds.cardinality())
    compile_model(model, keras.optimizers.schedules.CosineDecay(args.lr, args.epochs * steps))
    log.info("PublicTest before fine-tuning: %.4f", accuracy(model, val_ds))
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
    metrics = evaluate_model(best, ds, labels, out)
    result = {k: metrics[k]["accuracy"] for k in SPLITS if k in metrics}
    result.update(
        vars(args),
        best_epoch=int(np.argmax(history.history["val_accuracy"]) + 1),
        bn_recalibration=bn,
        seconds=round(time.time() - started, 1),
    )
    (out / "result.json").write_text(json.dumps(result, indent=1))
    log.info("result: %s", result)


if __name__ == "__main__":
    main()
