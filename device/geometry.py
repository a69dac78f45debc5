"""Face boxes (x, y, w, h in frame pixels): overlap, and when two boxes are one face.

Detector views at different scales frame one face tighter or looser, by up to
SAME_FACE_MAX_RATIO in size; the detector's fusion and memory and the tracker's duplicate merge
all treat a box inside another as the same face. A box much smaller than the one around it is
that face only in the bigger box's core (an eye or a mouth mistaken for a face by an upscaled
view); in the margin of a close face's loose box it is another person, behind.
"""

from __future__ import annotations

Box = tuple[float, float, float, float]

SAME_FACE_MAX_RATIO = 2.5
CORE = 0.6  # the central share of a box's width and height


def intersection(a: Box, b: Box) -> float:
    """Area the two boxes share."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy


def iou(a: Box, b: Box) -> float:
    """Intersection over union."""
    inter = intersection(a, b)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def nested_same_face(a: Box, b: Box, inside: float) -> bool:
    """One box lies mostly (more than `inside` of the smaller's area) inside the other, as the
    same face (same_face_nested): the same face framed tighter or looser by another view."""
    small = min(a[2] * a[3], b[2] * b[3])
    return small > 0 and intersection(a, b) / small > inside and same_face_nested(a, b)


def same_face_nested(a: Box, b: Box) -> bool:
    """Whether the smaller of two boxes, where it lies inside the other, is the same face."""
    small, big = (a, b) if a[2] * a[3] <= b[2] * b[3] else (b, a)
    sw, sh, bw, bh = small[2], small[3], big[2], big[3]
    if max(bw, bh) <= SAME_FACE_MAX_RATIO * max(sw, sh, 1e-6):
        return True
    cx, cy = small[0] + sw / 2, small[1] + sh / 2
    mx, my = bw * (1 - CORE) / 2, bh * (1 - CORE) / 2
    return big[0] + mx <= cx <= big[0] + bw - mx and big[1] + my <= cy <= big[1] + bh - my
