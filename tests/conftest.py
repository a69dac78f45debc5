"""Shared fixtures: paths to ../shared (skipped with a reason when absent), a tiny int8 model."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from mqtt_broker import mqtt_broker  # noqa: F401  (fixture: a real mosquitto per test)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__import__("os").environ.get("EMOTION_EDGE_SHARED", REPO.parent / "shared"))
DATA_DIR = SHARED / "data"
SAMPLES_DIR = SHARED / "samples"
SAMPLE_VIDEO = SAMPLES_DIR / "face_recognition" / "short_hamilton_clip.mp4"

HOST_TESTS_ENV = "EMOTION_EDGE_HOST_TESTS"
HOST_SKIP_REASON = (
    "changes the host (apt/binfmt/arm64 rootfs): run with EMOTION_EDGE_HOST_TESTS=1, "
    "as .ci/run does"
)


def pytest_collection_modifyitems(config, items):
    """Tests marked `host` (apt installs, binfmt_misc registration, arm64 root filesystems,
    the real installer as root) run only when EMOTION_EDGE_HOST_TESTS=1 asks for them."""
    if os.environ.get(HOST_TESTS_ENV) == "1":
        return
    skip = pytest.mark.skip(reason=HOST_SKIP_REASON)
    for item in items:
        if item.get_closest_marker("host") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """The daemon's CLI points the root logger at the sys.stderr of its moment, which pytest
    closes after the test; later tests' log calls would then print 'Logging error' walls."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "fer2013.csv.gz").is_file():
        pytest.skip(
            f"FER2013 data not found at {DATA_DIR} (expected ../shared/data beside the repo)"
        )
    return DATA_DIR


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    if not SAMPLES_DIR.is_dir():
        pytest.skip(f"sample photos/video not found at {SAMPLES_DIR} (expected ../shared/samples)")
    return SAMPLES_DIR


@pytest.fixture(scope="session")
def sample_video(samples_dir) -> Path:
    if not SAMPLE_VIDEO.is_file():
        pytest.skip(f"sample video missing: {SAMPLE_VIDEO}")
    return SAMPLE_VIDEO


@pytest.fixture(scope="session")
def tiny_int8_model(tmp_path_factory) -> Path:
    """A tiny, untrained but real fully-int8 emotion model + metadata sidecar (needs TF)."""
    pytest.importorskip("tensorflow", reason="building the test model needs the [train] extra")
    from emotion_edge.preprocess import FER2013_LABELS
    from emotion_edge_export.convert import export_int8
    from emotion_edge_train.model import build_model
    from emotion_edge_train.tf_env import keras

    keras.utils.set_random_seed(0)
    model = build_model("tiny", len(FER2013_LABELS))
    rep = np.random.default_rng(0).integers(0, 256, (64, 48, 48), dtype=np.uint8)
    out = tmp_path_factory.mktemp("model") / "emotion_int8.tflite"
    return export_int8(model, rep, out, FER2013_LABELS, version="test-tiny")


@pytest.fixture(scope="session")
def emotion_model(request) -> Path:
    """The trained int8 model shipped in the package when present, else `tiny_int8_model`."""
    from emotion_edge.classify.classifier import DEFAULT_MODEL

    if DEFAULT_MODEL.is_file() and DEFAULT_MODEL.with_suffix(".json").is_file():
        return DEFAULT_MODEL
    return request.getfixturevalue("tiny_int8_model")
