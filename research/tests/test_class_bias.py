"""class_bias.py's fits: the cross-entropy fit recovers a known prior shift, and the accuracy
fit never lowers the accuracy it is fitted on."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the script imports emotion_edge_train ([train] extra)")

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "class_bias.py"


@pytest.fixture(scope="module")
def cb():
    spec = importlib.util.spec_from_file_location("class_bias", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _calibrated(rng, n=20000):
    """Labels drawn from a model's own probabilities: the model is calibrated, w = 1."""
    logits = rng.normal(0, 1.5, (n, 7))
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(7, p=row) for row in p])
    return p, y


def test_cross_entropy_fit_undoes_a_prior_shift(cb):
    rng = np.random.default_rng(0)
    p, y = _calibrated(rng)
    shift = np.array([1.0, 1.0, 3.0, 1.0, 1.0, 1.0, 0.5])  # the model under-calls class 2
    skewed = p / shift
    skewed /= skewed.sum(1, keepdims=True)
    w = cb.fit_log_prior(skewed, cb.one_hot(y))
    ratio = w / w[0]
    assert np.allclose(ratio, shift, rtol=0.15), ratio
    assert np.allclose(cb.fit_log_prior(p, cb.one_hot(y)), 1.0, atol=0.1)


def test_accuracy_fit_is_not_worse_where_it_was_fitted(cb):
    rng = np.random.default_rng(1)
    p, y = _calibrated(rng, 3000)
    skewed = p * np.array([2.0, 1, 1, 1, 1, 1, 1])
    w = cb.fit_weights(skewed, y, "accuracy")
    assert cb.scores(skewed * w, y)["accuracy"] >= cb.scores(skewed, y)["accuracy"]
    assert cb.scores(skewed * w, y)["accuracy"] > cb.scores(skewed, y)["accuracy"]
