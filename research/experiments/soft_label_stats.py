"""How soft-label files describe the faces: agreement with the FER2013 label and with the FER+
majority, confidence and entropy, on Training and on PublicTest.

A teacher's prediction on a face it trained on mostly repeats that face's own label; on an
unseen face it is as unsure as on a test face. This prints both kinds side by side, e.g. the
in-sample file of T1 + T2 against out-of-fold labels:

    .venv/bin/python research/experiments/soft_label_stats.py --data ../shared/data \\
        train/artifacts/teachers/soft_labels.npz train/artifacts/teachers/soft_labels_oof.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from emotion_edge.preprocess import FER2013_LABELS
from emotion_edge_train.data import ferplus_soft, ferplus_valid, load_fer
from emotion_edge_train.teachers import load_soft_labels


def split_stats(probs: np.ndarray, fer: np.ndarray, plus: np.ndarray) -> dict[str, float]:
    """probs [n, 7]; fer [n] FER2013 labels; plus [n, 7] FER+ vote shares (rows with votes)."""
    pred = probs.argmax(1)
    voted = plus.sum(1) > 0
    entropy = -(probs * np.log(np.clip(probs, 1e-9, 1.0))).sum(1)
    return {
        "agree FER2013 %": 100 * float(np.mean(pred == fer)),
        "agree FER+ majority %": 100 * float(np.mean(pred[voted] == plus[voted].argmax(1))),
        "mean max prob": float(probs.max(1).mean()),
        "mean entropy (nats)": float(entropy.mean()),
        "p(FER2013 label)": float(probs[np.arange(len(fer)), fer].mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("files", type=Path, nargs="+", help="soft-label files (.npz)")
    parser.add_argument("--data", required=True, help="FER2013 + FER+ folder, ../shared/data")
    args = parser.parse_args()
    ds = load_fer(args.data)
    votes = ds.ferplus_votes
    plus = ferplus_soft(votes, FER2013_LABELS) * ferplus_valid(votes)[:, None]
    print("| file | split | " + " | ".join(split_stats(plus[:2], ds.labels[:2], plus[:2])) + " |")
    print("|---" * 7 + "|")
    for path in args.files:
        probs = load_soft_labels(path, ds, FER2013_LABELS)
        for split in ("Training", "PublicTest"):
            rows = ds.split(split)
            stats = split_stats(probs[rows], ds.labels[rows], plus[rows])
            cells = " | ".join(f"{v:.3f}" if v < 5 else f"{v:.2f}" for v in stats.values())
            print(f"| {path.name} | {split} | {cells} |")


if __name__ == "__main__":
    main()
