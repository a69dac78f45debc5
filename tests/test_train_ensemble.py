"""Averaging trained float models into one flat model: exact mean, QAT-quantizable layers,
int8 conversion, and the CLI's metrics.json naming its members."""

import json

import numpy as np
import pytest
from fer_fixtures import make_fer_files

pytest.importorskip("tensorflow", reason="training needs the [train] extra")

from emotion_edge_export.convert import convert_int8  # noqa: E402
from emotion_edge_export.qat import check_quantizable  # noqa: E402
from emotion_edge_train import cli as train_cli  # noqa: E402
from emotion_edge_train.ensemble import EnsembleError, build_ensemble  # noqa: E402
from emotion_edge_train.model import build_tiny  # noqa: E402
from emotion_edge_train.tf_env import keras  # noqa: E402


def _members(n_classes=(7, 7)):
    out = []
    for seed, k in enumerate(n_classes):
        keras.utils.set_random_seed(seed)
        model = build_tiny(k)
        # untrained nets give near-uniform outputs; a large logit bias makes members disagree
        dense = model.get_layer("logits")
        kernel, bias = dense.get_weights()
        dense.set_weights([kernel * 20, np.random.default_rng(seed).normal(0, 2, k)])
        out.append(model)
    return out


def _faces(n=16):
    return np.random.default_rng(1).random((n, 48, 48, 1)).astype(np.float32)


def test_ensemble_outputs_the_mean_of_its_members():
    a, b = _members()
    ens = build_ensemble([a, b])
    x = _faces()
    pa, pb = a.predict(x, verbose=0), b.predict(x, verbose=0)
    assert not np.allclose(pa, pb, atol=1e-3)  # the members really differ
    np.testing.assert_allclose(ens.predict(x, verbose=0), (pa + pb) / 2, atol=1e-6)
    # flat: the members' layers sit in the ensemble itself, no nested models
    assert not any(isinstance(layer, keras.Model) for layer in ens.layers)
    assert ens.count_params() == a.count_params() + b.count_params() + 14 * 7
    assert not ens.get_layer("probs").trainable


def test_ensemble_survives_h5_and_converts_to_int8(tmp_path):
    ens = build_ensemble(_members())
    path = tmp_path / "ens.h5"
    ens.save(path)
    loaded = keras.models.load_model(path, compile=False)
    x = _faces()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), ens.predict(x, verbose=0), atol=1e-6)
    check_quantizable(loaded)

    from ai_edge_litert.interpreter import Interpreter

    faces = (np.random.default_rng(2).random((50, 48, 48)) * 255).astype(np.uint8)
    interp = Interpreter(model_content=convert_int8(loaded, faces, n_calibration=50))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    (s_in, z_in), (s_out, z_out) = inp["quantization"], out["quantization"]
    interp.set_tensor(inp["index"], np.round(x[:1] / s_in + z_in).astype(np.int8))
    interp.invoke()
    probs = (interp.get_tensor(out["index"]).astype(np.float32) - z_out) * s_out
    assert abs(float(probs.sum()) - 1.0) < 0.05
    assert int(probs.argmax()) == int(ens.predict(x[:1], verbose=0).argmax())


def test_ensemble_refuses_members_that_differ():
    a, b = _members((7, 5))
    with pytest.raises(EnsembleError, match="output sizes"):
        build_ensemble([a, b])
    with pytest.raises(EnsembleError, match="at least two"):
        build_ensemble([a])


def test_ensemble_cli_writes_model_and_member_records(tmp_path, monkeypatch):
    root = tmp_path / "fer"
    root.mkdir()
    make_fer_files(root)
    monkeypatch.setenv("EMOTION_EDGE_CACHE", str(root / "cache"))
    paths = []
    for i, model in enumerate(_members()):
        folder = tmp_path / f"m{i}"
        folder.mkdir()
        model.save(folder / "best.h5")
        labels = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
        config = {"augment_strength": 0.6 + i}
        (folder / "metrics.json").write_text(json.dumps({"labels": labels, "config": config}))
        paths.append(folder / "best.h5")
    out = tmp_path / "ens" / "ensemble.h5"
    args = ["ensemble", *map(str, paths), "--data", str(root), "--out", str(out)]
    assert train_cli.main(args) == 0
    metrics = json.loads(out.with_name("metrics.json").read_text())
    assert [m["path"] for m in metrics["ensemble"]["members"]] == list(map(str, paths))
    assert metrics["config"] == {"augment_strength": 0.6}  # the first member's recipe
    assert 0.0 <= metrics["fer2013_PublicTest"]["accuracy"] <= 1.0
    assert keras.models.load_model(out, compile=False).output_shape == (None, 7)

    assert (
        train_cli.main(
            [
                "ensemble",
                str(paths[0]),
                str(tmp_path / "nope.h5"),
                "--data",
                str(root),
                "--out",
                str(out),
            ]
        )
        == 2
    )

    # evaluate refreshes the figures in place and keeps the ensemble's record and recipe
    m = json.loads(out.with_name("metrics.json").read_text())
    m["fer2013_PublicTest"]["accuracy"] = -1.0
    out.with_name("metrics.json").write_text(json.dumps(m))
    assert train_cli.main(["evaluate", str(out), "--data", str(root)]) == 0
    again = json.loads(out.with_name("metrics.json").read_text())
    assert again["fer2013_PublicTest"]["accuracy"] == metrics["fer2013_PublicTest"]["accuracy"]
    assert again["ensemble"] == metrics["ensemble"] and again["config"] == metrics["config"]
