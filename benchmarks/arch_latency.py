"""int8 latency of candidate CNN shapes before training them (workstation; needs `[train]`).

A training run costs ~100 minutes here, so a shape is first checked against the 0.5 ms/face
bar: each variant is built untrained, converted to fully int8 TFLite (calibrated on seeded
noise: latency does not depend on the weights' values) and run on one face through the
device's `EmotionClassifier.predict_faces` (quantize, LiteRT invoke, dequantize: the daemon's
per-face path), all variants timed interleaved in one process so their ratios to the first
one are fair on a noisy machine.

    .venv/bin/python -m benchmarks.arch_latency "width=20" "width=28 convs=1,1,2,2"
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from benchmarks.common import time_interleaved

KEYS = ("width", "widths", "convs", "head")


def parse_variant(text: str) -> dict:
    """'width=28 convs=1,1,2,2' -> build_model keyword arguments."""
    kwargs: dict = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or key not in KEYS:
            raise ValueError(f"{item!r} in {text!r}: expected KEY=VALUE with KEY one of {KEYS}")
        if key == "width":
            kwargs["width"] = int(value)
        elif key == "head":
            kwargs["head_units"] = int(value)
        else:
            kwargs["stage_widths" if key == "widths" else "stage_convs"] = [
                int(v) for v in value.split(",")
            ]
    return kwargs


def measure(variants: list[str], threads: int, runs: int) -> list[dict]:
    from emotion_edge.classify.classifier import EmotionClassifier
    from emotion_edge.preprocess import FER2013_LABELS, INPUT_SIZE
    from emotion_edge_export.convert import convert_int8, int8_metadata
    from emotion_edge_train.model import build_model

    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (200, INPUT_SIZE, INPUT_SIZE), dtype=np.uint8)
    face = faces[:1]
    rows, calls = [], {}
    for text in variants:
        model = build_model("vgg", len(FER2013_LABELS), **parse_variant(text))
        tflite = convert_int8(model, faces, n_calibration=len(faces))
        meta = int8_metadata(tflite, FER2013_LABELS, "untrained", f"{text}.tflite")
        clf = EmotionClassifier.from_bytes(tflite, meta, name=text, num_threads=threads)
        calls[text] = lambda c=clf: c.predict_faces(face)
        rows.append({"variant": text, "parameters": model.count_params(), "bytes": len(tflite)})
    timings = time_interleaved(calls, runs=runs, blocks=30)
    base = timings[variants[0]]["median_ms"]
    for row in rows:
        t = timings[row["variant"]]
        row.update(median_ms=t["median_ms"], ratio=round(t["median_ms"] / base, 3))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.arch_latency",
        description="int8 per-face latency (EmotionClassifier.predict_faces, LiteRT) of "
        "untrained vgg variants, timed interleaved; "
        "ratios are to the first variant. KEY=VALUE keys: width, widths (4 stage filters), "
        "convs (4 stage conv counts), head (hidden dense units).",
    )
    p.add_argument("variants", nargs="+", help='e.g. "width=20" "width=28 convs=1,1,2,2"')
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=3000, help="timed invocations per variant")
    args = p.parse_args(argv)
    try:
        for v in args.variants:
            parse_variant(v)
    except ValueError as exc:
        p.error(str(exc))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print("variant | parameters | int8 bytes | per-face median ms | ratio")
    for r in measure(args.variants, args.threads, args.runs):
        cells = (r["variant"], r["parameters"], r["bytes"], r["median_ms"], r["ratio"])
        print(" | ".join(str(c) for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
