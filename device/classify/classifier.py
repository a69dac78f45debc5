"""Int8 emotion classifier in LiteRT: all faces of a frame in one interpreter call.

The model and its metadata sidecar are checked together at load: the sha256 (by
`load_metadata`), then the tensors against the metadata (input shape and dtype, input
quantization, output size vs labels). A model that disagrees is refused with ModelError
rather than producing confident nonsense.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from emotion_edge.classify.auto_select import PAIR, SINGLE, ModelSelector
from emotion_edge.classify.cpu_features import DotProductSupport, int8_dot_product
from emotion_edge.classify.litert import make_interpreter
from emotion_edge.classify.model_meta import ModelMetadata, load_metadata
from emotion_edge.config import ClassifierConfig
from emotion_edge.errors import ModelError
from emotion_edge.models import MODELS_DIR
from emotion_edge.preprocess import crop_face_aligned, quantize_input

log = logging.getLogger(__name__)

DEFAULT_MODEL = MODELS_DIR / "emotion_int8.tflite"  # the pair: two nets averaged in one graph
DEFAULT_SINGLE_MODEL = MODELS_DIR / "emotion_int8_single.tflite"  # one of them, ~half the cost
_DTYPES = {"int8": np.int8, "uint8": np.uint8, "float32": np.float32}


def resolve_model_path(model_path: str | Path | None) -> Path:
    """An empty path means the model shipped in the package (models/emotion_int8.tflite)."""
    return Path(model_path).expanduser() if model_path else DEFAULT_MODEL


class FaceClassifier(Protocol):
    """What the pipeline needs from an emotion classifier."""

    labels: tuple[str, ...]
    version: str
    crop_scale: float  # the crop rule (face box -> model input) the model expects
    crop_shift_y: float

    def classify(
        self,
        gray: np.ndarray,
        boxes: Sequence[Sequence[float]],
        rolls: Sequence[float] | None = None,
    ) -> np.ndarray: ...


class EmotionClassifier:
    """The device's one inference path for the emotion model: the daemon, export's verification
    and the benchmarks all run a model through this class (`from_bytes` for in-memory files)."""

    def __init__(
        self,
        model_path: str | Path,
        num_threads: int = 2,
        max_batch: int = 8,
        max_cached_batches: int = 8,
        flip_average: bool | None = None,
    ):
        path = Path(model_path)
        if not path.is_file():
            hint = ""
            if path == DEFAULT_MODEL:
                hint = (
                    " (the trained model is not installed in this package; pass --model "
                    "PATH or set [classifier] model_path)"
                )
            raise ModelError(f"emotion model not found: {path}{hint}")
        self._setup(
            path.read_bytes(),
            load_metadata(path),
            str(path),
            num_threads,
            max_batch,
            max_cached_batches,
            flip_average,
        )

    @classmethod
    def from_bytes(
        cls,
        content: bytes,
        meta: ModelMetadata,
        *,
        name: str = "model bytes",
        num_threads: int = 2,
        max_batch: int = 8,
        max_cached_batches: int = 8,
        flip_average: bool | None = None,
    ) -> EmotionClassifier:
        """A classifier for a model held in memory (e.g. just converted), checked against
        `meta` exactly as a file and its sidecar are."""
        self = cls.__new__(cls)
        self._setup(content, meta, name, num_threads, max_batch, max_cached_batches, flip_average)
        return self

    def _setup(
        self,
        content: bytes,
        meta: ModelMetadata,
        name: str,
        num_threads: int,
        max_batch: int,
        max_cached_batches: int,
        flip_average: bool | None,
    ) -> None:
        self.meta = meta
        self.name = name
        self.labels = meta.labels
        self.version = meta.version
        self.crop_scale = meta.face_crop_scale
        self.crop_shift_y = meta.face_crop_shift_y
        # None: what the model's sidecar says (decided at export on PublicTest)
        self.flip_average = meta.flip_average if flip_average is None else bool(flip_average)
        self.num_threads = num_threads
        self.max_batch = max(1, int(max_batch))
        self._content = content
        self._cache: OrderedDict[int, object] = OrderedDict()
        self._max_cached = max(1, max_cached_batches)
        self._lock = threading.Lock()
        interp = make_interpreter(model_content=content, num_threads=num_threads, name=name)
        self._check(interp, name)
        self._cache[1] = interp

    # -- model checks -------------------------------------------------------------------------

    def _check(self, interp, path: str) -> None:
        ins, outs = interp.get_input_details(), interp.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise ModelError(
                f"{path}: expected 1 input and 1 output tensor, got {len(ins)} and {len(outs)}"
            )
        inp, out = ins[0], outs[0]
        size = self.meta.input_size
        shape = [int(v) for v in inp["shape"]]
        if shape[1:] != [size, size, 1]:
            raise ModelError(f"{path}: input shape {shape}, metadata says [N, {size}, {size}, 1]")
        want = _DTYPES.get(self.meta.input_dtype)
        if want is None or np.dtype(inp["dtype"]) != np.dtype(want):
            raise ModelError(
                f"{path}: input dtype {np.dtype(inp['dtype']).name}, "
                f"metadata says {self.meta.input_dtype}"
            )
        scale, zero = inp["quantization"]
        if want is not np.float32 and (
            not np.isclose(scale, self.meta.input_scale, rtol=1e-4)
            or int(zero) != self.meta.input_zero_point
        ):
            raise ModelError(
                f"{path}: input quantization ({scale:.6g}, {zero}) differs from "
                f"metadata ({self.meta.input_scale:.6g}, "
                f"{self.meta.input_zero_point})"
            )
        n_out = int(out["shape"][-1])
        if n_out != len(self.labels):
            raise ModelError(
                f"{path}: output has {n_out} classes, metadata lists "
                f"{len(self.labels)} labels {list(self.labels)}"
            )
        self._in_index, self._out_index = inp["index"], out["index"]
        self._in_dtype = np.dtype(inp["dtype"])
        self._in_q = (float(scale), int(zero))
        self._out_dtype = np.dtype(out["dtype"])
        self._out_q = tuple(out["quantization"])
        # the batch dim must be resizable for one call per frame; else fall back to one-by-one
        sig = inp.get("shape_signature")
        self.dynamic_batch = bool(sig is not None and len(sig) and int(sig[0]) == -1)
        if not self.dynamic_batch:
            log.info("model %s has a fixed batch size; faces are classified one call each", path)
            self.max_batch = 1

    @property
    def input_dtype(self) -> np.dtype:
        """The model's input tensor dtype (int8 for the shipped model)."""
        return self._in_dtype

    @property
    def output_dtype(self) -> np.dtype:
        """The model's output tensor dtype (int8 for the shipped model)."""
        return self._out_dtype

    # -- inference ----------------------------------------------------------------------------

    def _interpreter(self, batch: int):
        interp = self._cache.get(batch)
        if interp is not None:
            self._cache.move_to_end(batch)
            return interp
        interp = make_interpreter(
            model_content=self._content, num_threads=self.num_threads, name=self.name
        )
        interp.resize_tensor_input(
            self._in_index, [batch, self.meta.input_size, self.meta.input_size, 1], strict=True
        )
        interp.allocate_tensors()
        self._cache[batch] = interp
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
        return interp

    def preprocess(
        self,
        gray: np.ndarray,
        boxes: Sequence[Sequence[float]],
        rolls: Sequence[float] | None = None,
    ) -> np.ndarray:
        """uint8 face crops [N, 48, 48] as in training; a face rolled by `rolls[i]` degrees
        (from its eye keypoints) is turned upright first (preprocess.crop_face_aligned)."""
        if not len(boxes):
            return np.zeros((0, self.meta.input_size, self.meta.input_size), np.uint8)
        rolls = rolls if rolls is not None else [0.0] * len(boxes)
        return np.stack(
            [
                crop_face_aligned(gray, b, r, self.crop_scale, self.crop_shift_y)
                for b, r in zip(boxes, rolls, strict=True)
            ]
        )

    def predict_faces(self, faces: np.ndarray) -> np.ndarray:
        """Probabilities [N, n_labels] for uint8 crops [N, 48, 48]."""
        n = len(faces)
        if n == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        if self._in_dtype == np.float32:
            x_all = (np.asarray(faces, np.float32) * self.meta.input_scale).reshape(
                n, self.meta.input_size, self.meta.input_size, 1
            )
        else:
            x_all = quantize_input(faces, self._in_q[0], self._in_q[1], self._in_dtype.type)
        outs = []
        with self._lock:  # an interpreter is not thread-safe
            for start in range(0, n, self.max_batch):
                x = x_all[start : start + self.max_batch]
                if self.flip_average:  # the faces and their mirrors in the same call
                    x = np.concatenate([x, x[:, :, ::-1]])
                out = self._dequantize(self._invoke(x))
                if self.flip_average:
                    half = len(out) // 2
                    out = (out[:half] + out[half:]) / 2.0
                outs.append(out)
        return np.concatenate(outs).reshape(n, -1)

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        if not self.dynamic_batch and len(x) > 1:  # a fixed-batch model takes one row a call
            return np.concatenate([self._invoke(x[i : i + 1]) for i in range(len(x))])
        interp = self._interpreter(len(x))
        interp.set_tensor(self._in_index, np.ascontiguousarray(x))
        interp.invoke()
        return np.array(interp.get_tensor(self._out_index))

    def _dequantize(self, raw: np.ndarray) -> np.ndarray:
        """Output tensor -> probabilities that sum to 1 per row."""
        if self._out_dtype == np.float32:
            probs = raw.astype(np.float32)
        else:
            scale, zero = self._out_q
            probs = (raw.astype(np.float32) - zero) * scale
        probs = np.clip(probs.reshape(len(raw), -1), 0.0, None)
        total = probs.sum(axis=1, keepdims=True)
        # an all-zero row (possible after int8 rounding) becomes uniform, not NaN
        return np.where(total > 0, probs / np.maximum(total, 1e-12), 1.0 / probs.shape[1])

    def classify(
        self,
        gray: np.ndarray,
        boxes: Sequence[Sequence[float]],
        rolls: Sequence[float] | None = None,
    ) -> np.ndarray:
        """Crop every box from one grayscale frame and classify them in one call."""
        return self.predict_faces(self.preprocess(gray, boxes, rolls))


def flip_average_setting(mode: str) -> bool | None:
    """A user's flip-averaging choice (config.FLIP_AVERAGE_MODES) -> the classifier's argument
    (None: as the model's sidecar says)."""
    return {"model": None, "on": True, "off": False}[mode]


def load_classifier(
    cfg: ClassifierConfig,
    budget_ms: float | None = None,
    dot_product: DotProductSupport | None = None,
) -> ModelSelector:
    """From a `config.ClassifierConfig`: the model(s) `cfg.model` names behind one
    FaceClassifier. `budget_ms` (the daemon's [pipeline] budget_ms) lets "auto" switch to the
    single net when the pair would break it; None (still photos) never switches for time.
    `dot_product`: the CPU's int8 dot-product support (None: read /proc/cpuinfo)."""
    kw = dict(
        num_threads=cfg.num_threads,
        max_batch=cfg.max_batch,
        flip_average=flip_average_setting(cfg.flip_average),
    )
    single_path = Path(cfg.single_model_path).expanduser() if cfg.single_model_path else None
    if cfg.model == "single":
        return ModelSelector(
            {SINGLE: EmotionClassifier(single_path or DEFAULT_SINGLE_MODEL, **kw)}, "single"
        )
    models = {PAIR: EmotionClassifier(resolve_model_path(cfg.model_path), **kw)}
    if cfg.model == "pair":
        return ModelSelector(models, "pair")
    why = None
    if single_path is None and cfg.model_path:
        why = "model_path set and single_model_path empty: that file alone"
    elif single_path is None and not DEFAULT_SINGLE_MODEL.is_file():
        why = f"{DEFAULT_SINGLE_MODEL.name} is not installed: the pair alone"
        log.warning("classifier auto: %s", why)
    else:
        models[SINGLE] = EmotionClassifier(single_path or DEFAULT_SINGLE_MODEL, **kw)
        if dot_product is None:
            dot_product = int8_dot_product()
    selector = ModelSelector(models, "auto", budget_ms=budget_ms, dot_product=dot_product)
    if why:
        selector.reason = f"auto: {why}"
    return selector
