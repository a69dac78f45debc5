"""Experiment (not part of the recipe): fine-tune one member of a pair for the pair's output.

The shipped model averages two nets trained apart (T1, then S1). Here T1 is frozen and S1 is
fine-tuned on a mix of two losses: its own cross-entropy and that of the pair's average,
(T1 + S1) / 2, so that S1 learns to correct where T1 is wrong rather than to be right alone.
Same targets as S1's recipe (0.7 FER2013 + 0.3 FER+, half the teachers' soft labels) and the
same share of the daemon's re-crops. After each epoch the member's weights are saved; at the
end each epoch's pair is scored on the three PublicTest measures (FER2013 labels on the dataset
crops, on the daemon's re-crops, FER+ majority labels) and the best by their mean (`mean3`,
the rule that chose the shipped pair) is selected; PrivateTest and FER+ test are reported for
it. Results in OUT/result.json.

    .venv/bin/python research/experiments/pair_finetune.py --data ../shared/data \
        --out runs/pair_ft
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from emotion_edge.preprocess import FACE_CROP_SCALE, FACE_CROP_SHIFT_Y, resolve_labels
from emotion_edge_train.config import TrainConfig
from emotion_edge_train.data import load_fer
from emotion_edge_train.device_crops import cached_device_framed
from emotion_edge_train.teachers import dataset_fingerprint
from emotion_edge_train.tf_env import keras, tf
from emotion_edge_train.train import make_dataset, prepare_rows
from ensemble_pairs import TestFaces  # the sibling script, on sys.path when run by path

log = logging.getLogger("pair_finetune")


def pair_model(partner, member):
    """Outputs (member probs, pair probs) for one input; the partner is frozen."""
    partner.trainable = False
    partner._name, member._name = "partner", "member_net"  # both are "emotion_vgg"
    face = keras.Input(member.input_shape[1:], name="face")
    p_member = member(face)
    p_pair = keras.layers.Average(name="pair")([partner(face, training=False), p_member])
    return keras.Model(face, {"member": p_member, "pair": p_pair})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="FER2013 + FER+ folder, e.g. ../shared/data")
    p.add_argument("--partner", default="train/artifacts/teachers/teacher_t1.h5")
    p.add_argument("--member", default="train/artifacts/students/student_s3/student_s3.h5")
    p.add_argument("--teacher-labels", default="train/artifacts/teachers/soft_labels.npz")
    p.add_argument("--out", type=Path, default=Path("runs/pair_ft"))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=3e-4, help="Adam, cosine decay to 0")
    p.add_argument(
        "--pair-weight", type=float, default=0.5, help="share of the pair's loss (rest: member's)"
    )
    p.add_argument("--seed", type=int, default=31)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    keras.utils.set_random_seed(args.seed)

    cfg = TrainConfig(
        data=args.data,
        teacher_labels=args.teacher_labels,
        device_crop_prob=0.5,
        seed=args.seed,
    )
    labels = resolve_labels(cfg.labels)
    ds = load_fer(cfg.data)
    crops, found = cached_device_framed(
        ds.images, dataset_fingerprint(ds), FACE_CROP_SCALE, FACE_CROP_SHIFT_Y
    )
    rows, y, _, _, _ = prepare_rows(ds, cfg, labels)
    train_ds = make_dataset(
        ds.images[rows], y, np.ones(len(rows), np.float32), cfg, True, crops[rows]
    ).map(lambda x, t, w: (x, {"member": t, "pair": t}))

    partner = keras.models.load_model(args.partner, compile=False)
    member = keras.models.load_model(args.member, compile=False)
    model = pair_model(partner, member)
    steps = int(train_ds.cardinality())
    model.compile(
        optimizer=keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(args.lr, args.epochs * steps)
        ),
        loss={
            "member": keras.losses.CategoricalCrossentropy(),
            "pair": keras.losses.CategoricalCrossentropy(),
        },
        loss_weights={"member": 1.0 - args.pair_weight, "pair": args.pair_weight},
    )
    snapshots = []

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            path = args.out / f"member_e{epoch + 1:02d}.h5"
            member.save(path, save_format="h5", include_optimizer=False)
            snapshots.append(path)

    model.fit(train_ds, epochs=args.epochs, verbose=2, callbacks=[Snapshot()])
    train_seconds = time.time() - started

    faces = TestFaces.of(ds, crops, found)

    def predict(model_, x):
        return model_.predict(x, batch_size=512, verbose=0)

    partner_plain, partner_recrop = predict(partner, faces.plain), predict(partner, faces.recrop)

    def score(member_path: Path) -> dict:
        m = keras.models.load_model(member_path, compile=False)
        return faces.measures(
            partner_plain + predict(m, faces.plain), partner_recrop + predict(m, faces.recrop)
        )

    start = score(Path(args.member))
    epochs = {path.stem: score(path) for path in snapshots}
    for name, r in [("start", start), *epochs.items()]:
        log.info("%s: %s", name, r)
    chosen = max(epochs, key=lambda k: epochs[k]["mean3_pub"])
    result = {
        **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "start": start,
        "epochs": epochs,
        "chosen_by_mean3_pub": chosen,
        "chosen": epochs[chosen],
        "train_seconds": round(train_seconds, 1),
        "tensorflow": tf.__version__,
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    log.info("chosen %s: %s", chosen, epochs[chosen])


if __name__ == "__main__":
    main()
