"""Experiment: seconds per Training epoch of the recipe's net under different CPU settings.

At a fixed net and a 2-hour budget, a cheaper epoch means more passes over the data, so this
times one epoch's worth of training steps (random 48x48 faces, the recipe's augmentation,
Adam) for each variant, each in its own process because the oneDNN instruction set must be
chosen before TensorFlow is imported. Variants run interleaved, `--rounds` times, and the
medians are printed with their ratio to the first variant. See docs/experiments.md.

    .venv/bin/python research/experiments/step_speed.py \
        "isa=AVX2 batch=64" "isa=AVX2 batch=128" "isa=AVX512_CORE_BF16 batch=64" \
        "isa=AVX2 batch=64 jit=1" "isa=AVX512_CORE_BF16 batch=64 bf16=1"
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

TRAIN_ROWS = 28006  # Training rows the recipe uses (703 test duplicates dropped)
KEYS = {"isa": "AVX2", "batch": "64", "jit": "0", "bf16": "0"}


def parse_variant(text: str) -> dict[str, str]:
    variant = dict(KEYS)
    for item in text.split():
        key, _, value = item.partition("=")
        if key not in KEYS or not value:
            keys = ", ".join(KEYS)
            raise argparse.ArgumentTypeError(f"{item!r}: expected key=value, key one of {keys}")
        variant[key] = value
    return variant


def describe(variant: dict[str, str]) -> str:
    """The inverse of parse_variant: how a variant is passed to the child and printed."""
    return " ".join(f"{k}={v}" for k, v in variant.items())


def time_one(variant: dict[str, str], steps: int) -> float:
    """Runs in a fresh process: seconds per TRAIN_ROWS images."""
    from emotion_edge_train.tf_env import keras  # ONEDNN_MAX_CPU_ISA is read here

    if variant["bf16"] == "1":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    import numpy as np
    from emotion_edge.preprocess import FER2013_LABELS, INPUT_SIZE
    from emotion_edge_train.config import TrainConfig
    from emotion_edge_train.model import build_model
    from emotion_edge_train.train import make_dataset, make_optimizer

    cfg = TrainConfig(batch_size=int(variant["batch"]))
    n = cfg.batch_size * steps
    rng = np.random.default_rng(0)
    classes = len(FER2013_LABELS)
    images = rng.integers(0, 256, (n, INPUT_SIZE * INPUT_SIZE), dtype=np.uint8)
    targets = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, n)]
    ds = make_dataset(images, targets, np.ones(n, np.float32), cfg, training=True)
    model = build_model("vgg", classes, cfg.width, cfg.dropout, cfg.l2)
    model.compile(
        optimizer=make_optimizer(cfg.lr),
        loss="categorical_crossentropy",
        jit_compile=variant["jit"] == "1",
    )
    model.fit(ds.take(10), epochs=1, verbose=0)  # graph tracing and kernel selection
    started = time.perf_counter()
    model.fit(ds, epochs=1, verbose=0)
    return (time.perf_counter() - started) / n * TRAIN_ROWS


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "variants",
        nargs="+",
        type=parse_variant,
        help="'isa=AVX2|AVX512_CORE_BF16|... batch=N jit=0|1 bf16=0|1'",
    )
    p.add_argument("--steps", type=int, default=100, help="timed training steps per variant")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        print(time_one(args.variants[0], args.steps))
        return

    seconds: list[list[float]] = [[] for _ in args.variants]
    for _ in range(args.rounds):
        for i, variant in enumerate(args.variants):
            env = {**os.environ, "ONEDNN_MAX_CPU_ISA": variant["isa"], "TF_CPP_MIN_LOG_LEVEL": "2"}
            cmd = [sys.executable, __file__, describe(variant), "--steps", str(args.steps)]
            cmd += ["--child", "1"]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            seconds[i].append(float(out.stdout.strip().splitlines()[-1]))
    base = statistics.median(seconds[0])
    for variant, runs in zip(args.variants, seconds, strict=True):
        med = statistics.median(runs)
        each = ", ".join(f"{s:.1f}" for s in runs)
        print(f"{describe(variant):45s} {med:6.1f} s/epoch  x{med / base:.2f}  ({each})")


if __name__ == "__main__":
    main()
