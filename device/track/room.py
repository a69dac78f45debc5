"""The room as a whole: what a shop, a museum or a home automation wants from the faces in view.

One place computes it, so the state payload, the live view and Home Assistant's sensors agree:
the number of faces in view, the mean of each emotion's probability over those faces, and the
room's leading emotion (the label with the highest mean). With no face in view the means are
absent and the leading emotion is null, rather than a made-up "neutral".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def room_summary(probs: Sequence[np.ndarray], labels: Sequence[str]) -> dict:
    """`probs`: one probability vector per face in view (smoothed, label order `labels`).

    Returns {"face_count", "emotion", "confidence", "probabilities"}: `emotion` is the label
    with the highest mean probability (null with no face), `confidence` that mean, and
    `probabilities` every label's mean (empty with no face)."""
    n = len(probs)
    if n == 0:
        return {"face_count": 0, "emotion": None, "confidence": None, "probabilities": {}}
    mean = np.mean(np.stack([np.asarray(p, np.float64) for p in probs]), axis=0)
    lead = int(np.argmax(mean))
    return {
        "face_count": n,
        "emotion": labels[lead],
        "confidence": round(float(mean[lead]), 4),
        "probabilities": {lab: round(float(v), 4) for lab, v in zip(labels, mean, strict=True)},
    }
