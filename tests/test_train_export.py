"""The training and export pipelines end to end on generated data (tiny net, seconds)."""

import hashlib
import json
import shutil

import pytest
from fer_fixtures import make_fer_files

pytest.importorskip("tensorflow", reason="training/export need the [train] extra")

from emotion_edge.classify.model_meta import load_metadata  # noqa: E402
from emotion_edge_export import cli as export_cli  # noqa: E402
from emotion_edge_train import cli as train_cli  # noqa: E402


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("fer")
    make_fer_files(root)
    out = root / "run"
    args = ["fit", "--quick", "--data", str(root), "--out", str(out), "--epochs", "2"]
    args += ["--augment-strength", "0.5", "--dropout", "0.2", "--l2", "0"]
    with pytest.MonkeyPatch.context() as mp:
        # parsed-data cache of this temporary data set: not in the user's ~/.cache
        mp.setenv("EMOTION_EDGE_CACHE", str(root / "cache"))
        assert train_cli.main(args) == 0
        yield root, out


def test_training_writes_model_metrics_and_plots(trained_run):
    _, out = trained_run
    for name in (
        "best.h5",
        "last.h5",
        "state.json",
        "history.csv",
        "metrics.json",
        "curves.png",
        "confusion_fer2013_PrivateTest.png",
    ):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["duplicates"]["train_in_test"] == 1
    for key in ("fer2013_PublicTest", "fer2013_PrivateTest", "ferplus_valid", "ferplus_test"):
        assert 0.0 <= m[key]["accuracy"] <= 1.0
        assert len(m[key]["confusion_matrix"]) == 7
    assert m["epochs_run"] == 2
    bn = m["bn_recalibration"]  # on by default, kept only if PublicTest holds
    assert bn["applied"] == (bn["val_accuracy_after"] >= bn["val_accuracy_before"])
    # the recipe is recorded so QAT (export) reuses the same augmentation
    assert m["config"]["augment_strength"] == 0.5
    assert (m["config"]["dropout"], m["config"]["l2"]) == (0.2, 0.0)


def test_training_resumes_from_checkpoint(trained_run):
    root, out = trained_run
    args = ["fit", "--quick", "--data", str(root), "--out", str(out)]
    # --quick fixes 2 epochs: the run is complete, so resuming trains nothing more
    assert train_cli.main(args) == 0
    state = json.loads((out / "state.json").read_text())
    assert state["epoch"] == 2 and len(state["history"]) == 2


def test_sgd_optimizer_is_trained_with_and_kept_for_resuming(trained_run, tmp_path):
    from emotion_edge_train.tf_env import keras
    from emotion_edge_train.train import make_optimizer

    root, _ = trained_run
    run = tmp_path / "sgd"
    args = ["fit", "--quick", "--data", str(root), "--out", str(run)]
    assert train_cli.main([*args, "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.8"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert (m["config"]["optimizer"], m["config"]["momentum"]) == ("sgd", 0.8)
    # resuming restores the optimizer from last.h5, not from the command line's default
    opt = keras.models.load_model(run / "last.h5").optimizer
    assert isinstance(opt, keras.optimizers.SGD) and opt.nesterov
    assert abs(float(opt.momentum) - 0.8) < 1e-6
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        make_optimizer(1e-3, "rmsprop")


def test_swa_epochs_continue_a_finished_run(trained_run, tmp_path):
    root, out = trained_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    args = ["fit", "--quick", "--data", str(root), "--out", str(run), "--swa-epochs", "2"]
    assert train_cli.main(args) == 0
    state = json.loads((run / "state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3, 4]
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 4  # header + 4 epochs
    m = json.loads((run / "metrics.json").read_text())
    swa = m["swa"]
    assert swa["snapshots"] == 2 and 0.0 <= swa["val_accuracy"] <= 1.0
    assert (run / "swa.h5").is_file()
    assert swa["selected"] == (swa["val_accuracy"] >= swa["best_single_val_accuracy"])
    # finished: running it again trains nothing and takes no new snapshot
    assert train_cli.main(args) == 0
    assert json.loads((run / "metrics.json").read_text())["swa"]["snapshots"] == 2


def test_export_quick_produces_verified_int8_model(trained_run, tmp_path):
    root, out = trained_run
    rep, inst = tmp_path / "report", tmp_path / "models"
    args = [
        "run",
        "--quick",
        "--float-model",
        str(out / "best.h5"),
        "--data",
        str(root),
        "--out",
        str(rep),
        "--install",
        str(inst),
        "--calibration",
        "50",
    ]
    assert export_cli.main(args) == 0
    report = json.loads((rep / "report.json").read_text())
    for key in ("float", "ptq_int8", "qat_int8"):
        assert "fer2013_PrivateTest" in report[key]
    bn = report["qat_int8"]["fine_tune"]["bn_recalibration"]  # the float recipe had it on
    assert bn["applied"] == (bn["val_accuracy_after"] >= bn["val_accuracy_before"])
    assert report["qat_int8"]["input_dtype"] == "int8"
    assert report["qat_int8"]["output_dtype"] == "int8"
    meta = load_metadata(inst / "emotion_int8.tflite")
    assert meta.labels[0] == "angry" and meta.extra["metrics"]["fer2013_PrivateTest"]["int8"] >= 0
    # the version names the file's own hash, so two exports of one day differ in events
    digest = hashlib.sha256((inst / "emotion_int8.tflite").read_bytes()).hexdigest()[:8]
    assert meta.version == f"{report['date']}+{report['chosen']}.{digest}-quick"
    assert (rep / "report.md").read_text().startswith("# Export report")
    # PTQ vs QAT and flip averaging: chosen on PublicTest images, FER2013 and FER+ labels
    sel = report["selection"]
    for key in ("ptq_int8", "qat_int8", "chosen_int8_flip"):
        r = report[key]
        mean = (r["fer2013_PublicTest"]["accuracy"] + r["ferplus_valid"]["accuracy"]) / 2
        assert sel[key] == pytest.approx(mean, abs=1e-5)
    assert report["chosen"] == ("qat" if sel["qat_int8"] >= sel["ptq_int8"] else "ptq")
    # flip averaging: measured on the shipped file, kept (auto) only if the score rises
    chosen = f"{report['chosen']}_int8"
    assert report["flip_average"] == (sel["chosen_int8_flip"] > sel[chosen])
    assert meta.flip_average == report["flip_average"]
    assert "flip averaging" in (rep / "report.md").read_text()
    # the installed file + sidecar verifies on its own, through the device's classifier
    installed = inst / "emotion_int8.tflite"
    assert export_cli.main(["verify", str(installed), "--data", str(root)]) == 0
    assert (
        export_cli.main(["verify", str(installed), "--data", str(root), "--flip-average", "on"])
        == 0
    )


def test_export_ptq_only_installs_under_its_own_name(trained_run, tmp_path, monkeypatch):
    """--qat-epochs 0: the PTQ file alone (no training step), installed beside the pair
    under --install-name; --install '' installs nothing (not even into the cwd)."""
    root, out = trained_run
    rep, inst = tmp_path / "report", tmp_path / "models"
    common = ["run", "--quick", "--float-model", str(out / "best.h5"), "--data", str(root)]
    common += ["--calibration", "50", "--qat-epochs", "0", "--flip-average", "off"]
    args = [*common, "--out", str(rep), "--install", str(inst)]
    assert export_cli.main([*args, "--install-name", "emotion_int8_single.tflite"]) == 0
    report = json.loads((rep / "report.json").read_text())
    assert report["chosen"] == "ptq" and report["qat_int8"] is None
    assert report["selection"]["qat_int8"] is None and report["qat_epochs"] == 0
    assert "QAT not run" in (rep / "report.md").read_text()
    assert sorted(p.name for p in inst.iterdir()) == [
        "emotion_int8_single.json",
        "emotion_int8_single.tflite",
    ]
    meta = load_metadata(inst / "emotion_int8_single.tflite")
    assert meta.extra["model_file"] == "emotion_int8_single.tflite"
    assert meta.extra["report"] == str(rep / "report.json")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert export_cli.main([*common, "--out", str(tmp_path / "r2"), "--install", ""]) == 0
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize(
    "main, argv",
    [
        (train_cli.main, ["fit", "--quick"]),
        (train_cli.main, ["evaluate", "model.h5"]),
        (export_cli.main, ["run", "--quick"]),
        (export_cli.main, ["verify", "model.tflite"]),
    ],
)
def test_data_has_no_default_location(main, argv, capsys):
    """No CLI reaches for ../shared by itself: without --data it says how to pass it."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--data is required" in err and "fer2013.csv" in err and "--data ../shared/data" in err


def test_export_errors_are_clear(tmp_path, caplog):
    data = ["--data", str(tmp_path)]
    assert export_cli.main(["run", "--float-model", str(tmp_path / "nope.h5"), *data]) == 2
    assert "float model not found" in caplog.text
    from emotion_edge_train.tf_env import keras

    inp = keras.Input((48, 48, 1))
    x = keras.layers.Lambda(lambda t: t * 2, name="times_two")(inp)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inp, keras.layers.Dense(7, activation="softmax")(x))
    path = tmp_path / "lambda.h5"
    model.save(path)
    (tmp_path / "garbage.h5").write_bytes(b"not hdf5")
    assert export_cli.main(["run", "--float-model", str(tmp_path / "garbage.h5"), *data]) == 2
    assert "cannot load" in caplog.text
    from emotion_edge_export.qat import UnsupportedLayerError, quantize

    with pytest.raises(UnsupportedLayerError, match="times_two"):
        quantize(model)
