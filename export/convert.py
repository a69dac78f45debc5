"""Convert a Keras model (float or QAT) to a fully int8 TFLite file with its metadata sidecar."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from emotion_edge.classify.model_meta import ModelMetadata, write_metadata
from emotion_edge.preprocess import to_float_input
from emotion_edge_train.tf_env import tf


def convert_int8(model, representative: np.ndarray | None, n_calibration: int = 500) -> bytes:
    """Fully int8 TFLite (int8 input and output, TFLITE_BUILTINS_INT8 ops only).

    `representative` (uint8 faces [N, 48, 48]) calibrates activation ranges; a QAT model
    carries its own ranges and may pass None.
    """
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if representative is not None:
        faces = representative[:n_calibration]

        def gen() -> Iterator[list[np.ndarray]]:
            for face in faces:
                yield [to_float_input(face[None])]

        converter.representative_dataset = gen
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def tensor_quantization(tflite_bytes: bytes) -> tuple[tuple[float, int], tuple[float, int]]:
    """(input (scale, zero_point), output (scale, zero_point)) read back from the file.

    Only reads the tensor details (the metadata is made from them, so EmotionClassifier,
    which checks a model against its metadata, cannot be asked); nothing is invoked here:
    inference goes through EmotionClassifier (see verify.py).
    """
    from emotion_edge.classify.litert import make_interpreter

    interp = make_interpreter(model_content=tflite_bytes)
    inp = interp.get_input_details()[0]["quantization"]
    out = interp.get_output_details()[0]["quantization"]
    return (float(inp[0]), int(inp[1])), (float(out[0]), int(out[1]))


def int8_metadata(
    tflite_bytes: bytes, labels: tuple[str, ...], version: str, name: str = "model.tflite"
) -> ModelMetadata:
    """The metadata `write_metadata` records for a `convert_int8` file, without writing a
    sidecar: for `EmotionClassifier.from_bytes` on a model just converted."""
    (in_scale, in_zero), _ = tensor_quantization(tflite_bytes)
    return ModelMetadata(
        model_file=Path(name),
        sha256=hashlib.sha256(tflite_bytes).hexdigest(),
        version=version,
        labels=tuple(labels),
        input_dtype="int8",
        input_scale=in_scale,
        input_zero_point=in_zero,
    )


def export_int8(
    model,
    representative: np.ndarray | None,
    out_path: str | Path,
    labels: tuple[str, ...],
    version: str,
    extra: dict | None = None,
) -> Path:
    """Write `out_path` (.tflite) and its `.json` metadata sidecar; return the model path."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    data = convert_int8(model, representative)
    out_path.write_bytes(data)
    in_q, out_q = tensor_quantization(data)
    write_metadata(out_path, labels, in_q, out_q, version, extra)
    return out_path
