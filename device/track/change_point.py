"""Change points in one face's raw emotion evidence.

A face whose expression changes gives the classifier a different picture from one frame (or a
few) to the next: the mean raw probabilities of the last `recent_s` differ from those of the
`history_s` before them. A face holding an expression gives the same picture, moved and
resampled, so its raw probabilities wander without such a step. Telling the two apart lets the
event engine react quickly after a step (a true change) and stay strict without one (flicker),
and lets the smoother forget the old expression at once instead of carrying its residue for
a few time constants.

The distance is the total variation between the two means (half their L1 distance, 0..1: the
probability mass that moved).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import numpy as np

RECENT_S = 0.4  # the new evidence: long enough to outvote one odd frame at 10-30 fps
HISTORY_S = 1.5  # what it is compared with: the expression held before
MIN_FRAMES = 2  # frames each window holds at least


def _moved(a: np.ndarray, b: np.ndarray) -> float:
    """Total variation between two distributions: the probability mass that moved."""
    return 0.5 * float(np.abs(a - b).sum())


class ChangePointDetector:
    """Per face key: is the newest raw evidence a step away from what came before?"""

    def __init__(
        self, distance: float, recent_s: float = RECENT_S, history_s: float = HISTORY_S
    ) -> None:
        self.distance = distance
        self.recent_s = recent_s
        self.history_s = history_s
        self._hist: dict[int, deque[tuple[float, np.ndarray]]] = {}
        self._last: dict[int, float] = {}

    def update(self, key: int, raw: np.ndarray, ts: float) -> np.ndarray | None:
        """Add one frame's raw probabilities; at a change point return the mean of the recent
        evidence (what the face shows now), else None."""
        if self.distance >= 1.0:
            return None  # off: a total variation never exceeds 1
        hist = self._hist.setdefault(key, deque())
        hist.append((ts, np.asarray(raw, np.float32)))
        items = list(hist)
        # at a low frame rate (a loaded Pi, detection every Nth frame) the windows stretch to
        # hold MIN_FRAMES frames each
        n_recent = max(MIN_FRAMES, sum(1 for t, _ in items if ts - t <= self.recent_s))
        span = ts - items[-n_recent][0] if len(items) >= n_recent else self.recent_s
        while len(hist) > 2 * MIN_FRAMES and ts - hist[0][0] > span + self.history_s:
            hist.popleft()
        if len(items) < n_recent + MIN_FRAMES:
            return None  # too little evidence
        start = items[-n_recent][0]
        recent = [p for _, p in items[-n_recent:]]
        older = [p for t, p in items[:-n_recent] if start - t <= self.history_s]
        if len(older) < MIN_FRAMES:
            return None
        if ts - self._last.get(key, -np.inf) <= span:
            return None  # the same step, still inside the recent window
        now, before = np.mean(recent, axis=0), np.mean(older, axis=0)
        if _moved(now, before) < self.distance:
            return None
        self._last[key] = ts
        # the frames that took the step (the recent window may still hold some from before it)
        moved = [(t, p) for t, p in items[-n_recent:] if _moved(p, before) >= self.distance]
        if moved:
            now = np.mean([p for _, p in moved], axis=0)
        # the step is told once: only the new evidence stays as history
        self._hist[key] = deque(moved or items[-n_recent:])
        total = float(now.sum())
        return now / total if total > 0 else now

    def last(self, key: int) -> float | None:
        """Time of the key's latest change point, or None."""
        return self._last.get(key)

    def forget(self, keys: Iterable[int]) -> None:
        for k in keys:
            self._hist.pop(k, None)
            self._last.pop(k, None)
