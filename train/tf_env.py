"""Import TensorFlow with this project's required environment, once, before anything else.

- TF_USE_LEGACY_KERAS=1: tensorflow-model-optimization needs Keras 2 (tf_keras).
- ONEDNN_MAX_CPU_ISA=AVX2: on AVX-512 CPUs the oneDNN gradient of a 1x1 stride-2 conv corrupts
  memory (measured here: `free(): invalid pointer`); AVX2 kernels avoid it at no speed cost.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["tf", "keras"]
