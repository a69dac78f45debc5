"""emotion-edge-train: train and evaluate the emotion CNN (workstation side)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from emotion_edge_train.config import (
    DATA_HELP,
    OPTIMIZERS,
    TrainConfig,
    check_stage_list,
    parse_fold,
    parse_workstation_args,
)

QUICK = {
    "arch": "tiny",
    "epochs": 2,
    "limit_train": 2000,
    "limit_eval": 500,
    "batch_size": 64,
    "warmup_epochs": 0,
    "patience": 5,
}


def _stage_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers") from None
    try:
        return list(check_stage_list("stage list", values))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()  # the defaults live in one place: the recipe dataclass
    p = argparse.ArgumentParser(
        prog="emotion-edge-train",
        description="Train the compact emotion CNN on FER2013 (+ FER+ votes) and evaluate it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser(
        "fit",
        help="train a model (resumes if the run folder has a checkpoint)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    f.add_argument(
        "--data",
        default=None,
        help=f"required: {DATA_HELP}, or a Kaggle train/test/<class>/ folder",
    )
    f.add_argument("--out", default=defaults.out, help="run folder (checkpoints, logs, metrics)")
    f.add_argument("--arch", default=defaults.arch, choices=["vgg", "tiny"])
    f.add_argument(
        "--width", type=int, default=defaults.width, help="filters of the first vgg stage"
    )
    f.add_argument(
        "--stage-widths",
        type=_stage_list,
        default=defaults.stage_widths,
        help="vgg: filters of the four stages, e.g. 20,40,96,192; empty: width x 1,2,4,8",
    )
    f.add_argument(
        "--stage-convs",
        type=_stage_list,
        default=defaults.stage_convs,
        help="vgg: 3x3 convs in each of the four stages, e.g. 1,2,2,2; empty: 2 each",
    )
    f.add_argument(
        "--labels",
        default="",
        help="comma-separated class subset, e.g. angry,happy,sad,surprise,neutral",
    )
    f.add_argument(
        "--label-mode",
        default=defaults.label_mode,
        choices=["fer2013", "ferplus", "mixed"],
        help="targets: FER2013 one-hot, FER+ vote distribution, or a mix of both",
    )
    f.add_argument(
        "--fer2013-weight",
        type=float,
        default=defaults.fer2013_weight,
        help="weight of the FER2013 one-hot in --label-mode mixed",
    )
    f.add_argument(
        "--keep-test-duplicates",
        action="store_true",
        help="keep Training rows whose image also occurs in a test split",
    )
    f.add_argument("--epochs", type=int, default=defaults.epochs)
    f.add_argument("--batch-size", type=int, default=defaults.batch_size)
    f.add_argument(
        "--lr", type=float, default=defaults.lr, help="peak learning rate (cosine decay)"
    )
    f.add_argument(
        "--optimizer",
        default=defaults.optimizer,
        choices=OPTIMIZERS,
        help="sgd: SGD with Nesterov momentum (give it a larger --lr, e.g. 0.05)",
    )
    f.add_argument(
        "--momentum", type=float, default=defaults.momentum, help="momentum of --optimizer sgd"
    )
    f.add_argument(
        "--class-weight-power",
        type=float,
        default=defaults.class_weight_power,
        help="0 no class weighting, 1 fully balanced",
    )
    f.add_argument(
        "--patience",
        type=int,
        default=defaults.patience,
        help="early stopping: epochs without a better PublicTest, checked only in the second half "
        "of the schedule",
    )
    f.add_argument("--seed", type=int, default=defaults.seed, help="-1 for non-deterministic")
    f.add_argument(
        "--limit-train", type=int, default=defaults.limit_train, help="use only N training rows"
    )
    f.add_argument("--no-augment", action="store_true")
    f.add_argument(
        "--augment-strength",
        type=float,
        default=defaults.augment_strength,
        help="scale every augmentation range and probability (flip stays on)",
    )
    f.add_argument(
        "--dropout", type=float, default=defaults.dropout, help="dropout before the output layer"
    )
    f.add_argument(
        "--head-units",
        type=int,
        default=defaults.head_units,
        help="vgg head: 0 = global average pooling; N = flatten the last 3x3 map into a "
        "hidden dense layer of N units",
    )
    f.add_argument("--l2", type=float, default=defaults.l2, help="L2 weight of the conv kernels")
    f.add_argument(
        "--no-bn-recalibrate",
        action="store_true",
        help="keep the BatchNorm moving averages of the selected checkpoint instead of "
        "re-measuring them on un-augmented Training images (kept only if PublicTest holds)",
    )
    f.add_argument(
        "--swa-epochs",
        type=int,
        default=defaults.swa_epochs,
        help="epochs of stochastic weight averaging after the main schedule (0: none)",
    )
    f.add_argument(
        "--swa-lr",
        type=float,
        default=defaults.swa_lr,
        help="learning rate at the start of each SWA epoch (cosine down to 1/30 of it)",
    )
    f.add_argument(
        "--teacher-labels",
        default=defaults.teacher_labels,
        metavar="NPZ",
        help="distil from teachers: their soft labels (emotion-edge-train soft-labels) mixed "
        "into the targets",
    )
    f.add_argument(
        "--teacher-models",
        nargs="+",
        type=Path,
        default=[],
        metavar="H5",
        help="distil online: these float teachers predict on every augmented batch (the "
        "student's own view of each face); their mean probabilities go into the targets. "
        "Slower per epoch than --teacher-labels, which it excludes",
    )
    f.add_argument(
        "--teacher-weight",
        type=float,
        default=defaults.teacher_weight,
        help="share of the teachers' probabilities in the targets (with --teacher-labels "
        "or --teacher-models)",
    )
    f.add_argument(
        "--device-crop-prob",
        type=float,
        default=defaults.device_crop_prob,
        help="chance that a Training image is replaced by the daemon's own crop of it "
        "(detector + crop rule in a camera-like frame), so the model learns that framing too",
    )
    f.add_argument(
        "--holdout-fold",
        default=defaults.holdout_fold,
        metavar="I/K",
        help="leave out fold I of K of the Training rows (identical images always share a "
        "fold): a teacher whose predictions on them are out-of-fold (soft-labels --folds)",
    )
    f.add_argument(
        "--quick",
        action="store_true",
        help="pipeline check in about a minute: tiny net, 2000 rows, 2 epochs",
    )

    s = sub.add_parser(
        "soft-labels",
        help="teacher soft labels: flip-averaged ensemble predictions for every image",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    s.add_argument("teachers", type=Path, nargs="+", help="teacher float models (.h5)")
    s.add_argument("--data", default=None, help=f"required: {DATA_HELP}")
    s.add_argument(
        "--out",
        type=Path,
        default=Path("train/artifacts/teachers/soft_labels.npz"),
        help="output file (commit it: the student stage reads it)",
    )
    s.add_argument(
        "--folds",
        action="store_true",
        help="out-of-fold labels: teacher i (of K, in this order) was trained with "
        "fit --holdout-fold i/K and alone labels the Training rows of fold i",
    )

    n = sub.add_parser(
        "ensemble",
        help="average trained float models into one model (one int8 file on the device)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Builds one flat Keras model whose output is the mean of the members' "
        "probabilities, evaluates it, and writes it with a metrics.json that names its "
        "members (export reads the recipe of the first one for QAT). Per-face latency "
        "grows with the number of members.",
    )
    n.add_argument("members", type=Path, nargs="+", help="member float models (.h5), 2 or more")
    n.add_argument("--data", default=None, help=f"required: {DATA_HELP}")
    n.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output .h5; metrics.json and confusion PNGs go beside it",
    )

    e = sub.add_parser(
        "evaluate",
        help="evaluate a saved float model (.h5)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    e.add_argument("model", type=Path)
    e.add_argument("--data", default=None, help=f"required: {DATA_HELP}")
    e.add_argument("--out", type=Path, default=None, help="folder for metrics.json and PNGs")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_workstation_args(build_parser(), argv)
    from emotion_edge_train.data import DataError

    try:
        if args.command == "fit":
            return _fit(args)
        if args.command == "soft-labels":
            return _soft_labels(args)
        if args.command == "ensemble":
            return _ensemble(args)
        return _evaluate(args)
    except DataError as exc:
        logging.error("%s", exc)
        return 2


def _fit(args) -> int:
    from emotion_edge_train.train import train

    cfg = TrainConfig(
        data=args.data,
        out=args.out,
        arch=args.arch,
        width=args.width,
        labels=[s.strip() for s in args.labels.split(",") if s.strip()],
        label_mode=args.label_mode,
        fer2013_weight=args.fer2013_weight,
        keep_test_duplicates=args.keep_test_duplicates,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        momentum=args.momentum,
        class_weight_power=args.class_weight_power,
        patience=args.patience,
        seed=None if args.seed < 0 else args.seed,
        limit_train=args.limit_train,
        augment=not args.no_augment,
        augment_strength=args.augment_strength,
        dropout=args.dropout,
        head_units=args.head_units,
        stage_widths=args.stage_widths,
        stage_convs=args.stage_convs,
        l2=args.l2,
        bn_recalibrate=not args.no_bn_recalibrate,
        swa_epochs=args.swa_epochs,
        swa_lr=args.swa_lr,
        teacher_labels=args.teacher_labels,
        teacher_weight=args.teacher_weight,
        teacher_models=[str(p) for p in args.teacher_models],
        device_crop_prob=args.device_crop_prob,
        holdout_fold=args.holdout_fold,
    )
    if cfg.teacher_models and cfg.teacher_labels:
        logging.error("--teacher-models and --teacher-labels: choose one way to distil")
        return 2
    missing = [p for p in cfg.teacher_models if not Path(p).is_file()]
    if missing:
        logging.error("--teacher-models: not found: %s", ", ".join(missing))
        return 2
    for name in ("teacher_weight", "device_crop_prob"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            logging.error(
                "--%s: must be in [0, 1], got %g", name.replace("_", "-"), getattr(cfg, name)
            )
            return 2
    if cfg.holdout_fold:
        try:
            parse_fold(cfg.holdout_fold)
        except ValueError as exc:
            logging.error("--holdout-fold: %s", exc)
            return 2
    if args.quick:
        for k, v in QUICK.items():
            setattr(cfg, k, v)
    try:
        from emotion_edge.preprocess import resolve_labels

        resolve_labels(cfg.labels)
    except ValueError as exc:
        logging.error("--labels: %s", exc)
        return 2
    train(cfg)
    return 0


def _soft_labels(args) -> int:
    from emotion_edge.preprocess import FER2013_LABELS
    from emotion_edge_train.data import load_fer
    from emotion_edge_train.teachers import SoftLabelError, compute_soft_labels

    missing = [str(p) for p in args.teachers if not p.is_file()]
    if missing:
        logging.error("teacher model(s) not found: %s", ", ".join(missing))
        return 2
    try:
        summary = compute_soft_labels(
            args.teachers, load_fer(args.data), FER2013_LABELS, args.out, folds=args.folds
        )
    except SoftLabelError as exc:
        logging.error("%s", exc)
        return 2
    logging.info("soft labels: %s", summary)
    print(json.dumps(summary, indent=2))
    return 0


def _fer2013_labels(n_outputs: int) -> tuple[str, ...]:
    """Labels for a model saved without them: FER2013's order, as many as it has outputs."""
    from emotion_edge.preprocess import FER2013_LABELS

    return tuple(FER2013_LABELS[:n_outputs])


def _ensemble(args) -> int:
    from emotion_edge_train.data import load_fer
    from emotion_edge_train.ensemble import EnsembleError, build_ensemble, member_record
    from emotion_edge_train.evaluate import summary_line, write_json
    from emotion_edge_train.tf_env import keras
    from emotion_edge_train.train import evaluate_model

    missing = [str(p) for p in args.members if not p.is_file()]
    if missing:
        logging.error("member model(s) not found: %s", ", ".join(missing))
        return 2
    records = [member_record(p) for p in args.members]
    label_sets = {tuple(r["labels"]) for r in records if r.get("labels")}
    if len(label_sets) > 1:
        logging.error("members were trained on different labels: %s", sorted(label_sets))
        return 2
    try:
        model = build_ensemble([keras.models.load_model(p, compile=False) for p in args.members])
    except EnsembleError as exc:
        logging.error("%s", exc)
        return 2
    labels = label_sets.pop() if label_sets else _fer2013_labels(int(model.output_shape[-1]))
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    metrics = evaluate_model(model, load_fer(args.data), labels, out.parent)
    metrics["labels"] = list(labels)
    metrics["parameters"] = int(model.count_params())
    # export's QAT fine-tune follows a recipe: the first member's
    metrics["config"] = records[0].get("config", {})
    metrics["ensemble"] = {"members": records, "combine": "mean of probabilities"}
    model.save(out)
    write_json(metrics, out.with_name("metrics.json"))
    print(summary_line(metrics))
    return 0


def _evaluate(args) -> int:
    from emotion_edge_train.data import load_fer
    from emotion_edge_train.evaluate import summary_line, write_json
    from emotion_edge_train.tf_env import keras
    from emotion_edge_train.train import evaluate_model

    if not args.model.is_file():
        logging.error("%s: no such model file", args.model)
        return 2
    model = keras.models.load_model(args.model, compile=False)
    meta = args.model.with_name("labels.json")
    if meta.is_file():
        labels = tuple(json.loads(meta.read_text()))
    else:
        labels = _fer2013_labels(int(model.get_layer("probs").output.shape[-1]))
    out = args.out or args.model.parent
    out.mkdir(parents=True, exist_ok=True)
    metrics = evaluate_model(model, load_fer(args.data), labels, out)
    target = out / "metrics.json"
    if target.is_file():  # keep what training wrote there (config, history, ensemble members)
        metrics = json.loads(target.read_text()) | metrics
    write_json(metrics, target)
    print(summary_line(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
