"""Frame sources on real input: OpenCV-decoded video and images, the demo photo, and the
picamera2 source against a fake `picamera2` module (the only fake: libcamera is Pi-only)."""

from __future__ import annotations

import concurrent.futures
import logging
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
from emotion_edge.video.capture import Capture
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
    # at open(), so the daemon's start-up probe exits 2 instead of reopening for ever
    with pytest.raises(SourceError, match="none of the 1 images"):
        make_source(SourceConfig(kind="images", uri=str(tmp_path))).open()


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
#
# The fake follows picamera2 0.3.x's own code where it matters to the daemon:
# create_video_configuration() only makes sizes even and picks SMPTE 170M (limited range)
# below 1280x720 unless a colour space is given; align_configuration() rounds a YUV420 width
# down to 128 px (Pi 5); configure() writes the final size and the stride back; a YUV420
# array is (h * 3/2, stride) with padding; capture_arrays() blocks until a frame comes (for
# ever without wait=, TimeoutError after wait=T seconds), a timed-out job stays queued until
# cancel_all_and_flush(), and stop() (so close()) queues behind a pending capture and blocks.

BLOCK_LIMIT_S = 20.0  # "forever" in the fake; a test that reaches it fails instead of hanging


class FakeColorSpace:
    """libcamera.ColorSpace: sYCC is full range, SMPTE 170M and Rec709 are limited."""

    class Range:
        Full = "Range.Full"
        Limited = "Range.Limited"

    def __init__(self, name: str, rng: str):
        self.name, self.range = name, rng

    def __repr__(self):
        return f"<ColorSpace {self.name}>"

    @staticmethod
    def Sycc():
        return FakeColorSpace("sYCC", FakeColorSpace.Range.Full)

    @staticmethod
    def Smpte170m():
        return FakeColorSpace("SMPTE170M", FakeColorSpace.Range.Limited)

    @staticmethod
    def Rec709():
        return FakeColorSpace("Rec709", FakeColorSpace.Range.Limited)


def luma(bgr: np.ndarray, colour_space: FakeColorSpace) -> np.ndarray:
    """The Y plane the ISP would write: full-range BT.601 luma, or limited range 16-235."""
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    if colour_space.range == FakeColorSpace.Range.Full:
        return gray
    return np.round(16 + gray.astype(np.float64) * 219.0 / 255.0).astype(np.uint8)


class FakePicamera2:
    instances: list = []
    frames: list = []  # BGR frames to serve
    stall_after: dict = {}  # instance number -> frames it delivers before the sensor stops
    no_camera = False
    sensor_delay_s = 0.0  # SensorTimestamp this long before the frame is handed over

    def __init__(self, camera_num=0):
        if FakePicamera2.no_camera:
            # what picamera2 raises when libcamera lists no camera
            raise RuntimeError("Camera __init__ sequence did not complete.")
        self.camera_config = None
        self.started = self.closed = False
        self.aligned = False
        self.n = 0
        self.number = len(FakePicamera2.instances)
        self._cond = threading.Condition()
        self._jobs: list = []  # capture jobs waiting for a frame
        FakePicamera2.instances.append(self)

    @staticmethod
    def _even(size):
        return (size[0] - size[0] % 2, size[1] - size[1] % 2)

    def create_video_configuration(
        self, main=None, lores=None, raw=None, colour_space=None, buffer_count=6, controls=None
    ):
        main = {"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True, **(main or {})}
        main["size"] = self._even(main["size"])
        if lores is not None:
            lores = {"format": "YUV420", "size": main["size"], "preserve_ar": False, **lores}
            lores["size"] = self._even(lores["size"])
        if colour_space is None:
            small = main["size"][0] < 1280 or main["size"][1] < 720
            colour_space = FakeColorSpace.Smpte170m() if small else FakeColorSpace.Rec709()
        return {
            "main": main,
            "lores": lores,
            "raw": {} if raw is None else raw,
            "colour_space": colour_space,
            "controls": dict(controls or {}),
            "buffer_count": buffer_count,
        }

    def align_configuration(self, config, optimal=True):
        self.aligned = True
        for name in ("main", "lores"):
            stream = config.get(name)
            if stream is not None and stream["format"] == "YUV420":
                w, h = stream["size"]
                stream["size"] = (w - w % 128, h - h % 2)  # PiSP (Pi 5): 64 * 2 for YUV420

    def configure(self, config):
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        config = dict(config)
        for name in ("main", "lores"):
            stream = config.get(name)
            if stream is not None:
                stream = config[name] = dict(stream)
                w, _ = stream["size"]
                stream["stride"] = (w + 63) // 64 * 64
        self.camera_config = config

    def camera_configuration(self):
        return self.camera_config

    def start(self):
        assert self.camera_config is not None, "start before configure"
        self.started = True

    def capture_arrays(self, names=("main",), wait=None, signal_function=None):
        assert self.started and not self.closed
        job = concurrent.futures.Future()
        stall = FakePicamera2.stall_after.get(self.number)
        if stall is None or self.n < stall:
            job.set_result(self._frame(names))
        else:  # the sensor stopped: the job waits in the queue
            with self._cond:
                self._jobs.append(job)
        timeout = BLOCK_LIMIT_S if wait in (None, True) else wait
        try:
            return job.result(timeout)
        except TimeoutError:
            if wait in (None, True):
                pytest.fail("capture_arrays() without wait= blocked (the real one: for ever)")
            raise

    def _frame(self, names):
        stream = self.camera_config["main"]
        w, h = stream["size"]
        bgr = cv2.resize(FakePicamera2.frames[self.n % len(FakePicamera2.frames)], (w, h))
        self.n += 1
        yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)  # (h * 3/2, w): Y, then U, V
        yuv[:h] = luma(bgr, self.camera_config["colour_space"])
        padded = np.pad(yuv, ((0, 0), (0, stream["stride"] - w)), constant_values=77)
        sensor_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        sensor_ns -= int(FakePicamera2.sensor_delay_s * 1e9)
        return [padded for _ in names], {"SensorTimestamp": sensor_ns, "ExposureTime": 10000}

    def pending(self) -> int:
        with self._cond:
            return len(self._jobs)

    def cancel_all_and_flush(self):
        with self._cond:
            for job in self._jobs:
                job.set_exception(concurrent.futures.CancelledError())
            self._jobs = []
            self._cond.notify_all()

    def stop(self):
        # the real stop() dispatches a job that runs only after the queued ones
        with self._cond:
            if not self._cond.wait_for(lambda: not self._jobs, BLOCK_LIMIT_S):
                pytest.fail("stop() blocked behind a pending capture (the real one: for ever)")
        self.started = False

    def close(self):
        if self.started:
            self.stop()
        self.closed = True


@pytest.fixture
def fake_picamera2(monkeypatch, sample_video):
    mod = types.ModuleType("picamera2")
    mod.Picamera2 = FakePicamera2
    lib = types.ModuleType("libcamera")
    lib.ColorSpace = FakeColorSpace
    FakePicamera2.instances = []
    FakePicamera2.frames = video_frames(sample_video, 30)
    FakePicamera2.stall_after = {}
    FakePicamera2.no_camera = False
    FakePicamera2.sensor_delay_s = 0.0
    monkeypatch.setitem(sys.modules, "picamera2", mod)
    monkeypatch.setitem(sys.modules, "libcamera", lib)
    yield FakePicamera2
    for cam in FakePicamera2.instances:  # nothing may stay blocked after a test
        cam.cancel_all_and_flush()


def test_picamera2_one_full_range_yuv420_stream(fake_picamera2):
    cfg = SourceConfig(kind="picamera2", width=320, height=180, fps=10.0)
    src = make_source(cfg)
    src.open()
    cam = fake_picamera2.instances[0]
    main = cam.camera_config["main"]
    assert (main["size"], main["format"]) == ((320, 180), "YUV420")
    assert cam.camera_config["lores"] is None  # no second stream that nothing reads
    assert cam.camera_config["colour_space"].range == FakeColorSpace.Range.Full  # sYCC
    assert cam.camera_config["controls"]["FrameRate"] == 10.0
    assert not cam.aligned
    frames = [src.read() for _ in range(5)]
    src.close()
    assert cam.closed and not cam.started
    f = frames[0]
    assert f.image.shape == (180, 320) and f.image.dtype == np.uint8 and f.color is None
    assert f.image.flags["C_CONTIGUOUS"]
    # Exactly the Y plane (no chroma rows, no stride padding), full range like OpenCV's gray.
    bgr = cv2.resize(fake_picamera2.frames[0], (320, 180))
    assert np.array_equal(f.image, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    assert [x.index for x in frames] == list(range(5))


def test_picamera2_unaligned_width_keeps_its_aspect_ratio(fake_picamera2):
    # 328 is no multiple of 64 or 128: align_configuration() would make it 256 (a picture
    # squeezed by 0.78); the daemon keeps 328 and cuts the stride padding (384) off instead.
    src = make_source(SourceConfig(kind="picamera2", width=328, height=246))
    src.open()
    cam = fake_picamera2.instances[0]
    assert cam.camera_config["main"]["size"] == (328, 246)
    assert cam.camera_config["main"]["stride"] == 384
    f = src.read()
    assert f.image.shape == (246, 328)
    bgr = cv2.resize(fake_picamera2.frames[0], (328, 246))
    assert np.array_equal(f.image, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    src.close()


def test_picamera2_odd_size_is_made_even(fake_picamera2):
    src = make_source(SourceConfig(kind="picamera2", width=321, height=181))
    src.open()
    assert fake_picamera2.instances[0].camera_config["main"]["size"] == (320, 180)
    assert src.read().image.shape == (180, 320)
    src.close()


def test_picamera2_limited_range_is_expanded(fake_picamera2, monkeypatch):
    # Without libcamera's bindings no colour space can be asked for, so picamera2 picks
    # SMPTE 170M (Y 16-235): the source measures that from the configuration and expands it.
    monkeypatch.setitem(sys.modules, "libcamera", None)
    src = make_source(SourceConfig(kind="picamera2", width=320, height=180))
    src.open()
    cam = fake_picamera2.instances[0]
    assert cam.camera_config["colour_space"].range == FakeColorSpace.Range.Limited
    f = src.read()
    src.close()
    ref = cv2.cvtColor(cv2.resize(fake_picamera2.frames[0], (320, 180)), cv2.COLOR_BGR2GRAY)
    diff = np.abs(f.image.astype(int) - ref.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.8
    assert f.image.max() > 235 or ref.max() <= 235  # not squeezed into 16-235


def test_picamera2_timestamp_is_the_sensors(fake_picamera2):
    fake_picamera2.sensor_delay_s = 0.25  # exposed 250 ms before the copy is handed over
    src = make_source(SourceConfig(kind="picamera2", width=320, height=180))
    src.open()
    before = time.time()
    f = src.read()
    after = time.time()
    src.close()
    assert before - 0.3 <= f.timestamp <= after - 0.2


def test_picamera2_dead_camera_times_out_and_flushes(fake_picamera2, monkeypatch):
    monkeypatch.setattr(Picamera2Source, "CAPTURE_TIMEOUT_S", 0.2)
    fake_picamera2.stall_after = {0: 2}  # two frames, then the cable fails
    src = make_source(SourceConfig(kind="picamera2", fps=30.0))
    src.open()
    cam = fake_picamera2.instances[0]
    src.read()
    src.read()
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"no frame within 0\.3 s .*cable"):
        src.read()
    assert time.monotonic() - t0 < 2.0
    assert cam.pending() == 0  # the timed-out job was cancelled, so stop() cannot block
    t0 = time.monotonic()
    src.close()
    assert time.monotonic() - t0 < 1.0 and cam.closed


def test_fake_blocks_like_picamera2(fake_picamera2, monkeypatch):
    """The fake itself: a capture without wait= blocks, stop() queues behind it."""
    monkeypatch.setattr(sys.modules[__name__], "BLOCK_LIMIT_S", 30.0)
    fake_picamera2.stall_after = {0: 0}
    cam = FakePicamera2()
    cam.configure(cam.create_video_configuration(main={"size": (64, 48), "format": "YUV420"}))
    cam.start()
    with pytest.raises(TimeoutError):
        cam.capture_arrays(["main"], wait=0.05)
    cam.cancel_all_and_flush()
    errors = []
    t = threading.Thread(
        target=lambda: errors.append(_exc(lambda: cam.capture_arrays(["main"]))), daemon=True
    )
    t.start()
    time.sleep(0.2)
    assert t.is_alive() and cam.pending() == 1  # blocked: no wait= given
    stopper = threading.Thread(target=cam.stop, daemon=True)
    stopper.start()
    time.sleep(0.2)
    assert stopper.is_alive()  # stop() waits behind the pending capture
    cam.cancel_all_and_flush()
    t.join(2)
    stopper.join(2)
    assert not t.is_alive() and not stopper.is_alive()
    assert isinstance(errors[0], concurrent.futures.CancelledError)


def _exc(fn):
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001
        return exc
    return None


def test_picamera2_shutdown_never_blocks_on_a_dead_camera(fake_picamera2):
    # The capture thread waits in a capture (the full default timeout); stop() interrupts it.
    fake_picamera2.stall_after = {0: 1}
    cfg = SourceConfig(kind="picamera2", fps=15.0)
    cap = Capture(lambda: make_source(cfg), cfg)
    cap.start()
    assert cap.latest(5.0) is not None
    deadline = time.monotonic() + 5
    while fake_picamera2.instances[0].pending() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake_picamera2.instances[0].pending() == 1  # stuck in capture_arrays
    t0 = time.monotonic()
    cap.stop()
    assert time.monotonic() - t0 < 1.5
    assert fake_picamera2.instances[0].closed
    assert not cap.stats()["ended"]


def test_picamera2_dead_camera_goes_through_the_reopen_path(fake_picamera2, monkeypatch, caplog):
    monkeypatch.setattr(Picamera2Source, "CAPTURE_TIMEOUT_S", 0.1)
    fake_picamera2.stall_after = {0: 3}  # the first camera dies after 3 frames; the next works
    cfg = SourceConfig(kind="picamera2", fps=30.0, reopen_min_s=0.05, reopen_max_s=0.1)
    cap = Capture(lambda: make_source(cfg), cfg)
    with caplog.at_level(logging.WARNING, logger="emotion_edge.video.capture"):
        cap.start()
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 8 and time.monotonic() < deadline:
            if (f := cap.latest(1.0)) is not None:
                got.append(f)
        cap.stop()
    st = cap.stats()
    assert len(got) >= 8 and st["reopen_count"] >= 1, st
    assert "no frame within" in caplog.text and "no frame within" in st["last_error"]
    assert fake_picamera2.instances[0].closed and len(fake_picamera2.instances) >= 2


def test_picamera2_no_camera(fake_picamera2):
    fake_picamera2.no_camera = True
    with pytest.raises(SourceError, match="no Raspberry Pi camera found"):
        make_source(SourceConfig(kind="picamera2")).open()


def test_picamera2_module_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(SourceError, match="python3-picamera2"):
        make_source(SourceConfig(kind="picamera2")).open()
