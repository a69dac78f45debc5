"""Stochastic weight averaging (SWA) after the cosine schedule.

After the main run has converged, training goes on for a few epochs with a small learning
rate that restarts every epoch (cosine from `swa_lr` down to `swa_lr / 30`), and the weights
at the end of each of these epochs are averaged. The average lies nearer the middle of the
flat region the snapshots wander around in, which generalises better on noisy labels such as
FER2013's than any single snapshot (Izmailov et al. 2018). BatchNorm statistics do not average
linearly, so they are measured afresh for the averaged weights (emotion_edge_train.batchnorm).

The running average is saved after every epoch (`swa.npz`), so an interrupted run resumes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from emotion_edge_train.batchnorm import recompute_batchnorm
from emotion_edge_train.tf_env import keras, tf

LR_MIN_FRACTION = 1 / 30


class EpochCosineLR(keras.optimizers.schedules.LearningRateSchedule):
    """Cosine from `lr_max` to `lr_max * LR_MIN_FRACTION` within each epoch, then restart."""

    def __init__(self, lr_max: float, steps_per_epoch: int):
        self.lr_max, self.steps_per_epoch = float(lr_max), int(steps_per_epoch)

    def __call__(self, step):
        lr_min = self.lr_max * LR_MIN_FRACTION
        phase = tf.cast(step % self.steps_per_epoch, tf.float32) / self.steps_per_epoch
        return lr_min + 0.5 * (self.lr_max - lr_min) * (1.0 + tf.cos(math.pi * phase))

    def get_config(self):
        return {"lr_max": self.lr_max, "steps_per_epoch": self.steps_per_epoch}


class WeightAverager(keras.callbacks.Callback):
    """Running mean of the model's weights at each epoch end, persisted to `path`."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.count = 0
        self.mean: list[np.ndarray] | None = None
        if path.is_file():
            with np.load(path) as z:
                self.count = int(z["count"])
                self.mean = [z[f"w{i}"] for i in range(len(z.files) - 1)]

    def on_epoch_end(self, epoch, logs=None):
        weights = self.model.get_weights()
        if self.mean is None:
            self.mean = [w.astype(np.float64) for w in weights]
        else:
            self.mean = [
                m + (w - m) / (self.count + 1) for m, w in zip(self.mean, weights, strict=True)
            ]
        self.count += 1
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        np.savez(tmp, count=self.count, **{f"w{i}": m for i, m in enumerate(self.mean)})
        tmp.replace(self.path)


def averaged_model(model, averager: WeightAverager, dataset):
    """A copy of `model` with the averaged weights and BatchNorm statistics to match them."""
    if averager.mean is None:
        raise ValueError("no SWA snapshot was taken")
    swa = keras.models.clone_model(model)
    swa.set_weights([m.astype(np.float32) for m in averager.mean])
    recompute_batchnorm(swa, dataset)
    return swa
