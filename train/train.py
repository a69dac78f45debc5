"""Train the emotion CNN on FER2013 with FER+ votes, top-down in one sitting.

    data -> duplicates removed -> targets -> tf.data with augmentation -> CNN ->
    cosine LR, class weights, early stopping, best checkpoint on PublicTest ->
    evaluation (PublicTest, PrivateTest, FER+ test) -> metrics JSON + PNGs.

A run directory holds everything: `last.h5` + `state.json` (resume), `best.h5` (float model),
`history.csv`, `metrics.json`, `confusion_*.png`, `curves.png`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from emotion_edge.preprocess import (
    FACE_CROP_SCALE,
    FACE_CROP_SHIFT_Y,
    INPUT_SCALE,
    INPUT_SIZE,
    resolve_labels,
    to_float_input,
)
from emotion_edge_train.augment import AugmentConfig, augment_batch
from emotion_edge_train.batchnorm import accuracy, recalibrate_if_better
from emotion_edge_train.config import DATA_REQUIRED, OPTIMIZERS, TrainConfig, parse_fold
from emotion_edge_train.data import (
    FOLD_RULE,
    DataError,
    FerDataset,
    find_duplicates,
    fold_keys,
    load_fer,
    make_targets,
)
from emotion_edge_train.evaluate import (
    SPLITS,
    evaluate,
    save_confusion_png,
    save_curves_png,
    summary_line,
    write_json,
)
from emotion_edge_train.model import build_model
from emotion_edge_train.swa import EpochCosineLR, WeightAverager, averaged_model
from emotion_edge_train.teachers import (
    dataset_fingerprint,
    load_online_teacher,
    load_soft_labels,
)
from emotion_edge_train.tf_env import keras, tf

log = logging.getLogger(__name__)


def set_seed(seed: int | None) -> None:
    if seed is None:
        return
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def prepare_rows(ds: FerDataset, cfg: TrainConfig, labels: tuple[str, ...]):
    """Training rows (test duplicates dropped unless asked) and their targets."""
    report, train_in_test = find_duplicates(ds)
    log.info("FER2013 defects: %s", report)
    train_rows = ds.split("Training")
    if not cfg.keep_test_duplicates:
        train_rows = train_rows[~train_in_test[train_rows]]
        log.info(
            "dropped %d Training rows that also occur in PublicTest/PrivateTest",
            report.train_in_test,
        )
    train_rows, y_train = make_targets(ds, train_rows, labels, cfg.label_mode, cfg.fer2013_weight)
    if cfg.teacher_labels:
        soft = load_soft_labels(Path(cfg.teacher_labels), ds, labels)[train_rows]
        y_train = (1.0 - cfg.teacher_weight) * y_train + cfg.teacher_weight * soft
        log.info(
            "targets: %.2f x teachers' soft labels from %s", cfg.teacher_weight, cfg.teacher_labels
        )
    if cfg.holdout_fold:
        fold, folds = parse_fold(cfg.holdout_fold)
        keep = fold_keys(ds.images)[train_rows] % folds != fold
        log.info(
            "holdout fold %s: training on %d rows, leaving out %d",
            cfg.holdout_fold,
            int(keep.sum()),
            int((~keep).sum()),
        )
        train_rows, y_train = train_rows[keep], y_train[keep]
    if cfg.limit_train:
        rng = np.random.default_rng(cfg.seed or 0)
        pick = np.sort(rng.choice(len(train_rows), min(cfg.limit_train, len(train_rows)), False))
        train_rows, y_train = train_rows[pick], y_train[pick]
    val_rows, y_val = make_targets(ds, ds.split("PublicTest"), labels, "fer2013")
    if cfg.limit_eval:
        val_rows, y_val = val_rows[: cfg.limit_eval], y_val[: cfg.limit_eval]
    return train_rows, y_train, val_rows, y_val, report


def class_weights(y: np.ndarray, power: float) -> np.ndarray:
    counts = np.bincount(y.argmax(1), minlength=y.shape[1]).astype(np.float64)
    w = (counts.sum() / (len(counts) * np.maximum(counts, 1))) ** power
    return (w / np.average(w, weights=counts)).astype(np.float32)  # mean sample weight 1


def make_dataset(
    images, targets, weights, cfg: TrainConfig, training: bool, alt_images=None, teacher=None
):
    """Batches of (input, target, weight); with `alt_images` (the daemon's re-crops of the
    same faces) each training sample is its re-crop with probability cfg.device_crop_prob;
    with a `teacher` model, cfg.teacher_weight of each target is its prediction on the
    augmented batch."""
    x = images.reshape(-1, INPUT_SIZE, INPUT_SIZE, 1)
    use_alt = training and alt_images is not None and cfg.device_crop_prob > 0
    alt = alt_images.reshape(-1, INPUT_SIZE, INPUT_SIZE, 1) if use_alt else x[:1]
    ds = tf.data.Dataset.from_tensor_slices(((x, alt) if use_alt else x, targets, weights))
    if training:
        ds = ds.shuffle(len(x), seed=cfg.seed, reshuffle_each_iteration=True)
    ds = ds.batch(cfg.batch_size)
    aug = AugmentConfig().scaled(cfg.augment_strength)

    def to_input(xb, yb, wb):
        if use_alt:
            xa, xd = xb
            pick = tf.random.uniform([tf.shape(xa)[0], 1, 1, 1]) < cfg.device_crop_prob
            xb = tf.where(pick, xd, xa)
        xb = tf.cast(xb, tf.float32) * INPUT_SCALE
        if training and cfg.augment:
            xb = augment_batch(xb, aug)
        if training and teacher is not None:
            w = cfg.teacher_weight
            yb = (1.0 - w) * yb + w * tf.cast(teacher(xb, training=False), yb.dtype)
        return xb, yb, wb

    return ds.map(to_input, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


class EpochState(keras.callbacks.Callback):
    """Save last.h5 + state.json each epoch so an interrupted run resumes where it stopped."""

    def __init__(self, out: Path, best_metric: float):
        super().__init__()
        self.out, self.best = out, best_metric
        self.history: list[dict] = []
        self._t = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        logs["epoch"] = epoch + 1
        logs["seconds"] = round(time.time() - self._t, 1)
        self.history.append(logs)
        self.best = max(self.best, logs.get("val_accuracy", 0.0))
        self.model.save(self.out / "last.h5.tmp", save_format="h5")
        (self.out / "last.h5.tmp").replace(self.out / "last.h5")
        state = {"epoch": epoch + 1, "best_val_accuracy": self.best, "history": self.history}
        write_json(state, self.out / "state.json")


def train(cfg: TrainConfig) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.seed)
    labels = resolve_labels(cfg.labels)
    started = time.time()

    # Data
    if not cfg.data:
        raise DataError(DATA_REQUIRED)
    ds = load_fer(cfg.data)
    train_rows, y_train, val_rows, y_val, dup_report = prepare_rows(ds, cfg, labels)
    cw = class_weights(y_train, cfg.class_weight_power)
    w_train = cw[y_train.argmax(1)]
    log.info(
        "train %d rows, PublicTest %d rows, labels %s, class weights %s",
        len(train_rows),
        len(val_rows),
        labels,
        np.round(cw, 2).tolist(),
    )
    alt = None
    if cfg.device_crop_prob > 0:
        from emotion_edge_train.device_crops import cached_device_framed

        crops, found = cached_device_framed(
            ds.images, dataset_fingerprint(ds), FACE_CROP_SCALE, FACE_CROP_SHIFT_Y
        )
        alt = crops[train_rows]
        log.info(
            "device-framed crops for %.0f %% of Training images (detector found %.1f %%)",
            100 * cfg.device_crop_prob,
            100 * found[train_rows].mean(),
        )
    teacher = None
    if cfg.teacher_models:
        teacher = load_online_teacher(cfg.teacher_models, labels)
        log.info(
            "targets: %.2f x the online teachers' predictions on each augmented batch",
            cfg.teacher_weight,
        )
    train_ds = make_dataset(ds.images[train_rows], y_train, w_train, cfg, True, alt, teacher)
    val_ds = make_dataset(ds.images[val_rows], y_val, np.ones(len(y_val), np.float32), cfg, False)
    clean_train_ds = make_dataset(ds.images[train_rows], y_train, w_train, cfg, training=False)

    # Model (fresh, or resumed from last.h5)
    state_file, last = out / "state.json", out / "last.h5"
    initial_epoch, best, history = 0, 0.0, []
    if last.is_file() and state_file.is_file():
        state = json.loads(state_file.read_text())
        initial_epoch, best, history = state["epoch"], state["best_val_accuracy"], state["history"]
        # past the main schedule the optimizer is rebuilt for SWA (its schedule is not a builtin)
        model = keras.models.load_model(last, compile=initial_epoch < cfg.epochs)
        log.info("resumed from %s at epoch %d (best PublicTest %.4f)", last, initial_epoch, best)
    else:
        model = build_model(
            cfg.arch,
            len(labels),
            cfg.width,
            cfg.dropout,
            cfg.l2,
            cfg.head_units,
            cfg.stage_widths,
            cfg.stage_convs,
        )
        steps = max(1, -(-len(train_rows) // cfg.batch_size))
        warmup = min(cfg.warmup_epochs * steps, max(0, cfg.epochs * steps - 1))
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=cfg.lr / 10,
            decay_steps=cfg.epochs * steps - warmup,
            alpha=0.01,
            warmup_target=cfg.lr,
            warmup_steps=warmup,
        )
        compile_model(model, schedule, cfg.optimizer, cfg.momentum)
    log.info("model %s: %d parameters", model.name, model.count_params())

    epoch_state = EpochState(out, best)
    epoch_state.history = list(history)
    callbacks = [
        epoch_state,
        keras.callbacks.ModelCheckpoint(
            str(out / "best.h5"),
            monitor="val_accuracy",
            mode="max",
            save_best_only=True,
            initial_value_threshold=best or None,
        ),
        # Not in the first half: at the cosine schedule's high learning rates PublicTest
        # plateaus noisily (a run with --stage-widths 20,40,96,192 stopped there at epoch 37 of
        # 80 with 64.5 %), and most of the gain comes as the rate decays.
        keras.callbacks.EarlyStopping(
            monitor="val_accuracy",
            mode="max",
            patience=cfg.patience,
            start_from_epoch=max(5, cfg.epochs // 2),
        ),
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=initial_epoch > 0),
    ]
    verbose = 1 if sys.stdout.isatty() else 2
    if initial_epoch < cfg.epochs:
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=cfg.epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=verbose,
        )
        initial_epoch = epoch_state.history[-1]["epoch"] if epoch_state.history else cfg.epochs
    swa_report = None
    if cfg.swa_epochs > 0:
        swa_report = run_swa(
            model, train_ds, clean_train_ds, val_ds, cfg, out, callbacks, initial_epoch, verbose
        )
    train_seconds = time.time() - started

    # Evaluation of the selected (best PublicTest) model
    best_model = keras.models.load_model(out / "best.h5", compile=False)
    bn_report = None
    if cfg.bn_recalibrate:
        bn_report = recalibrate_if_better(best_model, clean_train_ds, val_ds)
        log.info("BatchNorm statistics re-measured on un-augmented Training images: %s", bn_report)
    # ModelCheckpoint keeps the optimizer slots (2x the weights); the float model that ships
    # and that QAT starts from needs only the weights.
    best_model.save(out / "best.h5", save_format="h5", include_optimizer=False)
    metrics = evaluate_model(best_model, ds, labels, out)
    metrics.update(
        {
            "config": asdict(cfg),
            "parameters": int(best_model.count_params()),
            "train_rows": int(len(train_rows)),
            "duplicates": asdict(dup_report),
            "holdout_rule": FOLD_RULE if cfg.holdout_fold else None,
            "epochs_run": len(epoch_state.history),
            "best_epoch": int(
                np.argmax([h.get("val_accuracy", 0) for h in epoch_state.history]) + 1
            )
            if epoch_state.history
            else None,
            "wall_seconds_this_invocation": round(train_seconds, 1),
            "train_seconds_total": round(
                sum(h.get("seconds", 0) for h in epoch_state.history)
                + (swa_report or {}).get("seconds", 0)
                + (bn_report or {}).get("seconds", 0),
                1,
            ),
            "swa": swa_report,
            "bn_recalibration": bn_report,
            "tensorflow": tf.__version__,
        }
    )
    write_json(metrics, out / "metrics.json")
    save_curves_png(epoch_state.history, out / "curves.png")
    log.info("done: %s", summary_line(metrics))
    return metrics


def make_optimizer(learning_rate, optimizer: str = "adam", momentum: float = 0.9):
    if optimizer == "adam":
        return keras.optimizers.Adam(learning_rate)
    if optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=True)
    raise ValueError(f"unknown optimizer {optimizer!r}; choose from {OPTIMIZERS}")


def compile_model(model, learning_rate, optimizer: str = "adam", momentum: float = 0.9) -> None:
    model.compile(
        optimizer=make_optimizer(learning_rate, optimizer, momentum),
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        weighted_metrics=[],
    )


def run_swa(
    model,
    train_ds,
    clean_train_ds,
    val_ds,
    cfg: TrainConfig,
    out: Path,
    callbacks,
    start_epoch,
    verbose,
):
    """The SWA epochs after the main schedule (see emotion_edge_train.swa); resumable.

    The averaged model replaces best.h5 when its PublicTest accuracy is at least the best
    single checkpoint's, so selection stays on PublicTest.
    """
    steps = int(train_ds.cardinality())
    compile_model(model, EpochCosineLR(cfg.swa_lr, steps), cfg.optimizer, cfg.momentum)
    averager = WeightAverager(out / "swa.npz")
    end = cfg.epochs + cfg.swa_epochs
    swa_callbacks = [c for c in callbacks if not isinstance(c, keras.callbacks.EarlyStopping)] + [
        averager
    ]
    for c in swa_callbacks:
        if isinstance(c, keras.callbacks.CSVLogger):
            c.append = True  # after the main phase's rows
    if start_epoch < end:
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=end,
            initial_epoch=max(start_epoch, cfg.epochs),
            callbacks=swa_callbacks,
            verbose=verbose,
        )
    averaging_started = time.time()
    swa = averaged_model(model, averager, clean_train_ds)
    swa_acc = accuracy(swa, val_ds)
    history = next(c for c in callbacks if isinstance(c, EpochState)).history
    best_single = max(h.get("val_accuracy", 0.0) for h in history)
    selected = swa_acc >= best_single
    log.info(
        "SWA of %d snapshots: PublicTest %.4f vs best single checkpoint %.4f -> %s",
        averager.count,
        swa_acc,
        best_single,
        "SWA model selected" if selected else "single checkpoint kept",
    )
    # kept either way, so `emotion-edge-train evaluate` can score it on every split
    swa.save(out / "swa.h5", save_format="h5", include_optimizer=False)
    if selected:
        swa.save(out / "best.h5", save_format="h5", include_optimizer=False)
    return {
        "snapshots": averager.count,
        "lr": cfg.swa_lr,
        "val_accuracy": round(swa_acc, 4),
        "best_single_val_accuracy": round(best_single, 4),
        "selected": selected,
        # BN recomputation and the SWA evaluation; the SWA epochs are in the history
        "seconds": round(time.time() - averaging_started, 1),
    }


def evaluate_model(model, ds: FerDataset, labels: tuple[str, ...], out: Path) -> dict:
    def predict(images: np.ndarray) -> np.ndarray:
        return model(to_float_input(images), training=False).numpy()

    metrics = evaluate(predict, ds, labels)
    for key in SPLITS:
        if key in metrics:
            save_confusion_png(metrics[key], labels, out / f"confusion_{key}.png", key)
    return metrics
