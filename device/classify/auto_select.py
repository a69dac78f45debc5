"""`[classifier] model = "auto"`: the two-net file while it fits the frame budget, else the
one-net file, chosen per frame from measured costs.

`ModelSelector` is a `FaceClassifier` holding one or two `EmotionClassifier`s ("pair": the
shipped average of two nets, "single": one of them, ~half the cost per face). It keeps a cost
model per model (a per-call overhead plus a per-face cost, measured at start-up, then scaled by
an EMA of how the running model's measured time compares with its start-up figure: a loaded
CPU slows both) and the other stages' time per frame (`observe_frame_ms`, from the pipeline).
Before each frame it predicts the pair's cost for the faces in view:

- pair running and `other + pair(n) > budget_ms` on `drop_frames` frames in a row: switch to
  the single net (`other` includes cropping the faces, which costs the same for both models;
  the first `warmup_frames` frames, which allocate buffers, are not counted);
- single running: back to the pair only after `recover_frames` frames in a row on which
  `other + pair(n) <= recover_ratio * budget_ms` (hysteresis: a face count on the edge does
  not flap the model). A pair that breaks the budget again within `10 x recover_frames`
  frames of coming back doubles the frames the next return needs (up to 8x), so a budget
  that the pair only just fits costs a few switches, not one every second.
- "auto" on a CPU without int8 dot-product instructions: the single net, always (the pair
  costs ~5x the `fer` peer per face there; cpu_features.py).

`version` is the running model's sidecar version, so events name the model that scored them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from emotion_edge.classify.cpu_features import DotProductSupport
from emotion_edge.config.tables import CLASSIFIER_MODELS
from emotion_edge.errors import ModelError

log = logging.getLogger(__name__)

PAIR, SINGLE = "pair", "single"
MODEL_CHOICES = CLASSIFIER_MODELS  # ("auto", "pair", "single")


@dataclass
class CostModel:
    """Predicted ms of one classify() call: overhead_ms + n_faces * per_face_ms."""

    overhead_ms: float
    per_face_ms: float

    def predict(self, n_faces: int) -> float:
        return self.overhead_ms + n_faces * self.per_face_ms if n_faces else 0.0


def measure_costs(models: dict, repeats: int = 7, seed: int = 0) -> dict[str, CostModel]:
    """Time every model on 1 .. max_batch (at most 8) noise faces, as the pipeline calls them,
    the models interleaved call by call so a busy CPU slows them alike; the fastest of
    `repeats` calls per size (the model's own cost, not a neighbour's time slice), then a
    least-squares line gives the per-call overhead and the per-face cost. Every batch size's
    interpreter is allocated here, so no later frame pays for that."""
    first = next(iter(models.values()))
    size = first.meta.input_size
    top = max(2, min(8, *(m.max_batch for m in models.values())))
    faces = np.random.default_rng(seed).integers(0, 256, (top, size, size), dtype=np.uint8)
    ns = np.arange(1, top + 1)
    best = {name: np.full(top, np.inf) for name in models}
    for n in ns:
        for m in models.values():
            m.predict_faces(faces[:n])  # allocates the interpreter for this batch size
    for _ in range(repeats):
        for i, n in enumerate(ns):
            for name, m in models.items():
                t0 = time.perf_counter()
                m.predict_faces(faces[:n])
                best[name][i] = min(best[name][i], (time.perf_counter() - t0) * 1000.0)
    costs = {}
    for name, ms in best.items():
        slope, intercept = np.polyfit(ns, ms, 1)
        costs[name] = CostModel(max(0.0, float(intercept)), max(1e-3, float(slope)))
    return costs


def measure_cost(classifier, repeats: int = 7) -> CostModel:
    """`measure_costs` of one model."""
    return measure_costs({"model": classifier}, repeats)["model"]


class ModelSelector:
    """A FaceClassifier over the pair and/or the single net; see the module docstring."""

    def __init__(
        self,
        models: dict,
        mode: str = "auto",
        budget_ms: float | None = None,
        dot_product: DotProductSupport | None = None,
        costs: dict[str, CostModel] | None = None,
        recover_ratio: float = 0.8,
        recover_frames: int = 30,
        ema_alpha: float = 0.1,
        warmup_frames: int = 10,
        drop_frames: int = 3,
    ):
        if not models or set(models) - {PAIR, SINGLE}:
            raise ValueError(f"models must be keyed {PAIR!r}/{SINGLE!r}, got {list(models)}")
        if mode not in MODEL_CHOICES:
            raise ValueError(f"mode must be one of {MODEL_CHOICES}, got {mode!r}")
        labels = {tuple(m.labels) for m in models.values()}
        if len(labels) > 1:  # the smoother and events mix both models' probabilities
            names = ", ".join(f"{k}: {list(m.labels)}" for k, m in models.items())
            raise ModelError(f"the pair and the single model must share their labels ({names})")
        self.models = dict(models)
        self.mode = mode
        self.budget_ms = budget_ms
        self.dot_product = dot_product
        self.recover_ratio = recover_ratio
        self.recover_frames = max(1, int(recover_frames))
        self.ema_alpha = ema_alpha
        self.warmup_frames = max(0, int(warmup_frames))
        self.drop_frames = max(1, int(drop_frames))
        self.recover_needed = self.recover_frames  # doubles after a quick relapse
        self.labels = next(iter(labels))
        self.switches = 0
        self.frames_by_model = dict.fromkeys(self.models, 0)
        self.faces_by_model = dict.fromkeys(self.models, 0)
        self.other_ms: float | None = None  # EMA of the other stages' ms per frame
        self.load_factor = 1.0  # measured / start-up cost of whichever model ran
        self._fits_in_a_row = 0
        self._over_in_a_row = 0
        self._frames_since_switch = 0  # frames with faces on the running model
        self._model_ms = 0.0  # the emotion model's ms since the last observe_frame_ms
        self._frames_observed = 0
        self._lock = threading.Lock()

        self.switching = mode == "auto" and len(self.models) == 2
        if self.switching and dot_product is not None and dot_product.present is False:
            self.switching = False
            self.active = SINGLE
            self.reason = f"auto: {dot_product.describe()}: the pair costs ~5x the peer per face"
        elif self.switching:
            self.active = PAIR
            self.reason = "auto: the pair while it fits the budget"
            if budget_ms is None:
                self.reason = "auto: the pair (no frame budget given)"
        else:
            self.active = PAIR if PAIR in self.models else SINGLE
            self.reason = f"{mode}: fixed"
        self.costs = dict(costs) if costs else {}
        if self.switching and budget_ms is not None:
            missing = {k: m for k, m in self.models.items() if k not in self.costs}
            if missing:
                self.costs.update(measure_costs(missing))
            log.info(
                "classifier auto: pair %.2f + %.3f ms/face, single %.2f + %.3f ms/face; "
                "budget %g ms",
                self.costs[PAIR].overhead_ms,
                self.costs[PAIR].per_face_ms,
                self.costs[SINGLE].overhead_ms,
                self.costs[SINGLE].per_face_ms,
                budget_ms,
            )
        log.info("emotion model %s (%s): %s", self.active, self.version, self.reason)

    # -- the FaceClassifier protocol ------------------------------------------------------------

    @property
    def classifier(self):
        """The EmotionClassifier running now."""
        return self.models[self.active]

    @property
    def name(self) -> str:
        return self.active

    @property
    def version(self) -> str:
        """The running model's version: it changes when the model switches."""
        return self.classifier.version

    @property
    def crop_scale(self) -> float:
        return self.classifier.crop_scale

    @property
    def crop_shift_y(self) -> float:
        return self.classifier.crop_shift_y

    def classify(
        self,
        gray: np.ndarray,
        boxes: Sequence[Sequence[float]],
        rolls: Sequence[float] | None = None,
    ) -> np.ndarray:
        """Choose the model for this frame's faces, then crop and classify them in one call."""
        n = len(boxes)
        with self._lock:
            if n and self.switching and self.budget_ms is not None:
                self._choose(n)
            name = self.active
        clf = self.models[name]
        # cropping costs the same whichever model runs: it counts with the other stages, and
        # only the model's own time teaches the cost model
        faces = clf.preprocess(gray, boxes, rolls)
        t0 = time.perf_counter()
        probs = clf.predict_faces(faces)
        ms = (time.perf_counter() - t0) * 1000.0
        with self._lock:
            self._model_ms += ms
            if n:
                self.frames_by_model[name] += 1
                self.faces_by_model[name] += n
                self._learn(name, n, ms)
        return probs

    # -- the pipeline's hook ------------------------------------------------------------------

    def observe_frame_ms(self, total_ms: float) -> None:
        """The frame's whole processing time (detect .. publish), once per frame after it:
        what the emotion model did not take is the other stages' share of the budget."""
        with self._lock:
            other = max(0.0, float(total_ms) - self._model_ms)
            self._model_ms = 0.0
            self._frames_observed += 1
            if self._frames_observed <= self.warmup_frames:
                return  # the first frames allocate buffers and interpreters: not their cost
            if self.other_ms is None:
                self.other_ms = other
            else:
                self.other_ms += self.ema_alpha * (other - self.other_ms)

    # -- decisions ----------------------------------------------------------------------------

    def predicted_ms(self, name: str, n_faces: int) -> float | None:
        """Predicted classify() ms for `n_faces` with model `name` at the current load."""
        cost = self.costs.get(name)
        return None if cost is None else cost.predict(n_faces) * self.load_factor

    def _choose(self, n: int) -> None:
        frame_ms = (self.other_ms or 0.0) + self.predicted_ms(PAIR, n)
        self._frames_since_switch += 1
        settled = self._frames_since_switch >= 10 * self.recover_frames
        if self.active == PAIR:
            if settled:  # the pair held: the next return needs the base count again
                self.recover_needed = self.recover_frames
            self._over_in_a_row = self._over_in_a_row + 1 if frame_ms > self.budget_ms else 0
            if self._over_in_a_row >= self.drop_frames:
                if self.switches and not settled:  # came back too soon: wait longer next time
                    self.recover_needed = min(2 * self.recover_needed, 8 * self.recover_frames)
                self._switch(SINGLE, f"pair {frame_ms:.1f} ms > budget {self.budget_ms:g} ms")
            return
        if frame_ms <= self.budget_ms * self.recover_ratio:
            self._fits_in_a_row += 1
            if self._fits_in_a_row >= self.recover_needed:
                self._switch(
                    PAIR,
                    f"pair {frame_ms:.1f} ms fits {self.recover_ratio:g} x budget "
                    f"{self.budget_ms:g} ms for {self._fits_in_a_row} frames",
                )
        else:
            self._fits_in_a_row = 0

    def _switch(self, name: str, why: str) -> None:
        old = self.version
        self.active = name
        self.switches += 1
        self._fits_in_a_row = self._over_in_a_row = self._frames_since_switch = 0
        self.reason = f"auto: {why}"
        log.info("emotion model %s -> %s (%s -> %s): %s", *_other(name), old, self.version, why)

    def _learn(self, name: str, n: int, ms: float) -> None:
        """Scale every cost model by how the running one compares with its start-up figure."""
        cost = self.costs.get(name)
        if cost is None:
            return
        # clipped: one preempted call must not swing the estimate by more than a little
        ratio = min(10.0, max(0.25, ms / max(1e-6, cost.predict(n))))
        self.load_factor += self.ema_alpha * (ratio - self.load_factor)

    # -- stats --------------------------------------------------------------------------------

    def stats(self) -> dict:
        """The stats payload's `classifier` object (schemas/stats.schema.json)."""
        with self._lock:
            per_face = {k: c.per_face_ms * self.load_factor for k, c in self.costs.items()}
            return {
                "mode": self.mode,
                "active": self.active,
                "version": self.version,
                "reason": self.reason,
                "int8_dot_product": None if self.dot_product is None else self.dot_product.present,
                "switches": self.switches,
                "frames_by_model": dict(self.frames_by_model),
                "faces_by_model": dict(self.faces_by_model),
                "ms_per_face": {k: _round(v) for k, v in per_face.items()},
                "load_factor": _round(self.load_factor),
                "other_stages_ms": _round(self.other_ms),
            }


def _other(name: str) -> tuple[str, str]:
    return (PAIR, SINGLE) if name == SINGLE else (SINGLE, PAIR)


def _round(v: float | None) -> float | None:
    return None if v is None else round(float(v), 3)


def classifier_stats(classifier) -> dict:
    """`classifier.stats()` where it has one (ModelSelector), else the fixed model's name and
    version (a bare EmotionClassifier or a test's stand-in)."""
    stats = getattr(classifier, "stats", None)
    if callable(stats):
        return stats()
    return {
        "mode": "fixed",
        "active": str(getattr(classifier, "name", "model")),
        "version": str(classifier.version),
        "reason": "fixed",
        "int8_dot_product": None,
        "switches": 0,
        "frames_by_model": {},
        "faces_by_model": {},
        "ms_per_face": {},
        "load_factor": None,
        "other_stages_ms": None,
    }
