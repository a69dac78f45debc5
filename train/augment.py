"""Batch-level data augmentation in TensorFlow ops (kept out of the model graph).

Geometric: shift, zoom, rotation, shear, horizontal flip (one projective warp per image).
Photometric: brightness, contrast, gamma, occasional low light, small cutout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from emotion_edge_train.tf_env import tf


@dataclass(frozen=True)
class AugmentConfig:
    shift: float = 0.10  # fraction of the image side
    zoom: float = 0.15  # scale in [1 - zoom, 1 + zoom]
    rotation_deg: float = 15.0
    shear: float = 0.10
    flip: bool = True
    brightness: float = 0.15  # additive, in [0, 1] pixel units
    contrast: float = 0.3  # multiplicative around the image mean, [1 - c, 1 + c]
    gamma: float = 0.4  # gamma in [1 / (1 + g), 1 + g]
    low_light_prob: float = 0.15  # chance of darkening to 30-70 % brightness
    cutout_prob: float = 0.3
    cutout_size: int = 12

    def scaled(self, strength: float) -> AugmentConfig:
        """Every range and probability times `strength` (1.0: as above; flip stays on)."""
        return replace(
            self,
            shift=self.shift * strength,
            zoom=self.zoom * strength,
            rotation_deg=self.rotation_deg * strength,
            shear=self.shear * strength,
            brightness=self.brightness * strength,
            contrast=self.contrast * strength,
            gamma=self.gamma * strength,
            low_light_prob=min(1.0, self.low_light_prob * strength),
            cutout_prob=min(1.0, self.cutout_prob * strength),
        )


def _affine_transforms(batch: tf.Tensor, size: int, cfg: AugmentConfig) -> tf.Tensor:
    """Per-image 8-parameter transforms mapping output pixel coords to input coords."""
    n = batch
    u = lambda lo, hi: tf.random.uniform([n], lo, hi)  # noqa: E731
    theta = u(-1.0, 1.0) * cfg.rotation_deg * math.pi / 180.0
    zoom = u(1.0 - cfg.zoom, 1.0 + cfg.zoom)
    shear = u(-cfg.shear, cfg.shear)
    flip = tf.where(u(0.0, 1.0) < 0.5, -1.0, 1.0) if cfg.flip else tf.ones([n])
    tx = u(-cfg.shift, cfg.shift) * size
    ty = u(-cfg.shift, cfg.shift) * size
    cos, sin = tf.cos(theta) / zoom, tf.sin(theta) / zoom
    # M = R(theta) @ Shear @ diag(flip, 1) / zoom, applied around the image centre.
    m00 = cos * flip
    m01 = cos * shear - sin
    m10 = sin * flip
    m11 = sin * shear + cos
    c = (size - 1) / 2.0
    a2 = c - m00 * c - m01 * c + tx
    b2 = c - m10 * c - m11 * c + ty
    zeros = tf.zeros([n])
    return tf.stack([m00, m01, a2, m10, m11, b2, zeros, zeros], axis=1)


def augment_batch(x: tf.Tensor, cfg: AugmentConfig = AugmentConfig()) -> tf.Tensor:
    """x: float32 [B, H, W, 1] in [0, 1] -> augmented batch, same shape, in [0, 1]."""
    n = tf.shape(x)[0]
    size = x.shape[1]
    transforms = _affine_transforms(n, size, cfg)
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=x,
        transforms=transforms,
        output_shape=tf.shape(x)[1:3],
        interpolation="BILINEAR",
        fill_mode="REFLECT",
        fill_value=0.0,
    )
    shape = tf.stack([n, 1, 1, 1])
    u = lambda lo, hi: tf.random.uniform(shape, lo, hi)  # noqa: E731
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = (x - mean) * u(1.0 - cfg.contrast, 1.0 + cfg.contrast) + mean
    x = x + u(-cfg.brightness, cfg.brightness)
    x = tf.clip_by_value(x, 0.0, 1.0)
    log_g = math.log(1.0 + cfg.gamma)
    x = tf.pow(x + 1e-6, tf.exp(u(-log_g, log_g)))
    dark = tf.where(u(0.0, 1.0) < cfg.low_light_prob, u(0.3, 0.7), tf.ones(shape))
    x = x * dark
    if cfg.cutout_prob > 0:
        x = _cutout(x, n, size, cfg)
    return tf.clip_by_value(x, 0.0, 1.0)


def _cutout(x: tf.Tensor, n: tf.Tensor, size: int, cfg: AugmentConfig) -> tf.Tensor:
    cy = tf.random.uniform([n, 1, 1, 1], 0, size)
    cx = tf.random.uniform([n, 1, 1, 1], 0, size)
    grid = tf.range(size, dtype=tf.float32)
    ys = tf.reshape(grid, [1, size, 1, 1])
    xs = tf.reshape(grid, [1, 1, size, 1])
    half = cfg.cutout_size / 2.0
    inside = (tf.abs(ys - cy) < half) & (tf.abs(xs - cx) < half)
    apply = tf.random.uniform([n, 1, 1, 1]) < cfg.cutout_prob
    return tf.where(inside & apply, tf.reduce_mean(x, axis=[1, 2], keepdims=True), x)
