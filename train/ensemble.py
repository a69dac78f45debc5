"""Several trained float models averaged into one flat Keras model.

The device runs one int8 file per face; an ensemble in one graph costs its members' inference
together (no extra call, no device code), so its latency is checked like any model's. The graph
is flat (the members' layers, renamed, on one shared input) rather than nested models, because
quantization-aware training and the QAT layer check only see top-level layers. The members'
probabilities are averaged by a fixed, non-trainable Dense layer on their concatenation:
tensorflow-model-optimization quantizes Concatenate and Dense, not Average.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from emotion_edge_train.teachers import file_sha256
from emotion_edge_train.tf_env import keras


class EnsembleError(ValueError):
    """The members cannot be averaged (shapes or labels differ); the message says how."""


def _renamed(prefix: str):
    def clone(layer):
        return layer.__class__.from_config({**layer.get_config(), "name": prefix + layer.name})

    return clone


def averaging_kernel(n_members: int, n_classes: int) -> np.ndarray:
    """[n_members * n_classes, n_classes]: output class k = mean of every member's class k."""
    return np.tile(np.eye(n_classes, dtype=np.float32), (n_members, 1)) / n_members


def build_ensemble(members: Sequence, name: str = "emotion_ensemble"):
    """One model whose output is the mean of the members' output probabilities."""
    if len(members) < 2:
        raise EnsembleError("an ensemble needs at least two member models")
    shapes = {tuple(m.input_shape[1:]) for m in members}
    classes = {int(m.output_shape[-1]) for m in members}
    if len(shapes) != 1 or len(classes) != 1:
        raise EnsembleError(
            f"members differ: input shapes {sorted(shapes)}, output sizes {sorted(classes)}"
        )
    (n_classes,) = classes
    face = keras.Input(shapes.pop(), name="face")
    outputs = []
    for i, member in enumerate(members, start=1):
        clone = keras.models.clone_model(
            member, input_tensors=face, clone_function=_renamed(f"m{i}_")
        )
        clone.set_weights(member.get_weights())
        outputs.append(clone.output)
    stacked = keras.layers.Concatenate(name="member_probs")(outputs)
    kernel = averaging_kernel(len(members), n_classes)
    mean = keras.layers.Dense(
        n_classes,
        use_bias=False,
        trainable=False,
        name="probs",
    )(stacked)
    model = keras.Model(face, mean, name=name)
    # set, not an initializer: a constant array initializer does not survive .h5 saving
    model.get_layer("probs").set_weights([kernel])
    return model


def member_record(path: Path) -> dict:
    """What the ensemble's metrics.json says of one member: its file and measured figures."""
    record: dict = {"path": str(path), "sha256": file_sha256(path)}
    for metrics in (path.with_name("metrics.json"), path.with_name(f"{path.stem}_metrics.json")):
        if metrics.is_file():
            m = json.loads(metrics.read_text())
            record["labels"] = m.get("labels")
            record["config"] = m.get("config", {})
            record["accuracy"] = {
                k: v["accuracy"] for k, v in m.items() if isinstance(v, dict) and "accuracy" in v
            }
            break
    return record
