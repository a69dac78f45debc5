"""Re-measure BatchNorm statistics over a whole dataset instead of trusting the moving averages.

With momentum 0.9 a BatchNorm layer's moving mean and variance after training reflect the
last few dozen augmented batches only. Measuring them once over all un-augmented Training
images gives the statistics the model meets at inference (clean, aligned face crops), and is
what weight averaging needs anyway (averaged weights have no statistics of their own).
Also handles the BatchNorm layers inside tensorflow-model-optimization's QAT wrappers.
"""

from __future__ import annotations

import time

from emotion_edge_train.tf_env import keras, tf


def _inner(layer):
    return getattr(layer, "layer", layer)  # QuantizeWrapper holds the real layer


def recompute_batchnorm(model, dataset) -> None:
    """Set every BatchNorm's moving mean/variance to its average over `dataset`'s batches.

    Batches run in training mode so each BatchNorm sees its own batch statistics; a momentum
    of n/(n+1) on batch n turns the moving average into a plain cumulative mean. Dropout is
    switched off meanwhile, because inference sees no dropout.
    """
    layers = [_inner(layer) for layer in model.layers]
    bns = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    drops = [layer for layer in layers if isinstance(layer, keras.layers.Dropout)]
    saved_momentum = [bn.momentum for bn in bns]
    saved_rate = [d.rate for d in drops]
    for bn in bns:
        bn.moving_mean.assign(tf.zeros_like(bn.moving_mean))
        bn.moving_variance.assign(tf.ones_like(bn.moving_variance))
    try:
        for d in drops:
            d.rate = 0.0
        for n, batch in enumerate(dataset):
            for bn in bns:
                bn.momentum = n / (n + 1)
            model(batch[0], training=True)
    finally:
        for bn, m in zip(bns, saved_momentum, strict=True):
            bn.momentum = m
        for d, r in zip(drops, saved_rate, strict=True):
            d.rate = r


def accuracy(model, dataset) -> float:
    """Categorical accuracy of `model` (any compile state) on (x, one-hot y, ...) batches."""
    hits = total = 0
    for batch in dataset:
        pred = tf.argmax(model(batch[0], training=False), axis=-1)
        hits += int(tf.reduce_sum(tf.cast(pred == tf.argmax(batch[1], axis=-1), tf.int32)))
        total += int(tf.shape(batch[0])[0])
    return hits / max(1, total)


def recalibrate_if_better(model, clean_train, val_ds) -> dict:
    """Re-measure `model`'s BatchNorm statistics in place; undone if PublicTest accuracy drops.

    Works in place (no clone) so QAT models, whose wrappers do not clone cleanly, work too;
    in them the training-mode passes also refresh the activation ranges, undone alike.
    """
    started = time.time()
    original = model.get_weights()
    before = accuracy(model, val_ds)
    recompute_batchnorm(model, clean_train)
    after = accuracy(model, val_ds)
    applied = after >= before
    if not applied:
        model.set_weights(original)
    return {
        "val_accuracy_before": round(before, 4),
        "val_accuracy_after": round(after, 4),
        "applied": applied,
        "seconds": round(time.time() - started, 1),
    }
