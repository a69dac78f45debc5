"""`[classifier] model = "auto"`: the shipped pair and single-net files in real LiteRT, the
switch under a budget, the CPU rule and what stats report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from emotion_edge.classify.auto_select import (
    PAIR,
    SINGLE,
    CostModel,
    ModelSelector,
    classifier_stats,
    measure_costs,
)
from emotion_edge.classify.classifier import (
    DEFAULT_MODEL,
    DEFAULT_SINGLE_MODEL,
    EmotionClassifier,
    load_classifier,
)
from emotion_edge.classify.cpu_features import DotProductSupport, int8_dot_product
from emotion_edge.classify.model_meta import load_metadata, metadata_path
from emotion_edge.config import ClassifierConfig, from_dict
from emotion_edge.errors import ConfigError, ModelError

pytestmark = pytest.mark.skipif(
    not (DEFAULT_MODEL.is_file() and DEFAULT_SINGLE_MODEL.is_file()),
    reason="the shipped pair and single-net models are not installed in device/models",
)

SCHEMA = Path(__file__).resolve().parents[1] / "device" / "schemas" / "stats.schema.json"
WITH_DOT = DotProductSupport(True, ("avx512_vnni",), "x86_64")
NO_DOT = DotProductSupport(False, (), "x86_64")
BOX = (200.0, 120.0, 120.0, 140.0)


def _frame(seed: int = 0) -> np.ndarray:
    base = np.random.default_rng(seed).integers(0, 256, (60, 80), dtype=np.uint8)
    return cv2.resize(base, (640, 480), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def models():
    return {
        PAIR: EmotionClassifier(DEFAULT_MODEL, num_threads=1),
        SINGLE: EmotionClassifier(DEFAULT_SINGLE_MODEL, num_threads=1),
    }


def _fixed_costs(models, budget_ms, recover_frames=5, **kw):
    """A selector whose cost model is given (pair 1 ms a face, single 0.5) and never learns
    (ema 0), so a face count decides; the models still run for real."""
    return ModelSelector(
        models,
        "auto",
        budget_ms=budget_ms,
        dot_product=WITH_DOT,
        costs={PAIR: CostModel(0.0, 1.0), SINGLE: CostModel(0.0, 0.5)},
        recover_frames=recover_frames,
        ema_alpha=0.0,
        **{"warmup_frames": 0, "drop_frames": 1, **kw},
    )


# -- the shipped files ------------------------------------------------------------------------


def test_single_net_file_sits_beside_the_pair_with_its_own_version():
    pair, single = load_metadata(DEFAULT_MODEL), load_metadata(DEFAULT_SINGLE_MODEL)
    assert single.version != pair.version and single.sha256 != pair.sha256
    assert single.labels == pair.labels
    assert (single.face_crop_scale, single.face_crop_shift_y) == (
        pair.face_crop_scale,
        pair.face_crop_shift_y,
    )
    assert single.extra["model_file"] == DEFAULT_SINGLE_MODEL.name
    assert single.extra["quantization"] == "ptq"
    assert not single.flip_average  # a mirror pass would cost what the second net costs
    assert "ensemble_members" not in single.extra["training"]
    assert len(pair.extra["training"]["ensemble_members"]) == 2
    # about half the bytes: one of the pair's two nets
    assert 0.4 < DEFAULT_SINGLE_MODEL.stat().st_size / DEFAULT_MODEL.stat().st_size < 0.6


def test_single_net_costs_less_per_face_than_the_pair(models):
    costs = measure_costs(models)  # interleaved: a busy CPU slows both alike
    assert costs[SINGLE].per_face_ms < costs[PAIR].per_face_ms
    assert costs[SINGLE].predict(6) < costs[PAIR].predict(6)


# -- choosing ---------------------------------------------------------------------------------


def test_auto_runs_the_pair_while_it_fits_and_reports_its_version(models):
    sel = load_classifier(ClassifierConfig(num_threads=1), budget_ms=1000.0, dot_product=WITH_DOT)
    assert set(sel.models) == {PAIR, SINGLE} and sel.active == PAIR
    assert sel.version == load_metadata(DEFAULT_MODEL).version
    probs = sel.classify(_frame(), [BOX, BOX])
    assert probs.shape == (2, 7) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # the pair's own output, not the single net's
    np.testing.assert_allclose(probs, models[PAIR].classify(_frame(), [BOX, BOX]), atol=1e-6)
    assert sel.stats()["frames_by_model"] == {PAIR: 1, SINGLE: 0}


def test_a_tiny_budget_switches_to_the_single_net_and_the_version_follows(models):
    sel = load_classifier(ClassifierConfig(num_threads=1), budget_ms=0.001, dot_product=WITH_DOT)
    pair_version = sel.version
    assert sel.active == PAIR  # nothing classified yet
    sel.classify(_frame(), [])  # no face: nothing to decide, nothing counted
    assert sel.active == PAIR and sel.stats()["frames_by_model"] == {PAIR: 0, SINGLE: 0}
    for _ in range(2):  # over budget on 2 frames: not yet (drop_frames = 3)
        sel.classify(_frame(), [BOX])
    assert sel.active == PAIR
    probs = sel.classify(_frame(), [BOX])  # the third: this frame already runs the single net
    assert sel.active == SINGLE and sel.name == SINGLE
    assert sel.version == load_metadata(DEFAULT_SINGLE_MODEL).version != pair_version
    np.testing.assert_allclose(probs, models[SINGLE].classify(_frame(), [BOX]), atol=1e-6)
    for _ in range(40):  # never fits: it stays on the single net
        sel.classify(_frame(), [BOX])
    st = sel.stats()
    assert st["active"] == SINGLE and st["switches"] == 1
    assert st["frames_by_model"] == {PAIR: 2, SINGLE: 41}
    assert st["faces_by_model"] == {PAIR: 2, SINGLE: 41}
    assert "budget" in st["reason"]


def test_the_other_stages_time_counts_against_the_budget(models):
    sel = _fixed_costs(models, budget_ms=10.0)
    sel.classify(_frame(), [BOX])  # 1 ms for the pair: fits
    assert sel.active == PAIR
    sel.observe_frame_ms(9.5 + sel._model_ms)  # detect/track/publish took 9.5 ms
    assert sel.stats()["other_stages_ms"] == pytest.approx(9.5, abs=1e-6)
    sel.classify(_frame(), [BOX])  # 9.5 + 1 > 10
    assert sel.active == SINGLE


def test_the_first_frames_do_not_count_and_cropping_counts_as_other_stages(models):
    sel = _fixed_costs(models, budget_ms=10.0, warmup_frames=3)
    for _ in range(3):  # start-up frames allocate buffers: 500 ms is not the steady cost
        sel.classify(_frame(), [BOX])
        sel.observe_frame_ms(500.0)
    assert sel.other_ms is None
    sel.classify(_frame(), [BOX] * 3)
    model_ms = sel._model_ms
    assert 0 < model_ms < 50
    sel.observe_frame_ms(model_ms + 2.0)
    assert sel.other_ms == pytest.approx(2.0)
    sel.classify(_frame(), [BOX])
    assert sel.active == PAIR and sel.switches == 0


def test_back_to_the_pair_only_after_it_fits_with_margin_for_n_frames(models):
    sel = _fixed_costs(models, budget_ms=10.0, recover_frames=5)
    gray = _frame()
    sel.classify(gray, [BOX] * 11)  # 11 ms > 10
    assert sel.active == SINGLE
    for _ in range(20):  # 9 ms fits the budget but not 0.8 x budget: no flapping back
        sel.classify(gray, [BOX] * 9)
    assert sel.active == SINGLE
    for _ in range(4):
        sel.classify(gray, [BOX] * 7)
    sel.classify(gray, [BOX] * 9)  # one frame over the margin restarts the count
    for _ in range(4):
        sel.classify(gray, [BOX] * 7)
    assert sel.active == SINGLE
    sel.classify(gray, [BOX] * 7)  # the fifth in a row
    assert sel.active == PAIR and sel.switches == 2
    assert sel.version == models[PAIR].version


def test_a_face_count_on_the_edge_does_not_flap(models):
    gray = _frame()
    sel = _fixed_costs(models, budget_ms=10.0, recover_frames=5)
    for i in range(60):  # 7 and 11 faces alternating: 7 fits, 11 breaks the budget
        sel.classify(gray, [BOX] * (7 if i % 2 else 11))
    assert sel.switches == 1 and sel.active == SINGLE
    # by default one frame over is not a reason to drop the pair (the budget is a mean)
    sel = _fixed_costs(models, budget_ms=10.0, recover_frames=5, drop_frames=3)
    for i in range(60):
        sel.classify(gray, [BOX] * (7 if i % 2 else 11))
    assert sel.switches == 0 and sel.active == PAIR


def test_a_quick_relapse_doubles_the_wait_for_the_pair(models):
    gray = _frame()
    sel = _fixed_costs(models, budget_ms=10.0, recover_frames=5)
    sel.classify(gray, [BOX] * 11)
    for _ in range(5):
        sel.classify(gray, [BOX] * 7)
    assert sel.active == PAIR and sel.switches == 2
    sel.classify(gray, [BOX] * 11)  # over again right after coming back
    assert sel.active == SINGLE and sel.recover_needed == 10
    for _ in range(9):
        sel.classify(gray, [BOX] * 7)
    assert sel.active == SINGLE
    sel.classify(gray, [BOX] * 7)
    assert sel.active == PAIR and sel.switches == 4
    for _ in range(50):  # the pair holds for 10 x recover_frames: the base count again
        sel.classify(gray, [BOX] * 7)
    assert sel.recover_needed == 5
    sel.classify(gray, [BOX] * 11)
    assert sel.active == SINGLE and sel.recover_needed == 5


def test_learned_load_scales_both_models(models):
    sel = ModelSelector(
        models,
        "auto",
        budget_ms=1000.0,
        dot_product=WITH_DOT,
        costs={PAIR: CostModel(0.0, 1e-3), SINGLE: CostModel(0.0, 5e-4)},  # far too cheap
    )
    for _ in range(30):
        sel.classify(_frame(), [BOX])
    # each real call took far longer than 1 us: the shared factor rose (clipped at 10x a call)
    assert sel.load_factor > 5.0
    assert sel.predicted_ms(SINGLE, 1) == pytest.approx(5e-4 * sel.load_factor)


def test_without_int8_dot_products_auto_runs_the_single_net_only():
    sel = load_classifier(ClassifierConfig(num_threads=1), budget_ms=1e6, dot_product=NO_DOT)
    assert sel.active == SINGLE and not sel.switching
    for _ in range(40):  # a budget the pair would fit many times over
        sel.classify(_frame(), [BOX])
    st = sel.stats()
    assert st["active"] == SINGLE and st["switches"] == 0
    assert st["int8_dot_product"] is False and "dot-product" in st["reason"]
    assert st["frames_by_model"] == {PAIR: 0, SINGLE: 40}


@pytest.mark.parametrize(("mode", "active"), [("pair", PAIR), ("single", SINGLE)])
def test_pinned_models_never_switch(mode, active):
    sel = load_classifier(ClassifierConfig(model=mode, num_threads=1), budget_ms=0.001)
    assert list(sel.models) == [active]
    for _ in range(3):
        sel.classify(_frame(), [BOX])
    assert sel.active == active and sel.switches == 0
    assert sel.stats()["mode"] == mode


def test_a_model_path_of_ones_own_runs_alone_under_auto(tmp_path):
    own = tmp_path / "mine.tflite"
    shutil.copy(DEFAULT_SINGLE_MODEL, own)
    doc = json.loads(metadata_path(DEFAULT_SINGLE_MODEL).read_text())
    metadata_path(own).write_text(json.dumps({**doc, "model_file": own.name}))
    sel = load_classifier(ClassifierConfig(model_path=str(own), num_threads=1), budget_ms=1.0)
    assert list(sel.models) == [PAIR] and sel.version == doc["version"]
    assert "model_path" in sel.reason


def test_models_with_different_labels_are_refused(tmp_path, models):
    other = tmp_path / "single.tflite"
    shutil.copy(DEFAULT_SINGLE_MODEL, other)
    doc = json.loads(metadata_path(DEFAULT_SINGLE_MODEL).read_text())
    doc["labels"] = list(reversed(doc["labels"]))
    metadata_path(other).write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="share their labels"):
        ModelSelector({PAIR: models[PAIR], SINGLE: EmotionClassifier(other)}, "auto")
    cfg = ClassifierConfig(single_model_path=str(other), num_threads=1)
    with pytest.raises(ModelError, match="share their labels"):
        load_classifier(cfg, budget_ms=100.0, dot_product=WITH_DOT)


def test_a_missing_single_model_path_is_a_model_error(tmp_path):
    cfg = ClassifierConfig(single_model_path=str(tmp_path / "nope.tflite"))
    with pytest.raises(ModelError, match="not found"):
        load_classifier(cfg, budget_ms=100.0)


def test_config_model_choices_and_the_single_model_path_rule():
    assert ClassifierConfig().model == "auto"
    with pytest.raises(ConfigError, match="classifier.model"):
        from_dict({"classifier": {"model": "fastest"}})
    with pytest.raises(ConfigError, match="classifier.model_path: not used with model"):
        from_dict({"classifier": {"model": "single", "model_path": "/x/m.tflite"}})
    cfg = from_dict(
        {"classifier": {"model": "single", "model_path": "/x/m.tflite", "single_model_path": "s"}}
    )
    assert cfg.classifier.single_model_path == "s"


# -- stats ------------------------------------------------------------------------------------


def test_stats_payload_reports_which_model_ran_and_is_schema_valid(models):
    jsonschema = pytest.importorskip("jsonschema")
    from emotion_edge.stats import BudgetFigures, FrameCounters, StageTimes, stats_payload

    sel = _fixed_costs(models, budget_ms=10.0)
    sel.classify(_frame(), [BOX] * 3)
    sel.observe_frame_ms(4.0 + sel._model_ms)
    sel.classify(_frame(), [BOX] * 12)  # over: the single net
    schema = json.loads(SCHEMA.read_text())

    def payload(classifier):
        return stats_payload(
            device_id="d",
            model_version=sel.version,
            software_version="0",
            ts=1.0,
            uptime_s=1.0,
            interval_s=1.0,
            interval_frames=2,
            budget=BudgetFigures(10.0, 1, 0, 0),
            counters=FrameCounters(),
            stages_ms=StageTimes().summary(),
            capture={},
            faces=0,
            detector="blazeface",
            source_kind="demo",
            output_mode="stdout",
            output_stats={},
            classifier=classifier,
        )

    st = payload(classifier_stats(sel))
    jsonschema.validate(st, schema)
    c = st["classifier"]
    assert c["active"] == SINGLE and c["version"] == models[SINGLE].version
    assert c["frames_by_model"] == {PAIR: 1, SINGLE: 1}
    assert c["faces_by_model"] == {PAIR: 3, SINGLE: 12}
    assert c["ms_per_face"] == {PAIR: 1.0, SINGLE: 0.5} and c["other_stages_ms"] == 4.0
    # a bare EmotionClassifier (no selector) and a producer that does not report it
    jsonschema.validate(payload(classifier_stats(models[PAIR])), schema)
    assert payload(classifier_stats(models[PAIR]))["classifier"]["mode"] == "fixed"
    jsonschema.validate(payload(None), schema)


# -- the CPU rule -----------------------------------------------------------------------------

EPYC_AVX2 = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma bmi2\n"
XEON_VNNI = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni amx_int8\n"
ALDER_LAKE = "flags\t\t: avx2 avx_vnni\n"
PI4 = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd08\n"
PI5 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp\n"


@pytest.mark.parametrize(
    ("text", "machine", "present", "flags"),
    [
        (EPYC_AVX2, "x86_64", False, ()),
        (XEON_VNNI, "x86_64", True, ("avx512_vnni", "amx_int8")),
        (ALDER_LAKE, "x86_64", True, ("avx_vnni",)),
        (PI4, "aarch64", False, ()),
        (PI5, "aarch64", True, ("asimddp",)),
        (PI5, "riscv64", None, ()),
        ("processor\t: 0\n", "x86_64", None, ()),
    ],
)
def test_int8_dot_product_from_cpuinfo(text, machine, present, flags):
    got = int8_dot_product(text, machine)
    assert (got.present, got.flags) == (present, flags)
    assert got.describe()


def test_this_machine_is_read():
    got = int8_dot_product()
    assert got.present is None or got.present == bool(got.flags)
