"""The preprocessing contract shared by training, export and the device.

Everything that decides what the model sees lives here: the label order, the input size,
how a detected face box becomes a 48x48 grayscale crop, and how pixels become model input.
`emotion_edge_train` and `emotion_edge_export` import this module; it imports neither.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# FER2013's own label order (the `emotion` column, 0..6).
FER2013_LABELS: tuple[str, ...] = (
    "angry",
    "disgust",
    "fear",
    "happy",
    "sad",
    "surprise",
    "neutral",
)

# FER+ vote columns in fer2013new.csv, in file order, mapped to FER2013 label names.
# contempt has no FER2013 class; unknown and NF are not emotions.
FERPLUS_VOTE_COLUMNS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
    "unknown",
    "NF",
)
FERPLUS_TO_FER2013: dict[str, str] = {
    "neutral": "neutral",
    "happiness": "happy",
    "surprise": "surprise",
    "sadness": "sad",
    "anger": "angry",
    "disgust": "disgust",
    "fear": "fear",
}

INPUT_SIZE = 48
# The crop rule: how a detector box (x, y, w, h) becomes the model's square crop. A BlazeFace
# box is tighter than FER2013's crops and centred lower (on the eyes-to-chin region), so the
# crop is widened by FACE_CROP_SCALE and its centre moved up by FACE_CROP_SHIFT_Y box sides.
# Chosen on PublicTest by benchmarks/device_faces.py (FER2013 faces placed in camera-like
# frames, found by the daemon's detector): 1.15 / -0.05 scored 67.52 % there, the former
# 1.25 / 0 66.53 % (docs/benchmarks.md).
FACE_CROP_SCALE = 1.15
FACE_CROP_SHIFT_Y = -0.05
# Model input is pixels / 255 in [0, 1]; kept out of the model graph so the int8 model's
# input quantization is exactly (scale 1/255, zero point -128): int8 = pixel - 128.
INPUT_SCALE = 1.0 / 255.0


def resolve_labels(subset: Sequence[str] | None) -> tuple[str, ...]:
    """Return the label order for a class subset (FER2013 order kept), or all 7."""
    if not subset:
        return FER2013_LABELS
    unknown = [name for name in subset if name not in FER2013_LABELS]
    if unknown:
        raise ValueError(f"unknown emotion label(s) {unknown}; known: {list(FER2013_LABELS)}")
    wanted = set(subset)
    return tuple(name for name in FER2013_LABELS if name in wanted)


def square_crop_box(
    box: Sequence[float],
    frame_shape: Sequence[int],
    scale: float = FACE_CROP_SCALE,
    shift_y: float = FACE_CROP_SHIFT_Y,
) -> tuple[int, int, int, int]:
    """Square box (x0, y0, x1, y1) of side scale*max(w, h) around a face box (x, y, w, h),
    its centre moved down by shift_y * max(w, h) (up when negative).

    The result may extend past the frame; `crop_face` pads with edge pixels there.
    """
    x, y, w, h = (float(v) for v in box)
    side = max(w, h) * scale
    cx, cy = x + w / 2.0, y + h / 2.0 + shift_y * max(w, h)
    x0 = int(round(cx - side / 2.0))
    y0 = int(round(cy - side / 2.0))
    s = max(1, int(round(side)))
    del frame_shape  # kept in the signature so callers state which frame the box is in
    return x0, y0, x0 + s, y0 + s


def crop_face(
    gray: np.ndarray,
    box: Sequence[float],
    scale: float = FACE_CROP_SCALE,
    shift_y: float = FACE_CROP_SHIFT_Y,
    out_size: int = INPUT_SIZE,
) -> np.ndarray:
    """Crop a face from a grayscale frame into the model's 48x48 uint8 input image."""
    import cv2  # local: training imports this module where OpenCV may be absent

    if gray.ndim != 2:
        raise ValueError(f"crop_face needs a 2-D grayscale frame, got shape {gray.shape}")
    x0, y0, x1, y1 = square_crop_box(box, gray.shape, scale, shift_y)
    h, w = gray.shape
    pad_l, pad_t = max(0, -x0), max(0, -y0)
    pad_r, pad_b = max(0, x1 - w), max(0, y1 - h)
    crop = gray[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)]
    if crop.size == 0:
        return np.zeros((out_size, out_size), np.uint8)
    if pad_l or pad_t or pad_r or pad_b:
        crop = cv2.copyMakeBorder(crop, pad_t, pad_b, pad_l, pad_r, cv2.BORDER_REPLICATE)
    interp = cv2.INTER_AREA if crop.shape[0] > out_size else cv2.INTER_LINEAR
    return cv2.resize(crop, (out_size, out_size), interpolation=interp)


def eye_roll_deg(keypoints: np.ndarray | None) -> float:
    """The face's roll in degrees from BlazeFace keypoints (0, 1: the eyes as seen in the image,
    4, 5: the ears' tragions); positive: the eye line slopes down to the right of the image.

    0 (no turn) without keypoints, or when the eye line and the ear line disagree by more than
    ROLL_AGREE_DEG: keypoints that disagree were guessed on a face the net barely sees, and
    turning by a wrong angle costs more than not turning."""
    if keypoints is None or len(keypoints) < 6:
        return 0.0
    (rx, ry), (lx, ly) = keypoints[0], keypoints[1]
    (erx, ery), (elx, ely) = keypoints[4], keypoints[5]
    eyes = float(np.degrees(np.arctan2(ly - ry, lx - rx)))
    ears = float(np.degrees(np.arctan2(ely - ery, elx - erx)))
    return (eyes + ears) / 2.0 if abs(eyes - ears) <= ROLL_AGREE_DEG else 0.0


ROLL_AGREE_DEG = 10.0
# Roll (degrees) within which a crop is taken straight: FER2013's faces lean that much.
MIN_ALIGN_DEG = 15.0


def crop_face_aligned(
    gray: np.ndarray,
    box: Sequence[float],
    roll_deg: float,
    scale: float = FACE_CROP_SCALE,
    shift_y: float = FACE_CROP_SHIFT_Y,
) -> np.ndarray:
    """`crop_face` of a tilted face turned towards upright first: FER2013's own faces lean up
    to ~15 degrees (the model learned those), so only the roll beyond MIN_ALIGN_DEG is undone,
    about the face box's centre; the crop rule (side, and the centre shift along the upright
    face) is unchanged. Measured by benchmarks/roll_alignment.py (docs/benchmarks.md)."""
    import cv2

    excess = abs(roll_deg) - MIN_ALIGN_DEG
    if excess <= 0:
        return crop_face(gray, box, scale, shift_y)
    roll_deg = float(np.sign(roll_deg)) * excess
    x, y, w, h = (float(v) for v in box)
    size = max(w, h)
    # An upright square of 1.5 crop sides around the face holds the turned crop: taken at 2x
    # the input resolution, turned about the face's centre, then the crop square (moved along
    # the now upright face by shift_y) is area-resampled to 48 px: one interpolation at 2x,
    # no blur from resampling at the final size.
    big = INPUT_SIZE * 3
    half = size * 0.75
    outer = crop_face(
        gray, (x + w / 2 - half, y + h / 2 - half, 2 * half, 2 * half), scale, 0.0, big
    )
    m = cv2.getRotationMatrix2D((big / 2.0, big / 2.0), roll_deg, 1.0)
    upright = cv2.warpAffine(
        outer, m, (big, big), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    side = big / 1.5  # the crop square in outer px
    cy = big / 2.0 + shift_y * size * (big / (1.5 * size * scale))
    y0 = int(round(cy - side / 2.0))
    x0 = int(round((big - side) / 2.0))
    y0 = min(max(0, y0), big - int(side))
    crop = upright[y0 : y0 + int(side), x0 : x0 + int(side)]
    return cv2.resize(crop, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA)


def to_float_input(faces: np.ndarray) -> np.ndarray:
    """uint8 faces [N, 48, 48] (or [N, 48, 48, 1]) -> float32 model input [N, 48, 48, 1]."""
    x = np.asarray(faces, dtype=np.float32) * INPUT_SCALE
    return x.reshape(-1, INPUT_SIZE, INPUT_SIZE, 1)


def quantize_input(faces: np.ndarray, scale: float, zero_point: int, dtype=np.int8) -> np.ndarray:
    """uint8 faces -> quantized model input using the model's own input quantization."""
    x = to_float_input(faces)
    info = np.iinfo(dtype)
    q = np.round(x / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)
