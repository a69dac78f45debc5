"""Quantization-aware fine-tuning of the trained float model (tensorflow-model-optimization).

Same data, targets and augmentation as training (emotion_edge_train.train), a low cosine LR,
selection on PublicTest. Models are saved as .h5 inside `quantize_scope()`: the .keras format
fails to reload QAT layers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from emotion_edge_train.batchnorm import recalibrate_if_better
from emotion_edge_train.tf_env import keras, tf
from emotion_edge_train.train import compile_model

log = logging.getLogger(__name__)


class UnsupportedLayerError(ValueError):
    """The float model has a layer QAT cannot quantize; the message names it."""


def check_quantizable(model) -> None:
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry,
    )

    reg = registry.Default8BitQuantizeRegistry()
    bad = [
        f"{layer.name} ({type(layer).__name__})"
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
        and not reg.supports(layer)
        and not _bn_after_conv(layer)
    ]
    if bad:
        raise UnsupportedLayerError(
            "QAT cannot quantize these layers: "
            + ", ".join(bad)
            + " (allowed: Conv2D/DepthwiseConv2D/SeparableConv2D + BatchNormalization, ReLU, "
            "Add, pooling, Dense, Dropout, Softmax)"
        )
    del tfmot


def _bn_after_conv(layer) -> bool:
    """BatchNormalization right after a conv/dense is folded by QAT's transforms."""
    if not isinstance(layer, keras.layers.BatchNormalization):
        return False
    conv_types = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    inbound = [n.inbound_layers for n in layer._inbound_nodes]
    flat = [x for item in inbound for x in (item if isinstance(item, list) else [item])]
    return bool(flat) and all(isinstance(x, conv_types) for x in flat)


def load_float_model(path: Path):
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: float model not found (train one with emotion-edge-train fit)"
        )
    try:
        return keras.models.load_model(path, compile=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot load as a Keras model ({exc})") from None


def quantize(model):
    import tensorflow_model_optimization as tfmot

    check_quantizable(model)
    return tfmot.quantization.keras.quantize_model(model)


def fine_tune(
    qat_model, train_ds, val_ds, epochs: int, lr: float, steps: int, out: Path, clean_train_ds=None
):
    """Fit the QAT model; returns it with the weights of its best PublicTest epoch.

    With `clean_train_ds`, BatchNorm statistics are then re-measured on it, as training does
    (emotion_edge_train.batchnorm), and kept only if PublicTest accuracy holds.
    """
    import tensorflow_model_optimization as tfmot

    schedule = keras.optimizers.schedules.CosineDecay(lr, max(1, epochs * steps), alpha=0.05)
    compile_model(qat_model, schedule)  # the same loss and metric as float training
    best_weights = out / "qat_best.weights.h5"
    with tfmot.quantization.keras.quantize_scope():
        base = qat_model.evaluate(val_ds, verbose=0, return_dict=True)["accuracy"]
        log.info("QAT model before fine-tuning: PublicTest accuracy %.4f", base)
        qat_model.save_weights(best_weights)
        ckpt = keras.callbacks.ModelCheckpoint(
            str(best_weights),
            monitor="val_accuracy",
            mode="max",
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=base,
        )
        history = qat_model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=epochs,
            callbacks=[
                ckpt,
                keras.callbacks.CSVLogger(str(out / "qat_history.csv")),
                # a diverged epoch is never the best one: stop instead of training on NaNs
                keras.callbacks.TerminateOnNaN(),
            ],
            verbose=2,
        )
        losses = history.history.get("loss", [])
        if any(not np.isfinite(v) for v in losses):
            log.warning("QAT fine-tune diverged (loss %s); keeping its best finite epoch", losses)
        qat_model.load_weights(best_weights)
        bn_report = None
        if clean_train_ds is not None:
            bn_report = recalibrate_if_better(qat_model, clean_train_ds, val_ds)
            log.info("QAT BatchNorm statistics re-measured: %s", bn_report)
        qat_model.save(out / "emotion_qat.h5", save_format="h5")
    return qat_model, {
        "before": float(base),
        "bn_recalibration": bn_report,
        **{k: [float(x) for x in v] for k, v in history.history.items()},
    }


def representative_faces(
    images: np.ndarray, labels: np.ndarray, n: int, seed: int = 0
) -> np.ndarray:
    """Calibration faces drawn from Training, every class represented."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(images))[:n]
    return images[np.sort(idx)]


def float_predict_fn(model):
    def predict(images: np.ndarray) -> np.ndarray:
        x = images.reshape(-1, 48, 48, 1).astype(np.float32) / 255.0
        return model(tf.constant(x), training=False).numpy()

    return predict
