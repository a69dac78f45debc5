"""Weight averaging (SWA) and BatchNorm re-measurement, on tiny nets and random data."""

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="training needs the [train] extra")

from emotion_edge_train.batchnorm import (  # noqa: E402
    accuracy,
    recalibrate_if_better,
    recompute_batchnorm,
)
from emotion_edge_train.model import build_tiny  # noqa: E402
from emotion_edge_train.swa import EpochCosineLR, WeightAverager, averaged_model  # noqa: E402
from emotion_edge_train.tf_env import keras, tf  # noqa: E402


def test_weight_averager_is_the_mean_and_resumes(tmp_path):
    model = build_tiny(7)
    path = tmp_path / "swa.npz"
    snapshots = []
    avg = WeightAverager(path)
    avg.set_model(model)
    rng = np.random.default_rng(0)
    for epoch in range(3):
        if epoch == 2:  # a restarted process picks up the saved running mean
            avg = WeightAverager(path)
            avg.set_model(model)
            assert avg.count == 2
        weights = [rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()]
        model.set_weights(weights)
        snapshots.append(weights)
        avg.on_epoch_end(epoch)
    assert avg.count == 3
    for i, m in enumerate(avg.mean):
        np.testing.assert_allclose(m, np.mean([s[i] for s in snapshots], axis=0), atol=1e-6)


def test_recompute_batchnorm_measures_the_data():
    model = build_tiny(7)
    x = np.random.default_rng(1).uniform(0, 1, (256, 48, 48, 1)).astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros((256, 7), np.float32))).batch(64)
    recompute_batchnorm(model, dataset)
    bn = model.get_layer("t1_bn")
    conv_out = keras.Model(model.input, model.get_layer("t1_conv").output)(x).numpy()
    np.testing.assert_allclose(bn.moving_mean.numpy(), conv_out.mean(axis=(0, 1, 2)), atol=1e-4)
    # per-batch variances averaged: close to, not exactly, the variance over all the data
    np.testing.assert_allclose(
        bn.moving_variance.numpy(), conv_out.var(axis=(0, 1, 2)), rtol=0.05, atol=1e-5
    )
    assert bn.momentum == 0.9  # restored


def test_averaged_model_needs_a_snapshot(tmp_path):
    with pytest.raises(ValueError, match="no SWA snapshot"):
        averaged_model(build_tiny(7), WeightAverager(tmp_path / "none.npz"), [])


def test_epoch_cosine_restarts_every_epoch():
    sched = EpochCosineLR(3e-4, steps_per_epoch=10)
    lrs = [float(sched(step)) for step in range(21)]
    assert lrs[0] == pytest.approx(3e-4) and lrs[10] == pytest.approx(3e-4)
    assert lrs[9] < lrs[5] < lrs[1] and lrs[9] >= 1e-5


def _batches(x, y, size=64):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(size)


def test_recompute_batchnorm_measures_without_dropout():
    inputs = keras.Input((8,))
    x = keras.layers.Dropout(0.5, name="drop")(inputs)
    outputs = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, outputs)
    data = np.random.default_rng(2).normal(3.0, 0.5, (512, 8)).astype(np.float32)
    recompute_batchnorm(model, _batches(data, np.zeros((512, 1), np.float32)))
    bn = model.get_layer("bn")
    # with dropout on, the variance would be about 3**2 larger (zeros and doubled values)
    np.testing.assert_allclose(bn.moving_variance.numpy(), data.var(axis=0), rtol=0.05)
    np.testing.assert_allclose(bn.moving_mean.numpy(), data.mean(axis=0), rtol=0.02)
    assert model.get_layer("drop").rate == 0.5  # restored


def test_recalibration_kept_only_if_publictest_holds():
    rng = np.random.default_rng(3)
    model = build_tiny(7)
    x_train = rng.uniform(0, 0.3, (256, 48, 48, 1)).astype(np.float32)
    x_val = rng.uniform(0, 1, (128, 48, 48, 1)).astype(np.float32)
    for target in ("original", "recalibrated"):
        probe = keras.models.clone_model(model)
        probe.set_weights(model.get_weights())
        if target == "recalibrated":
            recompute_batchnorm(probe, _batches(x_train, np.zeros((256, 7), np.float32)))
        # PublicTest labels that one of the two models gets all right
        y_val = np.eye(7, dtype=np.float32)[probe.predict(x_val, verbose=0).argmax(1)]
        val = _batches(x_val, y_val)
        assert accuracy(probe, val) == 1.0
        candidate = keras.models.clone_model(model)
        candidate.set_weights(model.get_weights())
        original = candidate.get_weights()
        report = recalibrate_if_better(
            candidate, _batches(x_train, np.zeros((256, 7), np.float32)), val
        )
        assert report["applied"] == (report["val_accuracy_after"] >= report["val_accuracy_before"])
        if target == "recalibrated":
            assert report["applied"] and report["val_accuracy_after"] == 1.0
        else:
            assert report["val_accuracy_before"] == 1.0
        changed = any(
            not np.array_equal(a, b) for a, b in zip(original, candidate.get_weights(), strict=True)
        )
        assert changed == report["applied"]  # undone when PublicTest dropped
