"""One place that finds a TFLite interpreter: LiteRT (ai-edge-litert), else tflite-runtime."""

from __future__ import annotations

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
):
    """An allocated interpreter; a corrupt file becomes a ModelError naming it."""
    cls = interpreter_class()
    try:
        interp = cls(model_path=model_path, model_content=model_content, num_threads=num_threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        what = model_path or "model bytes"
        raise ModelError(f"{what}: not a valid TFLite model ({exc})") from None
    return interp
