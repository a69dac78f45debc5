"""Model metadata sidecar: `<model>.json` beside `<model>.tflite`.

The exporter (emotion_edge_export) writes it; the device refuses a model whose file does not
match the sha256 recorded here, or whose tensors disagree with the recorded labels and input.

Format "emotion-edge-model/1":
    {
      "format": "emotion-edge-model/1",
      "model_file": "emotion_int8.tflite",
      "sha256": "<hex of the .tflite bytes>",
      "version": "<free text, e.g. 2026-12-03+ptq.6d983d6b>",
      "labels": ["angry", ...],            # output order
      "input": {"size": 48, "channels": 1, "dtype": "int8", "scale": 0.0039..,
                "zero_point": -128, "normalization": "pixel / 255",
                "face_crop_scale": 1.15, "face_crop_shift_y": -0.05},
      "inference": {"flip_average": false},  # optional: average each face with its mirror
      "output": {"dtype": "int8", "scale": .., "zero_point": .., "activation": "softmax"},
      "training": {...}, "metrics": {...}   # free-form provenance
    }
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from emotion_edge.errors import ModelError
from emotion_edge.models import sha256_file
from emotion_edge.preprocess import (
    FACE_CROP_SCALE,
    FACE_CROP_SHIFT_Y,
    FER2013_LABELS,
    INPUT_SIZE,
)

FORMAT = "emotion-edge-model/1"


@dataclass(frozen=True)
class ModelMetadata:
    model_file: Path
    sha256: str
    version: str
    labels: tuple[str, ...]
    input_size: int = INPUT_SIZE
    input_dtype: str = "int8"
    input_scale: float = 1.0 / 255.0
    input_zero_point: int = -128
    face_crop_scale: float = FACE_CROP_SCALE
    face_crop_shift_y: float = FACE_CROP_SHIFT_Y
    # chosen at export on PublicTest: the mirror image is a second, independent look at the face
    flip_average: bool = False
    extra: dict = field(default_factory=dict, compare=False, repr=False)


def metadata_path(model_path: Path) -> Path:
    return Path(model_path).with_suffix(".json")


def load_metadata(model_path: str | Path, verify: bool = True) -> ModelMetadata:
    """Read and check the sidecar of a .tflite model; raise ModelError naming the problem."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"model file not found: {model_path}")
    meta_file = metadata_path(model_path)
    if not meta_file.is_file():
        raise ModelError(f"{model_path}: metadata file {meta_file.name} is missing beside it")
    try:
        raw = json.loads(meta_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{meta_file}: not valid JSON ({exc})") from None
    if raw.get("format") != FORMAT:
        raise ModelError(f"{meta_file}: format {raw.get('format')!r}, expected {FORMAT!r}")
    try:
        labels = tuple(raw["labels"])
        inp = raw["input"]
        meta = ModelMetadata(
            model_file=model_path,
            sha256=str(raw["sha256"]),
            version=str(raw.get("version", "unknown")),
            labels=labels,
            input_size=int(inp.get("size", INPUT_SIZE)),
            input_dtype=str(inp.get("dtype", "int8")),
            input_scale=float(inp["scale"]),
            input_zero_point=int(inp["zero_point"]),
            face_crop_scale=float(inp.get("face_crop_scale", FACE_CROP_SCALE)),
            face_crop_shift_y=float(inp.get("face_crop_shift_y", FACE_CROP_SHIFT_Y)),
            flip_average=_flag(raw.get("inference", {}).get("flip_average", False)),
            extra=raw,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelError(f"{meta_file}: missing or bad field ({exc})") from None
    unknown = [lab for lab in labels if lab not in FER2013_LABELS]
    if not labels or unknown:
        raise ModelError(f"{meta_file}: bad labels {list(labels)}")
    if verify:
        actual = sha256_file(model_path)
        if actual != meta.sha256:
            raise ModelError(
                f"{model_path}: sha256 {actual[:12]}… does not match its metadata "
                f"({meta.sha256[:12]}…); the model file was changed or corrupted"
            )
    return meta


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"inference.flip_average must be true or false, not {value!r}")
    return value


def write_metadata(
    model_path: Path,
    labels: tuple[str, ...],
    input_q: tuple[float, int],
    output_q: tuple[float, int],
    version: str,
    extra: dict | None = None,
    input_dtype: str = "int8",
    flip_average: bool = False,
) -> Path:
    """Write the sidecar for a .tflite file (sha256 computed from the file itself)."""
    model_path = Path(model_path)
    doc = {
        "format": FORMAT,
        "model_file": model_path.name,
        "sha256": sha256_file(model_path),
        "size_bytes": model_path.stat().st_size,
        "version": version,
        "labels": list(labels),
        "input": {
            "size": INPUT_SIZE,
            "channels": 1,
            "dtype": input_dtype,
            "scale": float(input_q[0]),
            "zero_point": int(input_q[1]),
            "normalization": "pixel / 255",
            "face_crop_scale": FACE_CROP_SCALE,
            "face_crop_shift_y": FACE_CROP_SHIFT_Y,
        },
        "output": {
            "dtype": "int8",
            "scale": float(output_q[0]),
            "zero_point": int(output_q[1]),
            "activation": "softmax",
        },
        "inference": {"flip_average": bool(flip_average)},
    }
    doc.update(extra or {})
    out = metadata_path(model_path)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    return out
