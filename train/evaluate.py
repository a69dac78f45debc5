"""Evaluate any emotion classifier (float Keras, int8 TFLite, ...) on FER2013 and FER+.

Works from a `predict(images_uint8[N,48,48]) -> probs[N,K]` function, so the same code scores
the float model here and the exported int8 file in emotion_edge_export.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from emotion_edge.preprocess import FER2013_LABELS
from emotion_edge_train.data import FerDataset, ferplus_majority

PredictFn = Callable[[np.ndarray], np.ndarray]
# the result keys of evaluate(); the ferplus_ ones only when the FER+ votes are loaded.
# FER+ keeps FER2013's splits: its "valid" split is the PublicTest rows (usable for choosing),
# its "test" split the PrivateTest rows (report only).
SPLIT_TITLES = {
    "fer2013_PublicTest": "PublicTest",
    "fer2013_PrivateTest": "PrivateTest",
    "ferplus_valid": "FER+ valid",
    "ferplus_test": "FER+ test",
}
SPLITS = tuple(SPLIT_TITLES)
FERPLUS_SPLITS = {"ferplus_valid": "PublicTest", "ferplus_test": "PrivateTest"}


def predict_batched(predict: PredictFn, images: np.ndarray, batch: int = 512) -> np.ndarray:
    return np.concatenate([predict(images[i : i + batch]) for i in range(0, len(images), batch)])


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, labels: tuple[str, ...]) -> dict:
    k = len(labels)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    per_class = {}
    for i, name in enumerate(labels):
        tp = cm[i, i]
        prec = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        rec = tp / cm[i, :].sum() if cm[i, :].sum() else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per_class[name] = {
            "precision": round(float(prec), 4),
            "recall": round(float(rec), 4),
            "f1": round(float(f1), 4),
            "support": int(cm[i, :].sum()),
        }
    return {
        "n": int(len(y_true)),
        "accuracy": round(float(np.mean(y_true == y_pred)), 4) if len(y_true) else 0.0,
        "macro_f1": round(float(np.mean([c["f1"] for c in per_class.values()])), 4),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }


def _hard_labels(ds: FerDataset, rows: np.ndarray, labels: tuple[str, ...], fer_labels: np.ndarray):
    """Map FER2013-index labels to model-label indices; rows outside the subset are dropped."""
    index = {FER2013_LABELS.index(n): i for i, n in enumerate(labels)}
    mapped = np.array([index.get(int(v), -1) for v in fer_labels])
    keep = mapped >= 0
    return rows[keep], mapped[keep]


def evaluate(
    predict: PredictFn, ds: FerDataset, labels: tuple[str, ...], probs_cache: dict | None = None
) -> dict:
    """Accuracy on PublicTest/PrivateTest with FER2013 labels and with FER+ majority votes."""
    results: dict = {"labels": list(labels)}
    cache = probs_cache if probs_cache is not None else {}
    for split in ("PublicTest", "PrivateTest"):
        rows, y = _hard_labels(ds, ds.split(split), labels, ds.labels[ds.split(split)])
        if split not in cache:
            cache[split] = predict_batched(predict, ds.images[ds.split(split)])
        probs = cache[split][np.isin(ds.split(split), rows)]
        results[f"fer2013_{split}"] = classification_report(y, probs.argmax(1), labels)
    if ds.ferplus_votes is not None:
        for key, split in FERPLUS_SPLITS.items():
            # majority contempt/unknown/NF are excluded
            rows_all = ds.split(split)
            maj = ferplus_majority(ds.ferplus_votes[rows_all])
            valid = maj >= 0
            rows, y = _hard_labels(ds, rows_all[valid], labels, maj[valid])
            probs = cache[split][np.isin(rows_all, rows)]
            rep = classification_report(y, probs.argmax(1), labels)
            rep["excluded_rows"] = int(len(rows_all) - len(rows))
            results[key] = rep
    return results


def summary_line(results: dict) -> str:
    parts = [
        f"{k.replace('fer2013_', '')}={v['accuracy']:.4f}"
        for k, v in results.items()
        if k.startswith(("fer2013_", "ferplus_")) and isinstance(v, dict)
    ]
    return " ".join(parts)


def save_confusion_png(report: dict, labels: tuple[str, ...], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.array(report["confusion_matrix"], dtype=np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}\n{int(cm[i, j])}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (acc {report['accuracy']:.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_curves_png(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    epochs = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("loss", a1), ("accuracy", a2)):
        ax.plot(epochs, [h.get(key) for h in history], label=f"train {key}")
        ax.plot(epochs, [h.get(f"val_{key}") for h in history], label=f"PublicTest {key}")
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_json(obj: dict, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")
