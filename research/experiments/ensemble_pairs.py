"""Experiment (not part of the recipe): which committed float models are worth averaging?

Scores every single model and every pair and triple of the committed float models, each with
and without flip averaging, on PublicTest (selection) and PrivateTest (report): FER2013 labels
on the dataset crops, FER+ majority labels, and FER2013 labels on the daemon's re-crops
(emotion_edge_train.device_crops, the training-time cache: one camera-like placement per face,
the faces the detector found; a proxy for the benchmark's device_faces table, which places each
face three ways). `mean3` is the mean of the three PublicTest measures, the rule that chose
model v2 (docs/experiments.md). Members are averaged as probabilities, as
`emotion-edge-train ensemble` does. With `--mirrored`, each model also enters as a mirrored
member `Xm` (the model applied to the mirror image of the face, one pass: a net whose conv
kernels are flipped left-right computes exactly that), so a pair can look at both sides of a
face at the cost of two passes. `--combine geomean` averages log-probabilities instead (the
argmax of the mean logits, what a graph averaging the members' pre-softmax outputs gives).
`--pair-weights 0.4,0.6` also scores each pair with its first member weighted w and the second
1 - w (a free lever: the same two passes).
Prints a table and writes OUT/result.json.

    .venv/bin/python research/experiments/ensemble_pairs.py --data ../shared/data \
        --out runs/ensemble_pairs
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from emotion_edge.preprocess import FACE_CROP_SCALE, FACE_CROP_SHIFT_Y, to_float_input
from emotion_edge_train.data import FerDataset, ferplus_majority, load_fer
from emotion_edge_train.device_crops import cached_device_framed
from emotion_edge_train.teachers import dataset_fingerprint
from emotion_edge_train.tf_env import keras

ART = Path("train/artifacts")
MODELS = {
    "T1": ART / "teachers/teacher_t1.h5",
    "T2": ART / "teachers/teacher_s2.h5",
    "T3": ART / "teachers/teacher_t3.h5",
    "T4": ART / "teachers/teacher_t4.h5",  # T1's recipe over 160 epochs instead of 80
    "S1": ART / "students/student_s3/student_s3.h5",
    "S2": ART / "students/student_s4/student_s4.h5",
    # S3 and W1 weights left the tree on 2026-12-06 (30 MB cap); restore each with
    # `git show 402f5df:P > P`, P being its path below (e.g. train/artifacts/students/...)
    "S3": ART / "students/student_c25/student_c25.h5",  # device-crop-prob 0.25
    "S5": ART / "students/student_online/student_online.h5",  # online teachers T1 + T2
    "S6": ART / "students/student_t124/student_t124.h5",  # soft labels of T1 + T2 + T4
    "W1": ART / "students/student_w32/student_w32.h5",  # S6's recipe at width 32, one net
    # S1's recipe at width 24 over 50 epochs (a pair member of 1.2 passes); its .h5 is not
    # committed (the 30 MB cap): train it with the command in docs/training.md (stage S7)
    "S7": Path("runs/student_w24/best.h5"),
    "S7b": Path("runs/student_w24_s4/best.h5"),  # S7's command with --seed 4
    # S1's recipe on out-of-fold soft labels (stage S8 in docs/training.md)
    "S8": ART / "students/student_oof/student_oof.h5",
    # S1's recipe with --teacher-weight 0.8 instead of 0.5; its .h5 is not committed (not
    # adopted): train it with the command in docs/training.md (stage S9)
    "S9": Path("runs/student_tw8/best.h5"),
}


@dataclass
class TestFaces:
    """PublicTest + PrivateTest faces as the dataset crops them and as the daemon re-crops them
    (`found`: the detector found the face), with FER2013 and FER+ majority labels."""

    plain: np.ndarray  # float input
    recrop: np.ndarray
    public: np.ndarray  # bool: the row is PublicTest
    found: np.ndarray  # bool
    fer2013: np.ndarray
    ferplus: np.ndarray  # -1 where FER+ has no majority label

    @classmethod
    def load(cls, data: str) -> TestFaces:
        ds = load_fer(data)
        crops, found = cached_device_framed(
            ds.images, dataset_fingerprint(ds), FACE_CROP_SCALE, FACE_CROP_SHIFT_Y
        )
        return cls.of(ds, crops, found)

    @classmethod
    def of(cls, ds: FerDataset, crops: np.ndarray, found: np.ndarray) -> TestFaces:
        """From a loaded dataset and its daemon re-crops (`cached_device_framed`)."""
        rows = np.concatenate([ds.split("PublicTest"), ds.split("PrivateTest")])
        return cls(
            plain=to_float_input(ds.images[rows]),
            recrop=to_float_input(crops[rows]),
            public=np.isin(rows, ds.split("PublicTest")),
            found=found[rows].astype(bool),
            fer2013=ds.labels[rows],
            ferplus=ferplus_majority(ds.ferplus_votes[rows]),
        )

    def measures(self, plain_scores: np.ndarray, recrop_scores: np.ndarray) -> dict:
        """Accuracies (%) of summed member scores on `plain` and `recrop`, and mean3_pub."""

        def acc(scores, mask, labels):
            keep = mask & (labels >= 0)
            return round(100 * float(np.mean(scores.argmax(1)[keep] == labels[keep])), 2)

        a, b, pub, found, y = plain_scores, recrop_scores, self.public, self.found, self.fer2013
        pub_recrop, priv_recrop = acc(b, pub & found, y), acc(b, ~pub & found, y)
        r = {
            "pub": acc(a, pub, y),
            "pub_recrop": pub_recrop,
            "pub_recrop_gap": round(acc(a, pub & found, y) - pub_recrop, 2),
            "ferplus_valid": acc(a, pub, self.ferplus),
            "priv": acc(a, ~pub, y),
            "priv_recrop": priv_recrop,
            "priv_recrop_gap": round(acc(a, ~pub & found, y) - priv_recrop, 2),
            "ferplus_test": acc(a, ~pub, self.ferplus),
        }
        r["mean3_pub"] = round((r["pub"] + r["pub_recrop"] + r["ferplus_valid"]) / 3, 2)
        return r


def predictions(paths: dict[str, Path], x: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    for name, path in paths.items():
        model = keras.models.load_model(path, compile=False)
        out[name] = model.predict(x, batch_size=512, verbose=0)
        out[name + "_flip"] = model.predict(x[:, :, ::-1, :], batch_size=512, verbose=0)
        logging.info("predicted with %s", name)
    return out


def combined(
    preds: dict[str, np.ndarray], members: tuple[str, ...], share: list[float], flip: bool
) -> np.ndarray:
    """The members' scores summed with their shares (and each one's mirror pass if `flip`)."""
    return sum(
        s * (preds[m] + (preds[m + "_flip"] if flip else 0))
        for s, m in zip(share, members, strict=True)
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="FER2013 + FER+ folder, e.g. ../shared/data")
    p.add_argument("--out", type=Path, default=Path("runs/ensemble_pairs"))
    p.add_argument("--max-members", type=int, default=3)
    p.add_argument(
        "--models", default="", help=f"comma-separated subset of {', '.join(MODELS)} (default: all)"
    )
    p.add_argument(
        "--mirrored",
        action="store_true",
        help="also score members applied to the mirrored face (named Xm, one pass each)",
    )
    p.add_argument(
        "--pair-weights",
        default="",
        help="comma-separated weights of a pair's first member (the second gets 1 - w), "
        "each scored beside the plain mean, e.g. 0.3,0.4,0.6,0.7",
    )
    p.add_argument(
        "--combine",
        choices=("mean", "geomean"),
        default="mean",
        help="average the members' probabilities (as shipped) or their log-probabilities",
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    wanted = [m.strip() for m in args.models.split(",") if m.strip()] or list(MODELS)
    unknown = sorted(set(wanted) - set(MODELS))
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    models = {m: MODELS[m] for m in wanted if MODELS[m].is_file()}
    for m in sorted(set(wanted) - set(models)):
        logging.warning(
            "skipping %s: %s not found (not trained or not committed yet)", m, MODELS[m]
        )

    pair_weights = [float(w) for w in args.pair_weights.split(",") if w.strip()]
    if any(not 0.0 < w < 1.0 for w in pair_weights):
        p.error(f"--pair-weights must lie strictly between 0 and 1, got {pair_weights}")
    faces = TestFaces.load(args.data)
    plain = predictions(models, faces.plain)
    recrop = predictions(models, faces.recrop)

    if args.combine == "geomean":
        for preds in (plain, recrop):
            for k in preds:
                preds[k] = np.log(np.maximum(preds[k], 1e-7))
    names = list(models)
    if args.mirrored:
        for preds in (plain, recrop):
            for m in models:
                preds[m + "m"] = preds[m + "_flip"]
                preds[m + "m_flip"] = preds[m]
        names += [m + "m" for m in models]

    results = []
    for n in range(1, args.max_members + 1):
        for combo in itertools.combinations(names, n):
            bases = [c.removesuffix("m") if c not in models else c for c in combo]
            if len(set(bases)) < n or combo[0] not in models:
                continue  # X with Xm is X's flip averaging; Xm first mirrors a listed pair
            # equal weights (as shipped) first; a pair also with each --pair-weights split
            splits = [None] + (pair_weights if n == 2 else [])
            for w, flip in itertools.product(splits, (False, True)):
                share = [1.0] * n if w is None else [2 * w, 2 * (1 - w)]
                r = {
                    "members": "+".join(combo) if w is None else f"{combo[0]}*{w}+{combo[1]}",
                    "flip": flip,
                    "passes_per_face": n * (2 if flip else 1),
                    **faces.measures(
                        combined(plain, combo, share, flip), combined(recrop, combo, share, flip)
                    ),
                }
                results.append(r)
    keys = list(results[0])
    print(" | ".join(keys))
    for r in results:
        print(" | ".join(str(r[k]) for k in keys))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
