"""int8 latency of candidate CNN shapes before training them (workstation; needs `[train]`).

A training run costs ~100 minutes here, so a shape is first checked against the 0.5 ms/face
bar: each variant is built untrained, converted to fully int8 TFLite (calibrated on seeded
noise: latency does not depend on the weights' values) and invoked in LiteRT, all variants
timed interleaved in one process so their ratios to the first one are fair on a noisy machine.

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
    from emotion_edge.classify.litert import make_interpreter
    from emotion_edge_export.convert import convert_int8
    from emotion_edge_train.model import build_model

    faces = np.random.default_rng(0).integers(0, 256, (200, 48, 48), dtype=np.uint8)
    rows, invokes = [], {}
    for text in variants:
        model = build_model("vgg", 7, **parse_variant(text))
        tflite = convert_int8(model, faces, n_calibration=len(faces))
        interp = make_interpreter(model_content=tflite, num_threads=threads)
        inp = interp.get_input_details()[0]
        interp.set_tensor(inp["index"], np.zeros(inp["shape"], np.int8))
        invokes[text] = interp.invoke
        rows.append({"variant": text, "parameters": model.count_params(), "bytes": len(tflite)})
    timings = time_interleaved(invokes, runs=runs, blocks=30)
    base = timings[variants[0]]["median_ms"]
    for row in rows:
        t = timings[row["variant"]]
        row.update(median_ms=t["median_ms"], ratio=round(t["median_ms"] / base, 3))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.arch_latency",
        description="int8 LiteRT invoke latency of untrained vgg variants, timed interleaved; "
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
    print("variant | parameters | int8 bytes | invoke median ms | ratio")
    for r in measure(args.variants, args.threads, args.runs):
        cells = (r["variant"], r["parameters"], r["bytes"], r["median_ms"], r["ratio"])
        print(" | ".join(str(c) for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
