"""One place that finds a TFLite interpreter: LiteRT (ai-edge-litert), else tflite-runtime."""

from __future__ import annotations

import os

from emotion_edge.errors import ModelError


def interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter
    except ImportError:
        raise ModelError(
            "no TFLite interpreter: install ai-edge-litert (pip install 'emotion-edge[device]')"
        ) from None


def make_interpreter(
    model_path: str | None = None,
    model_content: bytes | None = None,
    num_threads: int | None = None,
    name: str = "",
):
    """An allocated interpreter; a corrupt file becomes a ModelError naming it (`name` says
    where in-memory `model_content` came from)."""
    cls = interpreter_class()
    what = model_path or name or "model bytes"
    if model_path is not None:
        try:
            size = os.path.getsize(model_path)
        except OSError as exc:
            raise ModelError(f"{what}: cannot read the model ({exc.strerror or exc})") from None
        if size == 0:
            raise ModelError(f"{what}: empty file, not a TFLite model")
    if model_content is not None and len(model_content) == 0:
        raise ModelError(f"{what}: empty file, not a TFLite model")
    try:
        interp = cls(model_path=model_path, model_content=model_content, num_threads=num_threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{what}: not a valid TFLite model ({exc})") from None
    return interp
