"""Distillation stage pieces on generated data: teacher soft labels, a student trained on
them, and the daemon-framed re-crops of training images."""

import json
import shutil

import numpy as np
import pytest
from fer_fixtures import make_fer_files

pytest.importorskip("tensorflow", reason="training needs the [train] extra")

from emotion_edge.preprocess import FER2013_LABELS  # noqa: E402
from emotion_edge_train import cli as train_cli  # noqa: E402
from emotion_edge_train.data import fold_keys, load_fer  # noqa: E402
from emotion_edge_train.teachers import (  # noqa: E402
    SoftLabelError,
    ensemble_probs,
    load_soft_labels,
)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("fer")
    make_fer_files(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMOTION_EDGE_CACHE", str(root / "cache"))
        out = root / "teacher"
        assert train_cli.main(["fit", "--quick", "--data", str(root), "--out", str(out)]) == 0
        yield root, out / "best.h5"


def test_ensemble_averages_teachers_and_mirror_images():
    images = np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8)

    def left_bright(x):  # probability of class 0 = mean of the left half
        p0 = x[:, :, :24, 0].mean(axis=(1, 2))
        return np.stack([p0, 1 - p0], 1)

    def const(x):
        return np.tile([0.2, 0.8], (len(x), 1))

    probs = ensemble_probs([left_bright, const], images)
    x = images / 255.0
    flip_mean = (x[:, :, :24].mean((1, 2)) + x[:, :, ::-1][:, :, :24].mean((1, 2))) / 2
    np.testing.assert_allclose(probs[:, 0], (flip_mean + 0.2) / 2, rtol=1e-5)


def test_soft_labels_file_checked_against_its_data(teacher, tmp_path, monkeypatch):
    root, model = teacher
    monkeypatch.setenv("EMOTION_EDGE_CACHE", str(root / "cache"))
    out = tmp_path / "soft.npz"
    args = ["soft-labels", str(model), str(model), "--data", str(root), "--out", str(out)]
    assert train_cli.main(args) == 0
    ds = load_fer(root)
    probs = load_soft_labels(out, ds, FER2013_LABELS)
    assert probs.shape == (len(ds), 7)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-3)
    with pytest.raises(SoftLabelError, match="labels"):
        load_soft_labels(out, ds, FER2013_LABELS[:5])
    other = tmp_path / "other"
    other.mkdir()
    make_fer_files(other, seed=1)
    with pytest.raises(SoftLabelError, match="other data"):
        load_soft_labels(out, load_fer(other, cache=False), FER2013_LABELS)
    missing = ["soft-labels", str(tmp_path / "nope.h5"), "--data", str(root), "--out", str(out)]
    assert train_cli.main(missing) == 2


def test_student_trains_on_soft_labels_and_device_crops(teacher, tmp_path, monkeypatch):
    root, model = teacher
    monkeypatch.setenv("EMOTION_EDGE_CACHE", str(root / "cache"))
    soft = tmp_path / "soft.npz"
    assert train_cli.main(["soft-labels", str(model), "--data", str(root), "--out", str(soft)]) == 0
    out = tmp_path / "student"
    args = ["fit", "--quick", "--data", str(root), "--out", str(out), "--teacher-labels"]
    args += [str(soft), "--teacher-weight", "0.6", "--device-crop-prob", "0.5"]
    assert train_cli.main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["teacher_labels"] == str(soft)
    assert (m["config"]["teacher_weight"], m["config"]["device_crop_prob"]) == (0.6, 0.5)
    assert list(root.glob("cache/device-crops-*.npz")), "re-crops are cached"
    bad = ["fit", "--quick", "--data", str(root), "--out", str(out), "--teacher-weight", "2"]
    assert train_cli.main(bad) == 2


def test_out_of_fold_teachers_label_only_the_rows_they_left_out(teacher, tmp_path, monkeypatch):
    root, _ = teacher
    monkeypatch.setenv("EMOTION_EDGE_CACHE", str(root / "cache"))
    models, rows = [], []
    for i in range(2):
        out = tmp_path / f"fold{i}"
        args = ["fit", "--quick", "--data", str(root), "--out", str(out), "--seed", str(i)]
        assert train_cli.main([*args, "--holdout-fold", f"{i}/2"]) == 0
        m = json.loads((out / "metrics.json").read_text())
        assert m["config"]["holdout_fold"] == f"{i}/2"
        rows.append(m["train_rows"])
        models.append(out / "best.h5")
    ds = load_fer(root)
    n_train = len(ds.split("Training"))
    assert sum(rows) <= n_train and max(rows) < 0.6 * n_train  # each fold left out about half

    def soft_labels(teachers, out, folds=True):
        flag = ["--folds"] if folds else []
        return train_cli.main(
            ["soft-labels", *flag, *map(str, teachers), "--data", str(root), "--out", str(out)]
        )

    soft = tmp_path / "oof.npz"
    assert soft_labels(models, soft) == 0
    oof = load_soft_labels(soft, ds, FER2013_LABELS)
    single = []
    for i, model in enumerate(models):
        one = tmp_path / f"one{i}.npz"
        assert soft_labels([model], one, folds=False) == 0
        single.append(load_soft_labels(one, ds, FER2013_LABELS))
    train = ds.split("Training")
    keys = fold_keys(ds.images)
    for i in range(2):
        mine = train[keys[train] % 2 == i]
        np.testing.assert_allclose(oof[mine], single[i][mine], atol=2e-3)
    test = ds.split("PrivateTest")
    np.testing.assert_allclose(oof[test], (single[0][test] + single[1][test]) / 2, atol=2e-3)
    assert not np.allclose(single[0][train], single[1][train], atol=2e-3)  # the test can fail

    assert soft_labels([models[1], models[0]], tmp_path / "x.npz") == 2  # swapped
    committed = tmp_path / "committed"  # NAME.h5 beside NAME_metrics.json, as in artifacts/
    committed.mkdir()
    for i, model in enumerate(models):
        shutil.copy(model, committed / f"teacher_f{i}.h5")
        shutil.copy(model.with_name("metrics.json"), committed / f"teacher_f{i}_metrics.json")
    named = [committed / "teacher_f1.h5", committed / "teacher_f0.h5"]
    assert soft_labels(named, tmp_path / "y.npz") == 2
    for i, model in enumerate(models):  # a teacher cut by the old row-number rule
        m = json.loads(model.with_name("metrics.json").read_text())
        del m["holdout_rule"]
        (committed / f"teacher_f{i}_metrics.json").write_text(json.dumps(m))
    named.reverse()
    assert soft_labels(named, tmp_path / "y.npz") == 2
    for i, model in enumerate(models):  # the same teachers with their rule recorded pass
        shutil.copy(model.with_name("metrics.json"), committed / f"teacher_f{i}_metrics.json")
    assert soft_labels(named, tmp_path / "y.npz") == 0
    bad_fold = ["fit", "--quick", "--data", str(root), "--out", str(tmp_path / "b")]
    assert train_cli.main([*bad_fold, "--holdout-fold", "2/2"]) == 2


def test_holdout_folds_keep_identical_images_together(teacher):
    from emotion_edge_train.config import TrainConfig
    from emotion_edge_train.train import prepare_rows

    root, _ = teacher
    ds = load_fer(root)
    train = ds.split("Training")
    a, b = train[10], train[13]  # rows of different parity: a row-number rule splits them
    ds.images[b] = ds.images[a]
    keys = fold_keys(ds.images)
    assert keys[b] == a and keys[a] == a and (keys[train] != train).sum() == 1
    kept = []
    for i in range(2):
        rows = prepare_rows(ds, TrainConfig(holdout_fold=f"{i}/2"), FER2013_LABELS)[0]
        kept.append(set(rows.tolist()))
        assert (a in kept[i]) == (b in kept[i])  # the twins are both seen or both left out
    everything = set(prepare_rows(ds, TrainConfig(), FER2013_LABELS)[0].tolist())
    assert kept[0] | kept[1] == everything and not kept[0] & kept[1]


def test_device_framed_recrops_a_real_face():
    import cv2
    from emotion_edge.config import DetectorConfig
    from emotion_edge.detect.detector import make_detector
    from emotion_edge.preprocess import crop_face
    from emotion_edge_train.device_crops import device_framed

    skimage_data = pytest.importorskip("skimage.data")
    gray = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2GRAY)
    (det,) = [d for d in make_detector(DetectorConfig()).detect(gray) if d.score > 0.7][:1]
    face = crop_face(gray, det.box, 1.3, -0.1)  # a FER-like framing of a real face
    noise = np.random.default_rng(0).integers(0, 256, (1, 48, 48), dtype=np.uint8)
    crops, found = device_framed(np.stack([face, noise[0]]))
    assert found.tolist() == [True, False]
    assert crops.shape == (2, 48, 48) and crops.dtype == np.uint8
    np.testing.assert_array_equal(crops[1], noise[0])  # not found: the dataset crop is kept
    assert not np.array_equal(crops[0], face)
    # the re-crop is the same face, framed a little tighter: still strongly correlated
    assert np.corrcoef(crops[0].ravel(), face.ravel())[0, 1] > 0.5


def test_online_teacher_targets_are_its_predictions_on_the_augmented_view():
    from emotion_edge_train.config import TrainConfig
    from emotion_edge_train.tf_env import keras, tf
    from emotion_edge_train.train import make_dataset

    # a "teacher" whose class-0 probability is the mean brightness of the left half it sees:
    # it tells the un-flipped image from its mirror, which fixed soft labels cannot
    face = keras.Input((48, 48, 1))
    left = keras.layers.Lambda(lambda x: tf.reduce_mean(x[:, :, :24, 0], axis=(1, 2)))(face)
    probs = keras.layers.Lambda(lambda p: tf.stack([p, 1 - p], axis=1))(left)
    teacher = keras.Model(face, probs)
    images = np.zeros((8, 48, 48), np.uint8)
    images[:, :, :24] = 255  # left half white: the teacher says class 0 until flipped
    hard = np.tile(np.float32([0.0, 1.0]), (8, 1))
    cfg = TrainConfig(batch_size=8, teacher_weight=0.75, augment=False)
    ((_, y, _),) = make_dataset(images, hard, np.ones(8, np.float32), cfg, True, teacher=teacher)
    np.testing.assert_allclose(y.numpy(), np.tile([0.75, 0.25], (8, 1)), atol=1e-5)
    flipped = images[:, :, ::-1].copy()
    ((_, y, _),) = make_dataset(flipped, hard, np.ones(8, np.float32), cfg, True, teacher=teacher)
    np.testing.assert_allclose(y.numpy(), hard, atol=1e-5)
    ((_, y, _),) = make_dataset(images, hard, np.ones(8, np.float32), cfg, False, teacher=teacher)
    np.testing.assert_allclose(y.numpy(), hard), "validation targets stay the labels"


def test_student_distils_online_from_teacher_models(teacher, tmp_path, monkeypatch):
    root, model = teacher
    monkeypatch.setenv("EMOTION_EDGE_CACHE", str(root / "cache"))
    out = tmp_path / "student"
    args = ["fit", "--quick", "--data", str(root), "--out", str(out), "--teacher-models"]
    args += [str(model), str(model), "--teacher-weight", "0.7"]
    assert train_cli.main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["teacher_models"] == [str(model), str(model)]
    assert m["fer2013_PublicTest"]["accuracy"] > 0
    soft = tmp_path / "soft.npz"
    both = args + ["--teacher-labels", str(soft)]
    assert train_cli.main(both) == 2
    missing = ["fit", "--quick", "--data", str(root), "--out", str(out)]
    assert train_cli.main(missing + ["--teacher-models", str(tmp_path / "nope.h5")]) == 2
