"""Detector kind auto (detect/multiscale.py): room-scale views of one short-range BlazeFace, in
the real LiteRT interpreter, on real faces (skimage's astronaut photo, dlib's labelled photos)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from emotion_edge.config import DetectorConfig
from emotion_edge.detect.detector import Detection, make_detector
from emotion_edge.detect.multiscale import (
    TILE_OVERLAP,
    MultiScaleDetector,
    View,
    fuse,
    grid_anchors,
    scan_plan,
)
from emotion_edge.tools.detector_eval import evaluate, load_dlib_xml

ASTRONAUT_FACE = (172, 62, 108, 118)  # x, y, w, h in skimage.data.astronaut()


@pytest.fixture(scope="module")
def face_crop():
    data = pytest.importorskip("skimage.data", reason="needs scikit-image ([dev]/[demo] extra)")
    gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    x, y, w, h = ASTRONAUT_FACE
    m = 40  # some head and shoulders around the face, as a camera sees a person
    return gray[y - m : y + h + m, x - m : x + w + m]


def room_frame(face: np.ndarray, face_h: int, at: tuple[int, int]) -> tuple[np.ndarray, tuple]:
    """A 640x480 frame of flat wall with the person pasted so the face is `face_h` px tall;
    returns the frame and the face's true box."""
    frame = np.full((480, 640), 120, np.uint8)
    k = face_h / ASTRONAUT_FACE[3]
    small = cv2.resize(face, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
    x, y = at
    h, w = small.shape
    frame[y : y + h, x : x + w] = small
    return frame, (x + 40 * k, y + 40 * k, ASTRONAUT_FACE[2] * k, ASTRONAUT_FACE[3] * k)


def hit(dets: list[Detection], box) -> bool:
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return any(
        abs(d.box[0] + d.box[2] / 2 - cx) < box[2] / 2
        and abs(d.box[1] + d.box[3] / 2 - cy) < box[3] / 2
        for d in dets
    )


def test_anchor_grid_matches_the_net_at_any_input_size():
    det = MultiScaleDetector(DetectorConfig())
    for w, h in ((128, 128), (208, 160), (320, 240)):
        n = len(grid_anchors(w, h))
        assert n == (w // 8) * (h // 8) * 2 + (w // 16) * (h // 16) * 6
        it, *_ = det.views._interp(w, h)  # raises ModelError if the net's output count differs
        assert it is not None


def test_far_tiles_cover_the_frame_and_hold_every_face_of_their_level_whole():
    scale, tile = 1.25, 256
    views = [v for v in scan_plan(640, 480, scale, tile) if v.kind == "far"]
    cover = np.zeros((480, 640), bool)
    for v in views:
        cover[int(v.y0) : int(np.ceil(v.y1)), int(v.x0) : int(np.ceil(v.x1))] = True
    assert cover.all()
    # any face up to the overlap (in frame px) lies whole inside one tile, wherever it is
    f = int(TILE_OVERLAP / scale) - 1
    for y in range(0, 480 - f, 7):
        for x in range(0, 640 - f, 7):
            assert any(
                v.x0 <= x and x + f <= v.x1 and v.y0 <= y and y + f <= v.y1 for v in views
            ), (x, y)
    # and the mid level sees the whole frame at once
    assert [v.kind for v in scan_plan(640, 480, scale, tile)].count("mid") == 1


def test_fuse_keeps_one_box_per_face():
    big = Detection((100.0, 100.0, 60.0, 60.0), 0.9)
    inside = Detection((110.0, 110.0, 30.0, 30.0), 0.7)  # a part of the same face
    other = Detection((300.0, 100.0, 40.0, 40.0), 0.6)
    assert fuse([inside, other, big], 0.3) == [big, other]


def test_fuse_keeps_a_face_behind_in_a_close_faces_margin_but_not_a_part_of_its_core():
    close = Detection((54.0, 64.0, 380.0, 380.0), 0.8)
    behind = Detection((408.0, 70.0, 24.0, 24.0), 0.9)  # in the close box's corner
    mouth = Detection((230.0, 300.0, 30.0, 30.0), 0.7)  # an upscaled part of the close face
    assert fuse([close, behind], 0.3) == [behind, close]
    assert fuse([mouth, close], 0.3) == [close]
    assert fuse([close, behind, mouth], 0.3) == [behind, close]


def test_small_face_short_range_misses_is_found_within_a_scan_cycle_then_every_frame(face_crop):
    frame, box = room_frame(face_crop, 30, (420, 300))
    assert not hit(make_detector(DetectorConfig(kind="blazeface")).detect(frame), box)
    auto = make_detector(DetectorConfig())
    assert isinstance(auto, MultiScaleDetector)
    runs = len(scan_plan(640, 480, auto.far_scale(640, 480), auto.tile))  # one scan at a tile a run
    first = next((i for i in range(runs + 1) if hit(auto.detect(frame), box)), None)
    assert first is not None, f"not found in {runs + 1} detection runs (one scan)"
    # once found, the roi view looks again around it: found in every following frame
    assert all(hit(auto.detect(frame), box) for _ in range(10))
    assert auto.passes["roi"] >= 10 and auto.passes["far"] >= 1


def test_close_up_filling_the_frame_is_found_at_once(face_crop):
    frame = cv2.resize(face_crop, (640, 480))  # the face ~330 px tall
    dets = make_detector(DetectorConfig()).detect(frame)
    assert len(dets) == 1 and dets[0].box[3] > 250


def test_a_view_past_the_frame_edge_is_padded_not_wrapped(face_crop):
    frame, box = room_frame(face_crop, 40, (0, 0))
    det = MultiScaleDetector(DetectorConfig())
    side = 160.0
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    view = View("roi", cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2, 128 / side)
    assert hit(det.views.run(frame, view), box)


@pytest.mark.realdata
def test_photos_every_view_dlib_labelled_faces(samples_dir):
    xml = samples_dir / "dlib_faces" / "training.xml"
    if not xml.is_file():
        pytest.skip(f"labelled boxes missing: {xml}")
    # measured here: recall 1.00 (18/18), precision 1.00; short-range alone finds 5 of 18
    res = evaluate(make_detector(DetectorConfig()), load_dlib_xml(xml))
    assert res.recall >= 0.9 and res.precision >= 0.9, res.summary()
