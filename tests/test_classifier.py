"""The int8 emotion classifier on a real (tiny, untrained) LiteRT model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from emotion_edge.classify.classifier import DEFAULT_MODEL, EmotionClassifier, resolve_model_path
from emotion_edge.classify.model_meta import metadata_path, sha256_file
from emotion_edge.errors import ModelError
from emotion_edge.preprocess import FER2013_LABELS, crop_face


def _copy_model(src: Path, dst_dir: Path) -> Path:
    dst = dst_dir / src.name
    shutil.copy(src, dst)
    shutil.copy(metadata_path(src), metadata_path(dst))
    return dst


def _frame(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # smooth structure rather than pure noise, so crops differ in a face-like way
    base = rng.integers(0, 256, (60, 80), dtype=np.uint8)
    import cv2

    return cv2.resize(base, (640, 480), interpolation=cv2.INTER_CUBIC)


BOXES = [
    (100.0, 80.0, 90.0, 110.0),
    (400.0, 200.0, 60.0, 60.0),
    (-20.0, 400.0, 70.0, 90.0),
    (300.0, 50.0, 150.0, 150.0),
    (10.0, 10.0, 30.0, 30.0),
]


def test_batch_equals_one_by_one(emotion_model):
    clf = EmotionClassifier(emotion_model, num_threads=1)
    gray = _frame()
    batched = clf.classify(gray, BOXES)
    single = np.concatenate([clf.classify(gray, [b]) for b in BOXES])
    assert batched.shape == (len(BOXES), len(clf.labels))
    np.testing.assert_allclose(batched, single, atol=1e-6)
    np.testing.assert_allclose(batched.sum(axis=1), 1.0, atol=1e-5)
    assert (batched >= 0).all()
    # different crops give different outputs: the model really sees the pixels
    assert not np.allclose(batched[0], batched[1])


def test_batches_larger_than_max_batch_are_split(emotion_model):
    clf = EmotionClassifier(emotion_model, num_threads=1, max_batch=2)
    gray = _frame(1)
    out = clf.classify(gray, BOXES)
    ref = np.concatenate([clf.classify(gray, [b]) for b in BOXES])
    np.testing.assert_allclose(out, ref, atol=1e-6)
    assert set(clf._cache) <= {1, 2}


def test_one_interpreter_call_per_frame(emotion_model):
    clf = EmotionClassifier(emotion_model, num_threads=1)
    gray = _frame(2)
    clf.classify(gray, BOXES)
    interp = clf._cache[len(BOXES)]
    calls = []
    original = interp.invoke

    def counting_invoke():
        calls.append(1)
        return original()

    interp.invoke = counting_invoke
    clf.classify(gray, BOXES)
    assert len(calls) == 1


def test_uses_shared_preprocessing(emotion_model):
    clf = EmotionClassifier(emotion_model, num_threads=1)
    gray = _frame(3)
    crops = clf.preprocess(gray, BOXES[:2])
    for crop, box in zip(crops, BOXES[:2], strict=True):
        np.testing.assert_array_equal(crop, crop_face(gray, box, clf.meta.face_crop_scale))
    np.testing.assert_allclose(clf.predict_faces(crops), clf.classify(gray, BOXES[:2]))


def test_no_faces(emotion_model):
    clf = EmotionClassifier(emotion_model, num_threads=1)
    assert clf.classify(_frame(), []).shape == (0, len(clf.labels))


def test_labels_and_version_from_metadata(emotion_model):
    clf = EmotionClassifier(emotion_model, num_threads=1)
    meta = json.loads(metadata_path(emotion_model).read_text())
    assert clf.labels == tuple(meta["labels"]) and set(clf.labels) <= set(FER2013_LABELS)
    assert clf.version == meta["version"]


def test_tampered_model_refused(emotion_model, tmp_path):
    model = _copy_model(emotion_model, tmp_path)
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        EmotionClassifier(model)


def test_corrupt_model_with_matching_sidecar_refused(emotion_model, tmp_path):
    """Garbage bytes whose sha256 is (re)recorded still fail: not a TFLite model."""
    model = _copy_model(emotion_model, tmp_path)
    model.write_bytes(b"this is not a flatbuffer" * 10)
    meta = json.loads(metadata_path(model).read_text())
    meta["sha256"] = sha256_file(model)
    metadata_path(model).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="not a valid TFLite model"):
        EmotionClassifier(model)


def test_labels_disagreeing_with_output_refused(emotion_model, tmp_path):
    model = _copy_model(emotion_model, tmp_path)
    meta = json.loads(metadata_path(model).read_text())
    meta["labels"] = meta["labels"][:-1]
    metadata_path(model).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"output has \d+ classes"):
        EmotionClassifier(model)


def test_input_quantization_mismatch_refused(emotion_model, tmp_path):
    model = _copy_model(emotion_model, tmp_path)
    meta = json.loads(metadata_path(model).read_text())
    meta["input"]["zero_point"] += 1
    metadata_path(model).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="input quantization"):
        EmotionClassifier(model)


def test_input_dtype_mismatch_refused(emotion_model, tmp_path):
    model = _copy_model(emotion_model, tmp_path)
    meta = json.loads(metadata_path(model).read_text())
    meta["input"]["dtype"] = "float32"
    metadata_path(model).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="input dtype int8"):
        EmotionClassifier(model)


def test_missing_sidecar_and_missing_model(emotion_model, tmp_path):
    model = tmp_path / "m.tflite"
    shutil.copy(emotion_model, model)
    with pytest.raises(ModelError, match="metadata file"):
        EmotionClassifier(model)
    with pytest.raises(ModelError, match="not found"):
        EmotionClassifier(tmp_path / "nope.tflite")


def test_default_model_path():
    assert resolve_model_path("") == DEFAULT_MODEL
    assert resolve_model_path("~/m.tflite") == Path("~/m.tflite").expanduser()
    if DEFAULT_MODEL.is_file():  # the trained model, once shipped, must pass every check
        clf = EmotionClassifier(DEFAULT_MODEL, num_threads=1)
        assert clf.classify(_frame(), BOXES[:2]).shape == (2, len(clf.labels))
    else:
        with pytest.raises(ModelError, match="--model"):
            EmotionClassifier(DEFAULT_MODEL)


def _with_sidecar(emotion_model: Path, tmp_path: Path, **inference) -> Path:
    model = _copy_model(emotion_model, tmp_path)
    doc = json.loads(metadata_path(model).read_text())
    doc["inference"] = inference
    metadata_path(model).write_text(json.dumps(doc))
    return model


def test_flip_average_is_the_mean_of_each_face_and_its_mirror(emotion_model, tmp_path):
    plain = EmotionClassifier(emotion_model, num_threads=1, flip_average=False)
    faces = plain.preprocess(_frame(2), BOXES)
    mirrored = plain.predict_faces(faces[:, :, ::-1])
    want = (plain.predict_faces(faces) + mirrored) / 2
    # the sidecar turns it on; split batches give the same answer as one call
    model = _with_sidecar(emotion_model, tmp_path, flip_average=True)
    for max_batch in (8, 2):
        clf = EmotionClassifier(model, num_threads=1, max_batch=max_batch)
        assert clf.flip_average
        np.testing.assert_allclose(clf.predict_faces(faces), want, atol=1e-6)
    # a mirror-symmetric face gives what the plain model gives
    sym = np.concatenate([faces[:, :, :24], faces[:, :, :24][:, :, ::-1]], axis=2)
    np.testing.assert_allclose(clf.predict_faces(sym), plain.predict_faces(sym), atol=1e-6)
    # the caller's setting overrides the sidecar, both ways
    off = EmotionClassifier(model, num_threads=1, flip_average=False)
    np.testing.assert_allclose(off.predict_faces(faces), plain.predict_faces(faces), atol=1e-6)
    assert EmotionClassifier(emotion_model, num_threads=1, flip_average=True).flip_average


def test_flip_average_in_the_sidecar_must_be_a_boolean(emotion_model, tmp_path):
    model = _with_sidecar(emotion_model, tmp_path, flip_average="yes")
    with pytest.raises(ModelError, match="flip_average must be true or false"):
        EmotionClassifier(model)


def test_flip_average_config_setting_reaches_the_classifier(emotion_model):
    from emotion_edge.classify.classifier import load_classifier
    from emotion_edge.config import ClassifierConfig

    got = {
        mode: load_classifier(ClassifierConfig(model_path=str(emotion_model), flip_average=mode))
        for mode in ("model", "on", "off")
    }
    # .classifier: the EmotionClassifier the selector runs (model_path alone under auto)
    assert got["model"].classifier.flip_average is False  # the test model's sidecar: no flag
    assert got["on"].classifier.flip_average is True
    assert got["off"].classifier.flip_average is False
