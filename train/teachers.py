"""Teacher soft labels: what an ensemble of trained models predicts for every FER2013 image.

A later training stage (a distilled student) mixes these into its targets. They are computed
once, from the teachers' float weights, flip-averaged (each teacher sees the image and its
mirror), and written as a small compressed file that is committed, so a stage on a fresh
machine continues from the repository alone, without the teachers' training runs:

    emotion-edge-train soft-labels train/artifacts/teachers/teacher_t1.h5 \
        train/artifacts/teachers/teacher_s2.h5 \
        --data ../shared/data --out train/artifacts/teachers/soft_labels.npz

`emotion-edge-train fit --teacher-models A.h5 B.h5` distils online instead: the teachers
predict on every augmented training batch, so their targets describe the very view (shift,
flip, device crop) the student sees ("consistent teaching"), at the cost of the teachers'
forward passes each epoch.

With `--folds`, teacher i must have been trained with `fit --holdout-fold i/K`: each
Training row r then gets only the prediction of the teacher of its fold (data.fold_keys(r) % K;
identical images share a fold), which never saw that face, so its soft
label is what a model thinks of an unseen face (as noisy as a test prediction, and unlike an
in-sample prediction it does not echo the face's own, possibly wrong, label); the test splits
get the mean of all K.

The file holds one row per dataset row (all three splits, so the ensemble can be scored on
PublicTest), the label order, each teacher's sha256 and a fingerprint of the images, which
`load_soft_labels` checks against the data it is used with.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
from emotion_edge.preprocess import to_float_input
from emotion_edge_train.data import FOLD_RULE, FerDataset, fold_keys

log = logging.getLogger(__name__)

FORMAT = "emotion-edge-soft-labels/1"


class SoftLabelError(ValueError):
    """A soft-label file that does not fit the data or labels it is used with."""


def dataset_fingerprint(ds: FerDataset) -> str:
    """Content hash of the images and labels, the same on every machine with the same data."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ds.images).tobytes())
    h.update(np.ascontiguousarray(ds.labels).astype(np.int64).tobytes())
    return h.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ensemble_probs(predict_fns, images: np.ndarray, batch: int = 1024) -> np.ndarray:
    """Mean of each teacher's probabilities on the images and on their mirror images."""
    total = np.zeros((len(images), 0), np.float64)
    for n, predict in enumerate(predict_fns):
        probs = []
        for i in range(0, len(images), batch):
            x = to_float_input(images[i : i + batch])
            probs.append((predict(x) + predict(x[:, :, ::-1, :])) / 2.0)
        p = np.concatenate(probs).astype(np.float64)
        total = p if n == 0 else total + p
    return (total / max(1, len(predict_fns))).astype(np.float32)


def load_teachers(paths, labels: tuple[str, ...]) -> list:
    """The teachers' float Keras models, each checked to predict `labels`."""
    from emotion_edge_train.tf_env import keras

    models = []
    for path in paths:
        model = keras.models.load_model(path, compile=False)
        n_out = int(model.output.shape[-1])
        if n_out != len(labels):
            raise SoftLabelError(f"{path}: {n_out} outputs, expected {len(labels)} {labels}")
        log.info(
            "teacher %s: %d parameters, sha256 %s",
            path,
            model.count_params(),
            file_sha256(Path(path))[:12],
        )
        models.append(model)
    return models


def check_fold_teachers(teacher_paths: list[Path]) -> None:
    """Teacher i of K must have left out fold i/K, where its metrics file says so (a run's
    `metrics.json` beside `best.h5`, or `NAME_metrics.json` beside a committed `NAME.h5`)."""
    k = len(teacher_paths)
    for i, path in enumerate(teacher_paths):
        path = Path(path)
        named, plain = path.with_name(f"{path.stem}_metrics.json"), path.with_name("metrics.json")
        metrics = named if named.is_file() else plain
        if not metrics.is_file():
            log.warning("%s: no metrics file beside it; not checked against fold %d/%d", path, i, k)
            continue
        record = json.loads(metrics.read_text())
        fold = record.get("config", {}).get("holdout_fold", "")
        if fold != f"{i}/{k}":
            raise SoftLabelError(
                f"{path}: trained with holdout fold {fold or 'none'!r}, "
                f"expected {i}/{k} (list the teachers in fold order)"
            )
        if record.get("holdout_rule") != FOLD_RULE:
            raise SoftLabelError(
                f"{path}: its fold {fold} was cut by plain row numbers (before identical "
                "images shared a fold), so it saw some faces it would label; retrain it"
            )


def out_of_fold_mean(
    probs: np.ndarray, folds: list[tuple[int, int]], keys: np.ndarray, training: np.ndarray
) -> np.ndarray:
    """probs [M, n, C]: M models on n faces with fold keys `keys` (data.fold_keys of their
    dataset rows); model m left out the Training faces with key % K == i for its
    folds[m] = (i, K). A Training face (where `training`) gets the mean of the models that left
    it out; every other face the mean of all."""
    out = probs.mean(0)
    total = np.zeros(out.shape, np.float64)
    count = np.zeros(len(keys))
    for p, (i, k) in zip(probs, folds, strict=True):
        left_out = training & (keys % k == i)
        total[left_out] += p[left_out]
        count[left_out] += 1
    uncovered = training & (count == 0)
    if uncovered.any():
        raise SoftLabelError(f"{int(uncovered.sum())} Training faces are in no left-out fold")
    out[training] = total[training] / count[training, None]
    return out.astype(np.float32)


def compute_soft_labels(
    teacher_paths: list[Path],
    ds: FerDataset,
    labels: tuple[str, ...],
    out: Path,
    folds: bool = False,
) -> dict:
    """Predict with every teacher, write the file, return a summary with per-split accuracy."""
    if folds:
        if len(teacher_paths) < 2:
            raise SoftLabelError("--folds needs K >= 2 teachers, one per left-out fold")
        check_fold_teachers(teacher_paths)
    fns = [
        lambda x, m=model: m.predict(x, batch_size=512, verbose=0)
        for model in load_teachers(teacher_paths, labels)
    ]
    if folds:
        per_teacher = np.stack([ensemble_probs([fn], ds.images) for fn in fns])
        k = len(fns)
        training = np.zeros(len(ds), bool)
        training[ds.split("Training")] = True
        probs = out_of_fold_mean(
            per_teacher, [(i, k) for i in range(k)], fold_keys(ds.images), training
        )
    else:
        probs = ensemble_probs(fns, ds.images)
    teachers = [str(p) for p in teacher_paths]
    shas = [file_sha256(p) for p in teacher_paths]
    return write_soft_labels(out, probs, ds, labels, teachers, shas, folds)


def write_soft_labels(
    out: Path,
    probs: np.ndarray,
    ds: FerDataset,
    labels: tuple[str, ...],
    teachers: list[str],
    teacher_sha256: list[str],
    out_of_fold: bool,
) -> dict:
    """Write one soft-label file ([len(ds), n_labels] probs); a summary with split accuracy."""
    if probs.shape != (len(ds), len(labels)):
        raise SoftLabelError(f"probs {probs.shape}, expected {(len(ds), len(labels))}")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        format=np.array(FORMAT),
        probs=probs.astype(np.float16),
        labels=np.array(labels),
        teachers=np.array(teachers),
        teacher_sha256=np.array(teacher_sha256),
        fingerprint=np.array(dataset_fingerprint(ds)),
        out_of_fold=np.array(out_of_fold),
    )
    pred = probs.argmax(1)
    summary = {
        "file": str(out),
        "size_bytes": out.stat().st_size,
        "teachers": len(teachers),
        "out_of_fold": out_of_fold,
    }
    for split in ("Training", "PublicTest", "PrivateTest"):
        rows = ds.split(split)
        summary[f"accuracy_{split}"] = round(float(np.mean(pred[rows] == ds.labels[rows])), 4)
    return summary


def load_soft_labels(path: Path, ds: FerDataset, labels: tuple[str, ...]) -> np.ndarray:
    """float32 [n_rows, n_labels] for `ds`, checked against its fingerprint and label order."""
    path = Path(path)
    if not path.is_file():
        raise SoftLabelError(f"{path}: soft-label file not found")
    with np.load(path) as z:
        if str(z["format"]) != FORMAT:
            raise SoftLabelError(f"{path}: format {z['format']}, expected {FORMAT}")
        file_labels = tuple(str(v) for v in z["labels"])
        if file_labels != tuple(labels):
            raise SoftLabelError(f"{path}: labels {file_labels}, training uses {tuple(labels)}")
        if str(z["fingerprint"]) != dataset_fingerprint(ds):
            raise SoftLabelError(
                f"{path}: made from other data than {ds.source} (image fingerprint differs)"
            )
        probs = z["probs"].astype(np.float32)
    probs /= np.maximum(probs.sum(1, keepdims=True), 1e-6)
    return probs


def load_online_teacher(paths: list[str], labels: tuple[str, ...]):
    """One frozen float model giving the mean of the teachers' probabilities (flat graph)."""
    from emotion_edge_train.ensemble import build_ensemble

    models = load_teachers(paths, labels)
    teacher = models[0] if len(models) == 1 else build_ensemble(models, name="teachers")
    teacher.trainable = False
    return teacher
