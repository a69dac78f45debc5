"""The training recipe as one dataclass; its defaults are the recipe of the committed model.

Kept free of TensorFlow so the CLI can show these defaults in `--help` without importing it.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field


def check_stage_list(name: str, values: Sequence[int]) -> tuple[int, ...]:
    """A vgg per-stage setting (--stage-widths, --stage-convs): one positive int per stage."""
    if len(values) != 4 or min(values) < 1:
        raise ValueError(f"{name} {list(values)}: expected four positive integers")
    return tuple(values)


def parse_fold(text: str) -> tuple[int, int]:
    """'i/K' -> (i, K) with 0 <= i < K and K >= 2."""
    try:
        i, k = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"fold {text!r}: expected i/K, e.g. 0/2") from None
    if k < 2 or not 0 <= i < k:
        raise ValueError(f"fold {text!r}: need K >= 2 and 0 <= i < K")
    return i, k


OPTIMIZERS = ("adam", "sgd")  # sgd: with Nesterov momentum

# The data has no default location: the product's CLIs never reach outside the repository.
DATA_HELP = "fer2013.csv[.gz] or the folder holding it (+ fer2013new.csv), e.g. ../shared/data"
DATA_REQUIRED = "--data is required: the folder with fer2013.csv[.gz] (e.g. --data ../shared/data)"


def parse_workstation_args(
    parser: argparse.ArgumentParser, argv: list[str] | None
) -> argparse.Namespace:
    """Parse a train/export command line (every subcommand with --data needs it) and log."""
    args = parser.parse_args(argv)
    if "data" in vars(args) and not args.data:
        parser.error(DATA_REQUIRED)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return args


@dataclass
class TrainConfig:
    data: str = ""  # required: see DATA_REQUIRED
    out: str = "runs/train"
    arch: str = "vgg"
    width: int = 20
    labels: list[str] = field(default_factory=list)  # empty: all 7 FER2013 classes
    label_mode: str = "mixed"  # fer2013 | ferplus | mixed
    fer2013_weight: float = 0.7  # in mixed mode
    keep_test_duplicates: bool = False
    epochs: int = 80
    batch_size: int = 64
    optimizer: str = "adam"  # one of OPTIMIZERS
    momentum: float = 0.9  # sgd only
    lr: float = 2e-3
    warmup_epochs: int = 2
    class_weight_power: float = 0.0  # 0: none, 1: fully balanced
    patience: int = 12
    seed: int | None = 1234
    limit_train: int = 0  # >0: subsample training (quick mode)
    limit_eval: int = 0
    augment: bool = True
    augment_strength: float = 0.6  # scales every AugmentConfig range and probability
    dropout: float = 0.3  # before the output layer
    stage_widths: list[int] = field(default_factory=list)  # vgg: empty = width x 1, 2, 4, 8
    stage_convs: list[int] = field(default_factory=list)  # vgg: empty = 2 convs per stage
    head_units: int = 0  # >0: flatten + hidden dense layer of that many units (vgg)
    l2: float = 5e-5  # conv kernel L2
    bn_recalibrate: bool = True  # re-measure BatchNorm statistics on clean Training images
    swa_epochs: int = 0  # >0: that many weight-averaging epochs after the main schedule
    swa_lr: float = 3e-4  # peak of the per-epoch cosine during SWA
    teacher_labels: str = ""  # soft-label file (emotion-edge-train soft-labels); "" = none
    teacher_weight: float = 0.5  # share of the teachers' probabilities in the targets
    # float teachers run on each augmented batch (the student's own view of each face), instead
    # of fixed soft labels on the clean images; exclusive with teacher_labels
    teacher_models: list[str] = field(default_factory=list)
    device_crop_prob: float = 0.0  # chance a Training image is the daemon's re-crop of it
    # "i/K": leave out the Training rows whose fold key (data.fold_keys) % K == i, so that
    # this model's predictions on them are out-of-fold (see `soft-labels --folds`)
    holdout_fold: str = ""
