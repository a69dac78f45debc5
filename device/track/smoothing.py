"""Per-face exponential moving average of emotion probabilities.

The weight of a new observation depends on the time since the previous one,
alpha = 1 - exp(-dt / tau), so smoothing behaves the same whether the pipeline runs at 30 fps
or has degraded to 8 fps. `EmotionSmoother` restarts a face's average at a change point of its
raw evidence (track/change_point.py), so a new expression is not averaged with the old one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from emotion_edge.track.change_point import ChangePointDetector


class EmaSmoother:
    def __init__(self, tau_s: float = 0.5):
        if tau_s < 0:
            raise ValueError("tau_s must be >= 0")
        self.tau_s = tau_s
        self._state: dict[int, tuple[np.ndarray, float]] = {}

    def update(self, key: int, probs: np.ndarray, ts: float) -> np.ndarray:
        """Blend `probs` into the key's average; the first observation is taken as is."""
        probs = np.asarray(probs, np.float32)
        prev = self._state.get(key)
        if prev is None or self.tau_s == 0:
            out = probs.copy()
        else:
            avg, last_ts = prev
            dt = max(0.0, ts - last_ts)
            alpha = 1.0 - math.exp(-dt / self.tau_s)
            out = alpha * probs + (1.0 - alpha) * avg
        total = float(out.sum())
        if total > 0:
            out = out / total
        self._state[key] = (out, ts)
        return out

    def reset(self, key: int, probs: np.ndarray, ts: float) -> None:
        """Start the key's average over from `probs` at `ts`."""
        self._state[key] = (np.asarray(probs, np.float32).copy(), ts)

    def get(self, key: int) -> np.ndarray | None:
        entry = self._state.get(key)
        return None if entry is None else entry[0]

    def forget(self, keys: Iterable[int]) -> None:
        for k in keys:
            self._state.pop(k, None)

    def __len__(self) -> int:
        return len(self._state)


class EmotionSmoother:
    """The per-face average that the event engine judges, restarted at change points."""

    def __init__(self, tau_s: float, change_distance: float) -> None:
        self.ema = EmaSmoother(tau_s)
        self.changes = ChangePointDetector(change_distance)

    def update(self, key: int, probs: np.ndarray, ts: float) -> np.ndarray:
        """Blend one frame's raw probabilities in (from the new evidence after a step)."""
        restart = self.changes.update(key, probs, ts)
        if restart is not None:
            self.ema.reset(key, restart, ts)
        return self.ema.update(key, probs, ts)

    def get(self, key: int) -> np.ndarray | None:
        return self.ema.get(key)

    def last_change(self, key: int) -> float | None:
        """Capture time of the key's latest change point, or None."""
        return self.changes.last(key)

    def forget(self, keys: Iterable[int]) -> None:
        keys = list(keys)
        self.ema.forget(keys)
        self.changes.forget(keys)
