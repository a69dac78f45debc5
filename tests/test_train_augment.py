"""Training augmentation: shape and range kept, strength scales it, zero strength is a no-op."""

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="training needs the [train] extra")

from emotion_edge_train.augment import AugmentConfig, augment_batch  # noqa: E402
from emotion_edge_train.tf_env import tf  # noqa: E402


def _faces(n: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:48] / 47.0
    base = (0.2 + 0.6 * xx * yy)[None, :, :, None]
    return (base + 0.05 * rng.standard_normal((n, 48, 48, 1))).clip(0, 1).astype(np.float32)


def test_augment_keeps_shape_and_range_and_changes_images():
    x = _faces()
    y = augment_batch(tf.constant(x), AugmentConfig()).numpy()
    assert y.shape == x.shape
    assert y.min() >= 0.0 and y.max() <= 1.0
    assert np.abs(y - x).mean() > 0.02


def test_strength_scales_every_range():
    half = AugmentConfig().scaled(0.5)
    full = AugmentConfig()
    assert half.rotation_deg == pytest.approx(full.rotation_deg / 2)
    assert half.cutout_prob == pytest.approx(full.cutout_prob / 2)
    assert half.flip and half.cutout_size == full.cutout_size


def test_zero_strength_without_flip_leaves_images_unchanged():
    cfg = AugmentConfig(flip=False).scaled(0.0)
    x = _faces()
    y = augment_batch(tf.constant(x), cfg).numpy()
    np.testing.assert_allclose(y, x, atol=1e-3)
