"""Experiment (not part of the recipe): does a per-class prior correction help the shipped model?

The shipped int8 model under-calls fear (recall ~0.34 on FER2013). A fixed per-class weight on
the output probabilities (logit adjustment, 7 numbers) trades precision for recall without
retraining. The weights are fitted on PublicTest only (coordinate ascent on a log grid, for
accuracy or for macro-F1, or by cross-entropy; also the Training split's own label frequencies,
which use no test data); PrivateTest and FER+ test are reported, never used to fit. "bal" is the
mean per-class recall, the accuracy a class-balanced test set would give. Runs the
committed .tflite through the device's own classifier. Prints a table, writes OUT/result.json.

    .venv/bin/python research/experiments/class_bias.py --data ../shared/data \
        --out runs/class_bias
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
from emotion_edge.classify.classifier import EmotionClassifier, resolve_model_path
from emotion_edge.preprocess import FER2013_LABELS
from emotion_edge_train.data import ferplus_majority, load_fer
from emotion_edge_train.evaluate import classification_report

GRID = np.exp(np.linspace(-1.0, 1.0, 21))  # weights 0.37 .. 2.7


def scores(probs: np.ndarray, y: np.ndarray) -> dict:
    keep = y >= 0
    rep = classification_report(y[keep], probs.argmax(1)[keep], FER2013_LABELS)
    recall = [c["recall"] for c in rep["per_class"].values()]
    return {
        "accuracy": round(100 * rep["accuracy"], 2),
        "macro_f1": rep["macro_f1"],
        "mean_recall": round(float(np.mean(recall)), 4),
        "fear_recall": rep["per_class"]["fear"]["recall"],
    }


def fit_weights(probs: np.ndarray, y: np.ndarray, key: str, rounds: int = 3) -> np.ndarray:
    w = np.ones(7)
    best = scores(probs, y)[key]
    for _ in range(rounds):
        for c in range(7):
            for g in GRID:
                trial = w.copy()
                trial[c] = g
                s = scores(probs * trial, y)[key]
                if s > best + 1e-9:
                    best, w = s, trial
    return w


def fit_log_prior(probs: np.ndarray, targets: np.ndarray, steps: int = 500) -> np.ndarray:
    """Weights minimising the cross-entropy of renormalised `probs * w` against `targets`
    (rows of class distributions): smooth, so it fits the prior, not the argmax noise."""
    logp = np.log(np.clip(probs, 1e-6, 1.0))
    b = np.zeros(7)
    for _ in range(steps):
        z = logp + b
        q = np.exp(z - z.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
        b -= 1.0 * (q - targets).mean(0)  # the cross-entropy's gradient in b
        b -= b.mean()
    return np.exp(b)


def one_hot(y: np.ndarray) -> np.ndarray:
    keep = y >= 0
    out = np.zeros((len(y), 7))
    out[np.flatnonzero(keep), y[keep]] = 1.0
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="FER2013 + FER+ folder, e.g. ../shared/data")
    p.add_argument("--model", default=None, help="a .tflite with its sidecar (default: shipped)")
    p.add_argument("--out", type=Path, default=Path("runs/class_bias"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    ds = load_fer(args.data)
    model = resolve_model_path(args.model)
    clf = EmotionClassifier(model, num_threads=2)
    splits = {}
    for split in ("PublicTest", "PrivateTest"):
        rows = ds.split(split)
        probs = clf.predict_faces(ds.images[rows])
        splits[split] = (probs, ds.labels[rows], ferplus_majority(ds.ferplus_votes[rows]))
        logging.info("predicted %s", split)

    pub_probs, pub_y, pub_maj = splits["PublicTest"]
    fits = {"none": np.ones(7)}
    for key in ("accuracy", "macro_f1"):
        fits[f"fit {key}"] = fit_weights(pub_probs, pub_y, key)
        # FER+ valid is PublicTest's faces too, so fitting on it is still selection-side
        fits[f"fit {key} on FER+ valid"] = fit_weights(pub_probs, pub_maj, key)
    fits["fit cross-entropy"] = fit_log_prior(pub_probs, one_hot(pub_y))
    keep = pub_maj >= 0
    fits["fit cross-entropy on FER+ valid"] = fit_log_prior(pub_probs[keep], one_hot(pub_maj)[keep])
    fits["fit cross-entropy on both"] = fit_log_prior(
        np.concatenate([pub_probs, pub_probs[keep]]),
        np.concatenate([one_hot(pub_y), one_hot(pub_maj)[keep]]),
    )
    # one weight, on fear only (the class the issue asks to improve), chosen on PublicTest by
    # the export's rule: the mean of the accuracies under FER2013 and FER+ labels
    fear = FER2013_LABELS.index("fear")

    def both_labels(w: np.ndarray) -> float:
        return scores(pub_probs * w, pub_y)["accuracy"] + scores(pub_probs * w, pub_maj)["accuracy"]

    trials = [np.where(np.arange(7) == fear, g, 1.0) for g in GRID]
    fits["fear only, fit mean of both accuracies"] = max(trials, key=both_labels)
    # logit adjustment by the Training split's label frequencies: fitted on no test data;
    # what a class-balanced test set (posed-expression datasets often are) would want
    prior = np.bincount(ds.labels[ds.split("Training")], minlength=7) / len(ds.split("Training"))
    for tau in (0.25, 0.5, 1.0):
        fits[f"training prior^-{tau}"] = prior**-tau / np.exp(np.mean(np.log(prior**-tau)))

    result = {
        "model": str(model),
        "version": clf.version,
        "grid": [round(float(g), 3) for g in GRID],
        "rows": [],
    }
    header = "| weights | fitted for | " + " | ".join(
        f"{s} {m}"
        for s in ("Pub", "Priv", "FER+v", "FER+t")
        for m in ("acc", "F1", "bal", "fear R")
    )
    print(header + " |")
    for name, w in fits.items():
        row = {
            "fit": name,
            "weights": dict(zip(FER2013_LABELS, np.round(w, 3).tolist(), strict=True)),
        }
        cells = []
        for label, (probs, y) in (
            ("fer2013_PublicTest", splits["PublicTest"][:2]),
            ("fer2013_PrivateTest", splits["PrivateTest"][:2]),
            ("ferplus_valid", (splits["PublicTest"][0], splits["PublicTest"][2])),
            ("ferplus_test", (splits["PrivateTest"][0], splits["PrivateTest"][2])),
        ):
            s = scores(probs * w, y)
            row[label] = s
            cells += [
                f"{s['accuracy']:.2f}",
                f"{s['macro_f1']:.3f}",
                f"{s['mean_recall']:.3f}",
                f"{s['fear_recall']:.3f}",
            ]
        result["rows"].append(row)
        wtxt = " ".join(f"{k[:3]}={v:.2f}" for k, v in row["weights"].items() if v != 1.0) or "1"
        print(f"| {wtxt} | {name} | " + " | ".join(cells) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
