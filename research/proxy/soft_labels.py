"""Turn the GPU proxy's teacher probabilities into the soft-label file the CPU student reads.

The proxy (`torch_recipe_proxy.py --probs-out P.npz`) writes each model's flip-averaged
probabilities on the packed faces; this script maps them back to the dataset's rows (through
the row numbers `pack_fer.py` stored), averages the chosen models and writes the same file
`emotion-edge-train soft-labels` writes, so the student stage runs unchanged:

    .venv/bin/python research/proxy/soft_labels.py runs/gpu/g0_probs.npz --pack .gpu \\
        --data ../shared/data --out train/artifacts/teachers/soft_labels_gpu.npz
    emotion-edge-train fit ... --teacher-labels train/artifacts/teachers/soft_labels_gpu.npz

It prints each model's PublicTest accuracy, so teachers are chosen (--models) on PublicTest.
With --folds, the models' "fold" configs make the labels out-of-fold: each Training face is
labelled only by the models that left it out (as `soft-labels --folds` does for Keras models).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
from emotion_edge.preprocess import FER2013_LABELS
from emotion_edge_train.config import parse_fold
from emotion_edge_train.data import FOLD_RULE, load_fer
from emotion_edge_train.teachers import (
    SoftLabelError,
    dataset_fingerprint,
    out_of_fold_mean,
    write_soft_labels,
)

log = logging.getLogger("proxy-soft-labels")


def load_models(
    paths: list[Path], folds: bool = False
) -> tuple[np.ndarray, list[dict], list[str], list[str]]:
    """All models of all files: probs [M, N, NC], configs, names and file hashes. With folds,
    files whose folds were cut by another rule than this trainer's are refused."""
    probs, cfgs, names, shas = [], [], [], []
    for path in paths:
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        with np.load(path) as z:
            p = z["probs"].astype(np.float32)
            file_cfgs = json.loads(str(z["configs"]))
            rule = str(z["fold_rule"]) if "fold_rule" in z else "row number"
        for k, cfg in enumerate(file_cfgs):
            if folds and cfg.get("fold") and rule != FOLD_RULE:
                raise SoftLabelError(f"{path}: its folds were cut by {rule}, not {FOLD_RULE}")
            probs.append(p[k])
            cfgs.append(cfg)
            names.append(f"{path}#{k} {json.dumps(cfg, sort_keys=True)}")
            shas.append(sha)
    return np.stack(probs), cfgs, names, shas


def combine(probs: np.ndarray, cfgs: list[dict], keys: np.ndarray, n_train: int, folds: bool):
    """[N, NC]: the mean of the models; with folds, a Training face's mean over the models
    that left it out."""
    if not folds:
        return probs.mean(0)
    for cfg in cfgs:
        if not cfg.get("fold"):
            raise SoftLabelError(f"--folds: model {cfg} has no fold; it saw every Training face")
    training = np.arange(len(keys)) < n_train  # the pack puts Training faces first
    return out_of_fold_mean(probs, [parse_fold(c["fold"]) for c in cfgs], keys, training)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("probs", type=Path, nargs="+", help="files from --probs-out")
    parser.add_argument("--pack", type=Path, default=Path(".gpu"), help="pack_fer.py's folder")
    parser.add_argument("--data", required=True, help="FER2013 + FER+ folder, ../shared/data")
    parser.add_argument("--out", type=Path, required=True, help="soft-label file to write")
    parser.add_argument("--models", default="", help="comma-separated model numbers (all)")
    parser.add_argument("--folds", action="store_true", help="out-of-fold Training labels")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    meta = np.load(args.pack / "meta.npz")
    if "fold_keys" not in meta:
        parser.error(f"{args.pack}: a pack without fold keys (an older one); re-run pack_fer.py")
    ds = load_fer(args.data)
    if str(meta["fingerprint"]) != dataset_fingerprint(ds):
        parser.error(f"{args.pack} was packed from other data than {args.data}")
    rows = meta["rows"]
    n_train, n_val, _ = (int(v) for v in meta["n"])
    try:
        probs, cfgs, names, shas = load_models(args.probs, args.folds)
    except SoftLabelError as exc:
        parser.error(str(exc))
    if probs.shape[1] != len(rows):
        parser.error(f"probabilities for {probs.shape[1]} faces, the pack has {len(rows)}")
    pub = slice(n_train, n_train + n_val)
    y_pub = ds.labels[rows[pub]]
    for m, cfg in enumerate(cfgs):
        acc = np.mean(probs[m, pub].argmax(1) == y_pub)
        print(f"model {m}: PublicTest {100 * acc:.2f} %  {json.dumps(cfg, sort_keys=True)}")
    pick = [int(v) for v in args.models.split(",")] if args.models else list(range(len(cfgs)))
    probs, cfgs = probs[pick], [cfgs[m] for m in pick]
    try:
        combined = combine(probs, cfgs, meta["fold_keys"], n_train, args.folds)
    except (SoftLabelError, ValueError) as exc:  # ValueError: a malformed "fold"
        parser.error(str(exc))
    acc = np.mean(combined[pub].argmax(1) == y_pub)
    print(f"models {pick}: PublicTest {100 * acc:.2f} % (flip-averaged mean)")

    full = np.full((len(ds), len(FER2013_LABELS)), 1.0 / len(FER2013_LABELS), np.float32)
    full[rows] = combined  # faces the pack left out (unused by the student) stay uniform
    log.info("%d of %d dataset rows have teacher labels", len(rows), len(ds))
    summary = write_soft_labels(
        args.out,
        full,
        ds,
        FER2013_LABELS,
        [names[m] for m in pick],
        [shas[m] for m in pick],
        args.folds,
    )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
