"""Per-face exponential moving average of emotion probabilities.

The weight of a new observation depends on the time since the previous one,
alpha = 1 - exp(-dt / tau), so smoothing behaves the same whether the pipeline runs at 30 fps
or has degraded to 8 fps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


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

    def get(self, key: int) -> np.ndarray | None:
        entry = self._state.get(key)
        return None if entry is None else entry[0]

    def forget(self, keys: Iterable[int]) -> None:
        for k in keys:
            self._state.pop(k, None)

    def __len__(self) -> int:
        return len(self._state)
