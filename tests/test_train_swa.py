"""Weight averaging and BatchNorm re-estimation for SWA, on a tiny net and random data."""

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="training needs the [train] extra")

from emotion_edge_train.model import build_tiny  # noqa: E402
from emotion_edge_train.swa import (  # noqa: E402
    EpochCosineLR,
    WeightAverager,
    averaged_model,
    recompute_batchnorm,
)
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
