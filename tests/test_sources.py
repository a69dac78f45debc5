"""Frame sources on real input: OpenCV-decoded video and images, the demo photo, and the
picamera2 source against a fake `picamera2` module (the only fake: libcamera is Pi-only)."""

from __future__ import annotations

import socket
import sys
import threading
import time
import types

import cv2
import numpy as np
import pytest
from emotion_edge.config import load_table
from emotion_edge.errors import ConfigError, SourceError
from emotion_edge.video.sources import (
    DemoSource,
    ImageFolderSource,
    OpenCVSource,
    Picamera2Source,
    SourceConfig,
    VideoFileSource,
    make_source,
    parse_opencv_uri,
)


def read_all(src, limit=10_000):
    frames = []
    while len(frames) < limit and (f := src.read()) is not None:
        frames.append(f)
    return frames


def video_frames(path, n, size=None):
    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < n:
        ok, img = cap.read()
        if not ok:
            break
        out.append(cv2.resize(img, size) if size else img)
    cap.release()
    return out


# -- config ---------------------------------------------------------------------------------


def test_config_defaults_and_valid_table():
    assert load_table("source", {}) == SourceConfig()
    cfg = load_table("source", {"kind": "opencv", "uri": "rtsp://cam/1", "fps": 10})
    assert (cfg.kind, cfg.uri, cfg.fps) == ("opencv", "rtsp://cam/1", 10.0)


@pytest.mark.parametrize(
    "table, key",
    [
        ({"kind": "webcam"}, "source.kind"),
        ({"kind": "video"}, "source.uri"),
        ({"kind": "images", "uri": "  "}, "source.uri"),
        ({"fps": 0}, "source.fps"),
        ({"width": "640"}, "source.width"),
        ({"loop": "yes"}, "source.loop"),
        ({"reopen_min_s": 5.0, "reopen_max_s": 1.0}, "source.reopen_max_s"),
        ({"widht": 640}, "source.widht"),
    ],
)
def test_config_errors_name_the_key(table, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_table("source", table)


def test_unknown_kind_is_a_source_error():
    with pytest.raises(SourceError, match="unknown source kind 'webcam'.*opencv"):
        make_source(SourceConfig(kind="webcam"))


def test_make_source_picks_the_class():
    for kind, cls in [
        ("demo", DemoSource),
        ("picamera2", Picamera2Source),
        ("opencv", OpenCVSource),
        ("video", VideoFileSource),
        ("images", ImageFolderSource),
    ]:
        assert isinstance(make_source(SourceConfig(kind=kind, uri="x")), cls)


def test_parse_opencv_uri():
    assert parse_opencv_uri("") == (0, False)
    assert parse_opencv_uri("2") == (2, False)
    assert parse_opencv_uri("/dev/video0") == ("/dev/video0", False)
    assert parse_opencv_uri("rtsp://u:p@cam/s") == ("rtsp://u:p@cam/s", False)
    gst = "nvarguscamerasrc ! video/x-raw(memory:NVMM) ! nvvidconv ! appsink"
    assert parse_opencv_uri(gst) == (gst, True)


# -- video file -----------------------------------------------------------------------------


def test_video_reads_every_frame_then_ends(sample_video):
    src = make_source(SourceConfig(kind="video", uri=str(sample_video), loop=False))
    src.open()
    frames = read_all(src)
    src.close()
    assert len(frames) == 275  # samples README: 275 frames, 640x360, 29.97 fps
    assert src.pace_fps == pytest.approx(29.97, abs=0.01)
    f = frames[0]
    assert f.image.dtype == np.uint8 and f.image.shape == (360, 640)
    assert f.color is not None and f.color.shape == (360, 640, 3)
    # The gray image is the BGR frame converted, not something else.
    assert np.array_equal(f.image, cv2.cvtColor(f.color, cv2.COLOR_BGR2GRAY))
    assert [x.index for x in frames] == list(range(275))
    assert all(b.timestamp >= a.timestamp for a, b in zip(frames, frames[1:], strict=False))


def test_video_loops(sample_video):
    src = make_source(SourceConfig(kind="video", uri=str(sample_video), loop=True))
    src.open()
    frames = read_all(src, limit=300)
    src.close()
    assert len(frames) == 300
    assert [f.index for f in frames] == list(range(300))
    assert np.array_equal(frames[275].image, frames[0].image)  # back at the start


def test_video_missing_or_corrupt(tmp_path):
    with pytest.raises(SourceError, match="file not found"):
        make_source(SourceConfig(kind="video", uri=str(tmp_path / "nope.mp4"))).open()
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, np.uint8).tobytes())
    with pytest.raises(SourceError, match="corrupt.mp4"):
        make_source(SourceConfig(kind="video", uri=str(bad))).open()


def test_truncated_video_gives_its_frames_then_ends(sample_video, tmp_path):
    # MJPG in AVI streams frame by frame (an mp4 cut in half loses its index and will not open:
    # that case is test_video_missing_or_corrupt's).
    avi = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 360))
    for img in video_frames(sample_video, 40):
        writer.write(img)
    writer.release()
    cut = tmp_path / "cut.avi"
    data = avi.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    counts = []
    for path in (avi, cut):
        src = make_source(SourceConfig(kind="video", uri=str(path), loop=False))
        src.open()
        counts.append(len(read_all(src)))
        src.close()
    assert counts[0] == 40
    assert 10 < counts[1] < 40  # the frames before the cut, then a clean end


# -- OpenCV camera / stream -----------------------------------------------------------------


def test_missing_camera_is_a_clear_source_error():
    with pytest.raises(SourceError, match=r"opencv:/dev/video99: cannot open .*ls /dev/video"):
        make_source(SourceConfig(kind="opencv", uri="/dev/video99")).open()


def test_network_camera_that_never_answers_times_out(monkeypatch):
    # A server that accepts the connection and then says nothing, like a hung IP camera.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    held = []
    threading.Thread(target=lambda: held.append(srv.accept()), daemon=True).start()
    monkeypatch.setattr(OpenCVSource, "NETWORK_TIMEOUT_S", 1.0)
    uri = f"http://127.0.0.1:{srv.getsockname()[1]}/stream.mjpg"
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="cannot open"):
        make_source(SourceConfig(kind="opencv", uri=uri)).open()
    assert time.monotonic() - t0 < 5.0
    srv.close()


def test_opencv_source_on_a_file_has_no_end(sample_video):
    # A stream URL behaves like this file: frames, then a failed read is a failure to retry,
    # not an end of stream.
    src = make_source(SourceConfig(kind="opencv", uri=str(sample_video)))
    src.open()
    frames = [src.read() for _ in range(275)]
    assert frames[-1].image.shape == (360, 640)
    with pytest.raises(SourceError, match="read failed"):
        src.read()
    src.close()


def test_credentials_are_redacted_in_names():
    src = make_source(SourceConfig(kind="opencv", uri="rtsp://admin:hunter2@10.0.0.5/stream"))
    assert "hunter2" not in src.name and "admin:***@10.0.0.5" in src.name


# -- folder of images -----------------------------------------------------------------------


def test_image_folder(sample_video, tmp_path, caplog):
    for i, img in enumerate(video_frames(sample_video, 3)):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), img)
    (tmp_path / "b_broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    src = make_source(SourceConfig(kind="images", uri=str(tmp_path), loop=False))
    src.open()
    frames = read_all(src)
    assert len(frames) == 3 and frames[0].image.shape == (360, 640)
    assert "b_broken.jpg" in caplog.text
    src.close()
    caplog.clear()
    src = make_source(SourceConfig(kind="images", uri=str(tmp_path), loop=True))
    src.open()
    assert len(read_all(src, limit=7)) == 7  # three passes over the folder
    assert caplog.text.count("b_broken.jpg") == 1  # warned once, not on every pass


def test_image_folder_errors(tmp_path):
    with pytest.raises(SourceError, match="folder not found"):
        make_source(SourceConfig(kind="images", uri=str(tmp_path / "nope"))).open()
    with pytest.raises(SourceError, match="no images"):
        make_source(SourceConfig(kind="images", uri=str(tmp_path))).open()
    (tmp_path / "x.jpg").write_bytes(b"garbage")
    src = make_source(SourceConfig(kind="images", uri=str(tmp_path)))
    src.open()
    with pytest.raises(SourceError, match="none of the 1 images"):
        src.read()


# -- demo -----------------------------------------------------------------------------------


def test_demo_pans_and_zooms():
    pytest.importorskip("skimage", reason="the demo source needs scikit-image ([demo] extra)")
    cfg = SourceConfig(kind="demo", fps=10.0, loop=False, width=320, height=240)
    src = make_source(cfg)
    src.open()
    frames = read_all(src)
    assert len(frames) == round(10.0 * DemoSource.DEMO_PERIOD_S)
    assert frames[0].image.shape == (240, 320) and frames[0].color.shape == (240, 320, 3)
    diffs = [
        np.abs(a.image.astype(int) - b.image.astype(int)).mean()
        for a, b in zip(frames, frames[1:], strict=False)
    ]
    assert min(diffs) > 0.1  # it moves every frame
    assert max(diffs) < 20  # but slowly, so IoU tracking can follow


def test_demo_without_scikit_image(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage -> ImportError
    with pytest.raises(SourceError, match="pip install scikit-image"):
        make_source(SourceConfig(kind="demo")).open()


# -- picamera2, faked at the module boundary ------------------------------------------------


class FakePicamera2:
    """Stands in for picamera2.Picamera2: YUV420 lores buffers made from real video frames,
    with stride padding as the Pi's ISP adds it."""

    instances: list = []
    frames: list = []  # BGR frames to serve
    fail_after: int | None = None
    no_camera = False

    def __init__(self, camera_num=0):
        if FakePicamera2.no_camera:
            raise IndexError("list index out of range")  # what picamera2 raises with no camera
        self.config = None
        self.started = self.closed = False
        self.n = 0
        FakePicamera2.instances.append(self)

    def create_video_configuration(self, main=None, lores=None, controls=None, buffer_count=6):
        return {
            "main": dict(main),
            "lores": dict(lores),
            "controls": dict(controls or {}),
            "buffer_count": buffer_count,
        }

    def configure(self, config):
        self.config = config

    def start(self):
        assert self.config is not None, "start before configure"
        self.started = True

    def capture_array(self, name="main"):
        assert self.started and name == "lores"
        if FakePicamera2.fail_after is not None and self.n >= FakePicamera2.fail_after:
            raise RuntimeError("Camera frontend has timed out!")
        w, h = self.config["lores"]["size"]
        bgr = cv2.resize(FakePicamera2.frames[self.n % len(FakePicamera2.frames)], (w, h))
        self.n += 1
        yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)  # (h * 3/2, w): Y, then U, V
        stride = (w + 63) // 64 * 64
        return np.pad(yuv, ((0, 0), (0, stride - w)), constant_values=77)

    def stop(self):
        self.started = False

    def close(self):
        self.closed = True


@pytest.fixture
def fake_picamera2(monkeypatch, sample_video):
    mod = types.ModuleType("picamera2")
    mod.Picamera2 = FakePicamera2
    FakePicamera2.instances = []
    FakePicamera2.frames = video_frames(sample_video, 30)
    FakePicamera2.fail_after = None
    FakePicamera2.no_camera = False
    monkeypatch.setitem(sys.modules, "picamera2", mod)
    return FakePicamera2


def test_picamera2_lores_y_plane(fake_picamera2):
    cfg = SourceConfig(kind="picamera2", width=320, height=180, fps=10.0)
    src = make_source(cfg)
    src.open()
    cam = fake_picamera2.instances[0]
    assert cam.config["lores"] == {"size": (320, 180), "format": "YUV420"}
    assert cam.config["controls"]["FrameRate"] == 10.0
    frames = [src.read() for _ in range(5)]
    src.close()
    assert cam.closed and not cam.started
    f = frames[0]
    assert f.image.shape == (180, 320) and f.image.dtype == np.uint8 and f.color is None
    assert f.image.flags["C_CONTIGUOUS"]
    # Exactly the Y plane (no chroma rows, no stride padding), and that is the picture's luma:
    # it tracks OpenCV's gray conversion closely.
    bgr = cv2.resize(fake_picamera2.frames[0], (320, 180))
    assert np.array_equal(f.image, cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)[:180])
    ref = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    assert np.corrcoef(f.image.ravel(), ref.ravel())[0, 1] > 0.99
    assert [x.index for x in frames] == list(range(5))


def test_picamera2_odd_size_is_made_even(fake_picamera2):
    src = make_source(SourceConfig(kind="picamera2", width=321, height=181))
    src.open()
    assert fake_picamera2.instances[0].config["lores"]["size"] == (320, 180)
    assert src.read().image.shape == (180, 320)
    src.close()


def test_picamera2_capture_failure_is_a_source_error(fake_picamera2):
    fake_picamera2.fail_after = 2
    src = make_source(SourceConfig(kind="picamera2"))
    src.open()
    src.read()
    src.read()
    with pytest.raises(SourceError, match="capture failed.*timed out"):
        src.read()
    src.close()


def test_picamera2_no_camera(fake_picamera2):
    fake_picamera2.no_camera = True
    with pytest.raises(SourceError, match="no Raspberry Pi camera found"):
        make_source(SourceConfig(kind="picamera2")).open()


def test_picamera2_module_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(SourceError, match="python3-picamera2"):
        make_source(SourceConfig(kind="picamera2")).open()
