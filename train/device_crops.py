"""FER2013 faces re-cropped the way the daemon crops them: found by its detector, cut by its rule.

FER2013's own crops come from another detector and vary in framing; the daemon's crops come
from BlazeFace boxes and `emotion_edge.preprocess.crop_face`. A model trained on the first
framing alone loses accuracy on the second (benchmarks/device_faces.py measures how much).
Training on both closes that gap: each image is placed, upscaled, in a camera-like frame,
detected, and cropped by the crop rule of the model being trained; images the detector misses
keep their dataset crop (and are flagged).

The result is cached per data location, detector and crop rule (it takes a few minutes and
is deterministic), never committed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
from emotion_edge.preprocess import FACE_CROP_SCALE, FACE_CROP_SHIFT_Y, crop_face

log = logging.getLogger(__name__)

FRAME_W, FRAME_H = 640, 480
FACE_SIDE = 240  # px in the 640x480 frame: a face at kiosk distance, detected ~94 % of the time
CACHE_VERSION = 1


def _background(seed: int) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (FRAME_H, FRAME_W)).astype(np.uint8)
    smooth = cv2.GaussianBlur(noise, (0, 0), rng.uniform(6, 20))
    return cv2.normalize(smooth, None, 40, 200, cv2.NORM_MINMAX)


def device_framed(
    images: np.ndarray,
    scale: float = FACE_CROP_SCALE,
    shift_y: float = FACE_CROP_SHIFT_Y,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(re-cropped uint8 [N, 48, 48], found bool [N]) with the daemon's default detector."""
    import cv2
    from emotion_edge.config import DetectorConfig
    from emotion_edge.detect.detector import make_detector

    detector = make_detector(DetectorConfig())
    rng = np.random.default_rng(seed)
    bgs = [_background(seed + k) for k in range(8)]
    out = images.copy()
    found = np.zeros(len(images), bool)
    for i, face in enumerate(images):
        x = int(rng.integers(0, FRAME_W - FACE_SIDE + 1))
        y = int(rng.integers(0, FRAME_H - FACE_SIDE + 1))
        frame = bgs[i % len(bgs)].copy()
        frame[y : y + FACE_SIDE, x : x + FACE_SIDE] = cv2.resize(
            face, (FACE_SIDE, FACE_SIDE), interpolation=cv2.INTER_CUBIC
        )
        best = None
        for d in detector.detect(frame):
            bx, by, bw, bh = d.box
            cx, cy = bx + bw / 2, by + bh / 2
            inside = x <= cx <= x + FACE_SIDE and y <= cy <= y + FACE_SIDE
            if inside and (best is None or d.score > best.score):
                best = d
        if best is not None:
            out[i] = crop_face(frame, best.box, scale, shift_y)
            found[i] = True
        if (i + 1) % 5000 == 0:
            log.info(
                "device-framed crops: %d / %d (%.1f %% found)",
                i + 1,
                len(images),
                100 * found[: i + 1].mean(),
            )
    return out, found


def cached_device_framed(
    images: np.ndarray, fingerprint: str, scale: float, shift_y: float
) -> tuple[np.ndarray, np.ndarray]:
    """`device_framed`, cached under ~/.cache/emotion-edge (or $EMOTION_EDGE_CACHE)."""
    from emotion_edge.detect.detector import BLAZEFACE

    key = f"{fingerprint}|{BLAZEFACE['blazeface'].sha256}|{scale:g}|{shift_y:g}|v{CACHE_VERSION}"
    name = "device-crops-" + hashlib.sha1(key.encode()).hexdigest()[:12] + ".npz"
    root = Path(
        os.environ.get("EMOTION_EDGE_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "emotion-edge"
    )
    path = root / name
    if path.is_file():
        with np.load(path) as z:
            if len(z["images"]) == len(images):
                return z["images"], z["found"]
    log.info(
        "re-cropping %d images through the daemon's detector (cached in %s)", len(images), path
    )
    crops, found = device_framed(images, scale, shift_y)
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, images=crops, found=found)
    tmp.replace(path)
    return crops, found
