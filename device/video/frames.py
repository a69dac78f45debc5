"""One frame from a source: the grayscale image detection uses, its number and capture time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Frame:
    image: np.ndarray  # uint8 grayscale HxW: what detection and classification use
    index: int  # frame number at the source (counts frames later dropped as stale)
    timestamp: float  # time.time() at capture
    color: np.ndarray | None = None  # BGR when the source has it (only for opt-in snapshots)
    name: str | None = None  # file name when the frame is one photo of a folder (images source)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        h, w = self.image.shape[:2]
        return w, h


def to_gray(img: np.ndarray) -> np.ndarray:
    """uint8 grayscale from a gray, BGR or BGRA OpenCV image."""
    import cv2

    if img.ndim == 2:
        return img
    if img.ndim == 3 and img.shape[2] == 1:
        return img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"unsupported image shape {img.shape}")
