"""The VGG model's heads and stage layouts: QAT-quantizable and convertible to a fully int8 file."""

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="training needs the [train] extra")

from emotion_edge.classify.litert import make_interpreter  # noqa: E402
from emotion_edge_export.convert import convert_int8  # noqa: E402
from emotion_edge_export.qat import check_quantizable, quantize  # noqa: E402
from emotion_edge_train.model import build_model  # noqa: E402


def _params(width: int, head_units: int, classes: int = 7, widths=(), n_convs=(2, 2, 2, 2)) -> int:
    convs, c_in = 0, 1
    for c, n in zip(widths or [width * m for m in (1, 2, 4, 8)], n_convs, strict=True):
        for _ in range(n):
            convs += 9 * c_in * c + 4 * c  # kernel (no bias) + BatchNorm's 4 vectors
            c_in = c
    if head_units:
        head = (9 * c_in + 1) * head_units + (head_units + 1) * classes
    else:
        head = (c_in + 1) * classes
    return convs + head


@pytest.mark.parametrize("head_units", [0, 32])
def test_vgg_heads_quantize_and_convert_to_int8(head_units):
    model = build_model("vgg", 7, width=4, dropout=0.3, l2=5e-5, head_units=head_units)
    assert model.count_params() == _params(4, head_units)
    names = {layer.name for layer in model.layers}
    assert ("hidden" in names and "flatten" in names) == bool(head_units)
    assert ("gap" in names) != bool(head_units)
    check_quantizable(model)
    assert quantize(model).count_params() > model.count_params()  # wrapped, with ranges

    faces = np.random.default_rng(0).integers(0, 256, (20, 48, 48), dtype=np.uint8)
    interp = make_interpreter(model_content=convert_int8(model, faces))
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    interp.set_tensor(inp["index"], np.zeros(inp["shape"], np.int8))
    interp.invoke()
    assert interp.get_tensor(out["index"]).shape == (1, 7)


def test_shipped_recipe_head_sizes():
    # width 20: the GAP head is the committed model's 460,907 parameters
    assert _params(20, 0) == 460_907
    assert build_model("vgg", 7, width=20, head_units=256).count_params() == _params(20, 256)


def test_stage_layout_override_converts_to_int8():
    model = build_model(
        "vgg",
        5,
        width=4,
        dropout=0.3,
        l2=5e-5,
        stage_widths=(3, 6, 10, 16),
        stage_convs=(1, 2, 1, 3),
    )
    assert model.count_params() == _params(0, 0, 5, (3, 6, 10, 16), (1, 2, 1, 3))
    convs = [layer.name for layer in model.layers if layer.name.endswith("_conv")]
    assert convs == [
        "s1a_conv",
        "s2a_conv",
        "s2b_conv",
        "s3a_conv",
        "s4a_conv",
        "s4b_conv",
        "s4c_conv",
    ]
    check_quantizable(model)
    faces = np.random.default_rng(1).integers(0, 256, (10, 48, 48), dtype=np.uint8)
    interp = make_interpreter(model_content=convert_int8(model, faces))
    assert interp.get_output_details()[0]["shape"].tolist() == [1, 5]


@pytest.mark.parametrize("widths, convs", [((8, 16, 32), ()), ((), (2, 2, 0, 2))])
def test_stage_layout_rejects_bad_shapes(widths, convs):
    with pytest.raises(ValueError, match="four positive"):
        build_model("vgg", 7, stage_widths=widths, stage_convs=convs)


def test_cli_parses_stage_layout_and_rejects_bad_lists(capsys):
    from emotion_edge_train.cli import build_parser

    args = build_parser().parse_args(
        ["fit", "--stage-widths", "20,40,96,192", "--stage-convs", "1,2,2,2"]
    )
    assert args.stage_widths == [20, 40, 96, 192] and args.stage_convs == [1, 2, 2, 2]
    for bad in ("20,40,96", "20,x,96,192", "20,0,96,192"):
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args(["fit", "--stage-widths", bad])
        assert exc.value.code == 2
    assert "four positive integers" in capsys.readouterr().err


def test_arch_latency_parses_variants_and_times_them_in_litert(monkeypatch):
    from pathlib import Path

    # `benchmarks` is a top-level folder, not an installed package
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    from benchmarks.arch_latency import measure, parse_variant

    assert parse_variant("width=28 convs=1,1,2,2 head=64") == {
        "width": 28,
        "stage_convs": [1, 1, 2, 2],
        "head_units": 64,
    }
    with pytest.raises(ValueError, match="depth"):
        parse_variant("width=20 depth=3")
    rows = measure(["width=8", "width=16 convs=1,1,2,2"], threads=1, runs=30)
    assert [r["variant"] for r in rows] == ["width=8", "width=16 convs=1,1,2,2"]
    assert rows[0]["ratio"] == 1.0 and rows[1]["median_ms"] > 0
    assert rows[1]["parameters"] > rows[0]["parameters"]


def test_vgg_with_kernels_flipped_left_right_sees_the_mirror_image():
    """research/experiments/ensemble_pairs.py --mirrored scores a member on the mirrored face
    as a one-pass net; that holds only while every layer is mirror-symmetric (same-padding
    3x3 convs, 2x2 pools on even sizes, global pooling)."""
    model = build_model("vgg", 7, width=4, dropout=0.3, l2=5e-5)
    rng = np.random.default_rng(1)
    for layer in model.layers:  # random BatchNorm statistics, so they matter too
        if layer.name.endswith("_bn"):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.get_weights()])
    faces = rng.random((8, 48, 48, 1)).astype(np.float32)
    on_mirror = model.predict(faces[:, :, ::-1, :], verbose=0)
    for layer in model.layers:
        if layer.name.endswith("_conv"):
            (kernel,) = layer.get_weights()
            layer.set_weights([kernel[:, ::-1]])
    np.testing.assert_allclose(model.predict(faces, verbose=0), on_mirror, atol=1e-5)
    assert not np.allclose(model.predict(faces[:, :, ::-1, :], verbose=0), on_mirror, atol=1e-5)
