"""Face detectors in the real LiteRT interpreter / OpenCV, scored on real labelled photos.

Recall floors are set a little below what was measured here (x86, ai-edge-litert, OpenCV 4.14)
so a different CPU's rounding does not fail them, while a broken decoder (wrong anchors,
letterbox, NMS) falls far below:
    python -m emotion_edge.tools.detector_eval ../shared/samples/dlib_faces/testing.xml --kind K
    blazeface 5/25 (short range: most of these faces are 37-44 px in a 500 px photo),
    blazeface_full 21/25, haar 25/25 with 2 false positives; none of them false on BlazeFace.
"""

from __future__ import annotations

import logging
import zipfile

import cv2
import numpy as np
import pytest
from emotion_edge.config import load_table
from emotion_edge.detect import detector as det
from emotion_edge.detect.detector import (
    BLAZEFACE,
    BlazeFaceDetector,
    Detection,
    DetectorConfig,
    HaarDetector,
    make_detector,
    ssd_anchors,
    weighted_nms,
)
from emotion_edge.errors import ConfigError, ModelError
from emotion_edge.geometry import iou
from emotion_edge.tools import extract_blazeface
from emotion_edge.tools.detector_eval import count_faces, evaluate, load_dlib_xml, match

# The astronaut's face in skimage.data.astronaut() (512x512), framed by hand from the photo.
ASTRONAUT_FACE = (172.0, 62.0, 108.0, 118.0)


@pytest.fixture(scope="module")
def astronaut_gray():
    data = pytest.importorskip("skimage.data", reason="needs scikit-image ([dev]/[demo] extra)")
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)


@pytest.fixture(scope="module")
def dlib_testing(samples_dir):
    xml = samples_dir / "dlib_faces" / "testing.xml"
    if not xml.is_file():
        pytest.skip(f"labelled boxes missing: {xml}")
    return load_dlib_xml(xml)


@pytest.fixture(scope="module", params=["blazeface", "blazeface_full"])
def blazeface(request):
    return make_detector(DetectorConfig(kind=request.param))


# -- decoding building blocks ---------------------------------------------------------------


def test_anchor_layout_matches_the_models():
    short = ssd_anchors(128, (8, 16, 16, 16), 2)
    full = ssd_anchors(192, (4,), 1)
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    # 16x16 grid, 2 anchors per cell first; then the 8x8 grid with 6 per cell.
    assert np.allclose(short[0], short[1]) and np.allclose(short[0], [0.5 / 16, 0.5 / 16])
    assert np.allclose(short[2], [1.5 / 16, 0.5 / 16])
    assert np.allclose(short[512:518], [0.5 / 8, 0.5 / 8])
    assert np.allclose(short[-1], [7.5 / 8, 7.5 / 8])
    assert np.allclose(full[48], [0.5 / 48, 1.5 / 48])


def test_weighted_nms_merges_overlaps_and_keeps_the_rest():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.6, 0.7], np.float32)
    kps = np.zeros((3, 6, 2), np.float32)
    out = weighted_nms(boxes, scores, kps, 0.3)
    assert len(out) == 2
    (b0, s0, _), (b1, s1, _) = out
    assert s0 == pytest.approx(0.9) and s1 == pytest.approx(0.7)
    assert b0[0] == pytest.approx(0.6 / 1.5)  # score-weighted mean of 0 and 1
    assert np.allclose(b1, [50, 50, 60, 60])


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0


# -- real photos ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["blazeface", "blazeface_full", "haar"])
def test_finds_the_astronauts_face(kind, astronaut_gray):
    d = make_detector(DetectorConfig(kind=kind))
    found = d.detect(astronaut_gray)
    assert len(found) == 1, found
    assert iou(found[0].box, ASTRONAUT_FACE) > 0.6
    if kind != "haar":
        assert found[0].score > 0.7
        kp = found[0].keypoints
        x, y, w, h = found[0].box
        assert kp.shape == (6, 2)
        # Eyes, nose and mouth (the first four keypoints) lie inside the face box.
        assert np.all((kp[:4, 0] > x) & (kp[:4, 0] < x + w) & (kp[:4, 1] > y) & (kp[:4, 1] < y + h))
        right_eye, left_eye = kp[0], kp[1]  # the subject's right eye is on the image's left
        assert right_eye[0] < left_eye[0] and abs(right_eye[1] - left_eye[1]) < h / 4


def test_boxes_are_in_frame_pixels_for_any_aspect(astronaut_gray):
    # The same photo inside a wider / taller frame: the box moves by the offset and keeps its
    # size (letterbox undone). Full range, because the face shrinks to ~14 px in the letterbox.
    d = make_detector(DetectorConfig(kind="blazeface_full"))
    (a,) = d.detect(astronaut_gray)
    wide = np.zeros((512, 900), np.uint8)
    wide[:, 300:812] = astronaut_gray
    tall = np.zeros((700, 512), np.uint8)
    tall[150:662] = astronaut_gray
    (b,) = d.detect(wide)
    (c,) = d.detect(tall)
    assert b.box[0] - a.box[0] == pytest.approx(300, abs=8)
    assert b.box[1] == pytest.approx(a.box[1], abs=8)
    assert c.box[0] == pytest.approx(a.box[0], abs=8)
    assert c.box[1] - a.box[1] == pytest.approx(150, abs=8)
    for x in (b, c):
        assert x.box[2] == pytest.approx(a.box[2], rel=0.15)


def test_min_face_px_drops_small_faces(astronaut_gray):
    assert make_detector(DetectorConfig(min_face_px=90)).detect(astronaut_gray)
    assert make_detector(DetectorConfig(min_face_px=150)).detect(astronaut_gray) == []


def test_rejects_color_input(astronaut_gray):
    d = make_detector(DetectorConfig())
    with pytest.raises(ValueError, match="grayscale"):
        d.detect(np.dstack([astronaut_gray] * 3))


@pytest.mark.parametrize("kind, floor", [("blazeface", 0.16), ("blazeface_full", 0.76)])
def test_recall_on_labelled_faces(kind, floor, dlib_testing):
    res = evaluate(make_detector(DetectorConfig(kind=kind)), dlib_testing)
    assert res.labelled == 25
    assert res.recall >= floor, res.summary()
    assert res.precision >= 0.9, res.summary()


def test_short_range_finds_close_faces(samples_dir):
    # 2008_002506.jpg: three faces of 90-109 px, short range's comfort zone.
    imgs = load_dlib_xml(samples_dir / "dlib_faces" / "testing.xml")
    (li,) = [i for i in imgs if i.path.name == "2008_002506.jpg"]
    res = evaluate(make_detector(DetectorConfig(kind="blazeface")), [li])
    assert res.true_pos == 3 and res.false_pos == 0


@pytest.mark.slow
def test_haar_recall_on_labelled_faces(dlib_testing):
    res = evaluate(make_detector(DetectorConfig(kind="haar")), dlib_testing)
    assert res.recall >= 0.9, res.summary()


def test_no_faces_on_dogs(blazeface, samples_dir):
    assert count_faces(blazeface, samples_dir / "dlib_faces" / "dogs.jpg") == 0


def test_faces_in_the_sample_video(sample_video):
    d = make_detector(DetectorConfig(kind="blazeface"))
    cap = cv2.VideoCapture(str(sample_video))
    hits = n = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        if n % 5 == 0:
            hits += bool(d.detect(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)))
        n += 1
    # Measured: faces in 145 of 275 frames (several people turn away or are small).
    assert hits >= 0.4 * (n // 5 + 1)


def test_match_ignores_boxes_marked_ignore():
    dets = [Detection((0, 0, 10, 10), 0.9), Detection((100, 100, 10, 10), 0.8)]
    assert match(dets, [(0, 0, 10, 10)]) == (1, 1)
    assert match(dets, [(0, 0, 10, 10)], ignored=[(101, 101, 10, 10)]) == (1, 0)
    assert match(dets[:1], [(0, 0, 10, 10), (1, 1, 10, 10)]) == (1, 0)  # one box per detection


# -- model files and fallbacks --------------------------------------------------------------


def test_vendored_models_match_their_pins():
    assert extract_blazeface.check(det.MODELS_DIR) == []


def test_corrupt_model_is_a_model_error(tmp_path):
    good = (det.MODELS_DIR / BLAZEFACE["blazeface"].filename).read_bytes()
    bad = tmp_path / "face.tflite"
    bad.write_bytes(good[:1000] + bytes([good[1000] ^ 0xFF]) + good[1001:])
    with pytest.raises(ModelError, match="sha256 .* is not the pinned"):
        make_detector(DetectorConfig(model_path=str(bad)))
    with pytest.raises(ModelError, match="not found"):
        make_detector(DetectorConfig(model_path=str(tmp_path / "missing.tflite")))


def test_packaged_model_missing_falls_back_to_haar(tmp_path, monkeypatch, caplog, astronaut_gray):
    monkeypatch.setattr(det, "MODELS_DIR", tmp_path)
    with caplog.at_level(logging.WARNING, logger="emotion_edge.detect.detector"):
        d = make_detector(DetectorConfig(kind="blazeface"))
    assert isinstance(d, HaarDetector) and d.name == "haar"
    assert "falling back" in caplog.text and "Haar" in caplog.text
    assert len(d.detect(astronaut_gray)) == 1


def test_explicit_model_path_in_the_same_file_works(tmp_path, astronaut_gray):
    copy = tmp_path / "bf.tflite"
    copy.write_bytes((det.MODELS_DIR / BLAZEFACE["blazeface"].filename).read_bytes())
    d = make_detector(DetectorConfig(kind="blazeface", model_path=str(copy)))
    assert isinstance(d, BlazeFaceDetector) and len(d.detect(astronaut_gray)) == 1


@pytest.mark.parametrize(
    "table, key",
    [
        ({"kind": "yolo"}, "detector.kind"),
        ({"min_score": 1.5}, "detector.min_score"),
        ({"min_score": 0}, "detector.min_score"),
        ({"nms_iou": "0.3"}, "detector.nms_iou"),
        ({"num_threads": 0}, "detector.num_threads"),
        ({"kind": "haar", "model_path": "x.tflite"}, "detector.model_path"),
        ({"treshold": 0.5}, "detector.treshold"),
    ],
)
def test_config_errors_name_the_key(table, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_table("detector", table)


def test_config_roundtrip():
    cfg = load_table("detector", {"kind": "blazeface_full", "min_score": 0.6, "num_threads": 2})
    assert (cfg.kind, cfg.min_score, cfg.num_threads) == ("blazeface_full", 0.6, 2)


# -- provenance tool ------------------------------------------------------------------------


def _wheel(path, files: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(extract_blazeface.WHEEL_DIR + name, data)
    return path


def test_extract_tool_verifies_before_writing(tmp_path):
    real = {s.filename: (det.MODELS_DIR / s.filename).read_bytes() for s in BLAZEFACE.values()}
    out = tmp_path / "out"
    # A wheel laid out like mediapipe's, holding the pinned files: extracted and verified.
    ok = _wheel(tmp_path / "ok.whl", real)
    assert extract_blazeface.main(["--wheel", str(ok), "--out", str(out)]) == 0
    assert extract_blazeface.check(out) == []
    # One file altered: refused, and nothing written.
    tampered = dict(real)
    tampered["face_detection_short_range.tflite"] += b"\0"
    out2 = tmp_path / "out2"
    bad = _wheel(tmp_path / "bad.whl", tampered)
    assert extract_blazeface.main(["--wheel", str(bad), "--out", str(out2)]) == 1
    assert not out2.exists()
    # A wheel without the files (mediapipe >= 0.10.30).
    empty = _wheel(tmp_path / "new.whl", {"other.txt": b""})
    assert extract_blazeface.main(["--wheel", str(empty), "--out", str(out2)]) == 1
    assert extract_blazeface.main(["--check", "--out", str(out2)]) == 1
