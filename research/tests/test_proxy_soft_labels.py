"""GPU-proxy teachers to the CPU student: out-of-fold combination, and (where PyTorch is
installed) pack -> proxy on the CPU -> soft-label file that the Keras trainer accepts."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the script imports emotion_edge_train ([train] extra)")

PROXY = Path(__file__).resolve().parents[1] / "proxy"
sys.path.insert(0, str(PROXY.parents[1] / "tests"))  # the generated-FER2013 fixture


@pytest.fixture(scope="module")
def sl():
    spec = importlib.util.spec_from_file_location("proxy_soft_labels", PROXY / "soft_labels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_each_training_face_is_labelled_by_the_models_that_left_it_out(sl):
    rng = np.random.default_rng(0)
    n_train, n_test = 10, 4
    keys = np.concatenate([np.arange(n_train) + 100, np.arange(n_test) + 500])  # fold keys
    probs = rng.dirichlet(np.ones(7), (3, n_train + n_test)).astype(np.float32)
    cfgs = [{"fold": "0/2"}, {"fold": "1/2"}, {"fold": "1/2"}]
    out = sl.combine(probs, cfgs, keys, n_train, folds=True)
    even = keys[:n_train] % 2 == 0
    np.testing.assert_allclose(out[:n_train][even], probs[0, :n_train][even])
    np.testing.assert_allclose(out[:n_train][~even], probs[1:, :n_train][:, ~even].mean(0))
    np.testing.assert_allclose(out[n_train:], probs[:, n_train:].mean(0))
    np.testing.assert_allclose(sl.combine(probs, cfgs, keys, n_train, folds=False), probs.mean(0))
    with pytest.raises(sl.SoftLabelError, match="in no left-out fold"):
        sl.combine(probs[1:], cfgs[1:], keys, n_train, folds=True)
    with pytest.raises(sl.SoftLabelError, match="no fold"):
        sl.combine(probs, [*cfgs[:2], {"fold": ""}], keys, n_train, folds=True)


def test_probabilities_of_row_number_folds_are_refused(sl, tmp_path):
    probs = np.full((2, 3, 7), 1 / 7, np.float16)
    configs = np.array(json.dumps([{"fold": "0/2"}, {"fold": "1/2"}]))
    old, new = tmp_path / "old.npz", tmp_path / "new.npz"
    np.savez(old, probs=probs, configs=configs)  # written before identical images shared folds
    np.savez(new, probs=probs, configs=configs, fold_rule=np.array("image-group"))
    with pytest.raises(sl.SoftLabelError, match="row number"):
        sl.load_models([old], folds=True)
    assert sl.load_models([old])[0].shape == (2, 3, 7)  # a plain mean does not need the folds
    assert sl.load_models([new], folds=True)[0].shape == (2, 3, 7)


def test_proxy_teachers_reach_the_keras_student(tmp_path):
    if importlib.util.find_spec("torch") is None:
        pytest.skip("the GPU proxy needs PyTorch (not a project dependency)")
    from emotion_edge.preprocess import FER2013_LABELS
    from emotion_edge_train.data import load_fer
    from emotion_edge_train.teachers import load_soft_labels
    from fer_fixtures import make_fer_files

    data, pack = tmp_path / "fer", tmp_path / "pack"
    data.mkdir()
    make_fer_files(data)
    env = {**os.environ, "EMOTION_EDGE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}

    def run(script, *args):
        proc = subprocess.run(
            [sys.executable, str(PROXY / script), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    run("pack_fer.py", "--data", data, "--out", pack)
    configs = json.dumps([{"seed": 1, "fold": "0/2"}, {"seed": 2, "fold": "1/2"}])
    probs = tmp_path / "probs.npz"
    run(
        "torch_recipe_proxy.py",
        *("--device", "cpu", "--widths", "4,8,8,8", "--epochs", "2", "--batch", "16"),
        *("--configs", configs, "--data", pack, "--out", tmp_path / "r.json"),
        *("--probs-out", probs),
    )
    with np.load(probs) as z:
        assert z["probs"].shape[:2] == (2, int(np.load(pack / "meta.npz")["n"].sum()))
    soft = tmp_path / "soft.npz"
    out = run("soft_labels.py", probs, "--pack", pack, "--data", data, "--out", soft, "--folds")
    assert "PublicTest" in out
    ds = load_fer(data, cache=False)
    labels = load_soft_labels(soft, ds, FER2013_LABELS)
    assert labels.shape == (len(ds), 7)
    np.testing.assert_allclose(labels.sum(1), 1.0, atol=1e-2)
