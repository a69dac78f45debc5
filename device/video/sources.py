"""Frame sources: Pi camera, OpenCV (webcam, RTSP/HTTP, GStreamer), video file, image folder, demo.

Every source yields grayscale frames (what detection and classification use); those that decode
colour anyway keep the BGR image beside it for opt-in snapshots. Sources do no retrying and no
pacing: `emotion_edge.video.capture.Capture` reopens them with backoff and paces file sources to
`pace_fps` when it runs in real time.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import threading
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from emotion_edge.config import SOURCE_KINDS, SourceConfig
from emotion_edge.errors import SourceError
from emotion_edge.video.frames import Frame, to_gray
from emotion_edge.video.image_files import UnreadableImage, read_image

log = logging.getLogger(__name__)

# Kinds that read a finite file; cameras and streams have no end, only failures.
FILE_KINDS = ("video", "images", "demo")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


@runtime_checkable
class FrameSource(Protocol):
    """One concrete class per kind. `pace_fps` is the rate a file plays at (None: a live
    camera, whose reads block until the next frame)."""

    pace_fps: float | None

    def open(self) -> None: ...  # SourceError with a clear message if it cannot open

    def read(self) -> Frame | None: ...  # None = end of stream; SourceError on failure

    def close(self) -> None: ...


class _Counter:
    """Frame numbers that keep counting across loops of a file."""

    def __init__(self) -> None:
        self.index = 0

    def next(self) -> int:
        i = self.index
        self.index += 1
        return i


# -- OpenCV: webcams, network streams, GStreamer pipelines --------------------------------------


def parse_opencv_uri(uri: str) -> tuple[int | str, bool]:
    """(what to pass to VideoCapture, whether it is a GStreamer pipeline)."""
    u = uri.strip()
    if u == "":
        return 0, False
    if u.isdigit():
        return int(u), False
    # A GStreamer pipeline is elements joined by "!" (e.g. nvarguscamerasrc ! ... ! appsink).
    return u, "!" in u


def _redact(uri: str) -> str:
    """rtsp://user:secret@host/... -> rtsp://user:***@host/... for logs and errors."""
    if "://" in uri and "@" in uri.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = uri.split("://", 1)
        cred, host = rest.split("@", 1)
        user = cred.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return uri


class OpenCVSource:
    """cv2.VideoCapture on a device index, /dev/videoN, an RTSP/HTTP URL or a GStreamer pipeline."""

    pace_fps: float | None = None
    NETWORK_TIMEOUT_S = 10.0  # open and read timeout for rtsp:// http:// ... URLs

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg
        self.target, self.gstreamer = parse_opencv_uri(cfg.uri)
        self.name = f"opencv:{_redact(str(self.target))}"
        self._cap = None
        self._count = _Counter()

    def open(self) -> None:
        import cv2

        self.close()
        if self.gstreamer:
            cap = cv2.VideoCapture(self.target, cv2.CAP_GSTREAMER)
        elif isinstance(self.target, str) and "://" in self.target:
            # Without timeouts a dead network camera can block open() or read() for good, and
            # a blocked read is never retried.
            ms = int(self.NETWORK_TIMEOUT_S * 1000)
            cap = cv2.VideoCapture(
                self.target,
                cv2.CAP_FFMPEG,
                [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms],
            )
        else:
            cap = cv2.VideoCapture(self.target)
        if not cap.isOpened():
            cap.release()
            if isinstance(self.target, int) or str(self.target).startswith("/dev/"):
                hint = (
                    "no such camera, or it is busy; list cameras with `ls /dev/video*` "
                    "(v4l2-ctl --list-devices) and set source.uri"
                )
            elif self.gstreamer:
                hint = (
                    "the GStreamer pipeline did not start (OpenCV built without GStreamer, "
                    "or a wrong element); it must end in appsink"
                )
            else:
                hint = "stream unreachable or format not supported; check the URL with ffprobe"
            raise SourceError(f"{self.name}: cannot open ({hint})")
        if not self.gstreamer:
            # Requests only: a camera picks its nearest mode and a stream ignores them.
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height)
            cap.set(cv2.CAP_PROP_FPS, self.cfg.fps)
            # Keep the driver from queueing old frames; Capture wants the newest one.
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._cap = cap

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"{self.name}: read before open")
        ok, img = self._cap.read()
        ts = time.time()
        if not ok or img is None:
            # A live source has no end: a failed read is an unplugged camera or a dropped stream.
            raise SourceError(f"{self.name}: read failed (camera unplugged or stream dropped)")
        return Frame(to_gray(img), self._count.next(), ts, img if img.ndim == 3 else None)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


# -- video file ---------------------------------------------------------------------------------


class VideoFileSource:
    """A video file decoded by OpenCV; plays at its own frame rate when Capture is real-time."""

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg
        self.path = Path(cfg.uri).expanduser()
        self.name = f"video:{self.path}"
        self.pace_fps: float | None = cfg.fps
        self.frame_count = 0
        self._cap = None
        self._pending = None  # first frame, decoded by open() to prove the file is readable
        self._count = _Counter()

    def _open_capture(self):
        import cv2

        if not self.path.is_file():
            raise SourceError(
                f"{self.name}: file not found"
                if not self.path.exists()
                else f"{self.name}: not a file"
            )
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.name}: cannot open (not a video OpenCV can decode)")
        ok, img = cap.read()
        if not ok or img is None:
            cap.release()
            raise SourceError(f"{self.name}: no decodable frame (empty or corrupt file)")
        fps = cap.get(cv2.CAP_PROP_FPS)
        # Containers without a usable rate report 0 or nonsense; the configured fps is the guess.
        self.pace_fps = fps if 1.0 <= fps <= 240.0 else self.cfg.fps
        self.frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        return cap, img

    def open(self) -> None:
        self.close()
        self._cap, self._pending = self._open_capture()

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"{self.name}: read before open")
        if self._pending is not None:
            img, self._pending = self._pending, None
        else:
            ok, img = self._cap.read()
            if not ok or img is None:
                if not self.cfg.loop:
                    return None
                # Reopening rather than seeking to 0: seeking is unreliable for some codecs.
                self._cap.release()
                self._cap, img = self._open_capture()
        ts = time.time()
        return Frame(to_gray(img), self._count.next(), ts, img if img.ndim == 3 else None)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._pending = None


# -- folder of images ---------------------------------------------------------------------------


class ImageFolderSource:
    """The images of a folder in name order, one frame each, at `fps` when real-time."""

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg
        self.path = Path(cfg.uri).expanduser()
        self.name = f"images:{self.path}"
        self.pace_fps: float | None = cfg.fps
        self.files: list[Path] = []
        self._pos = 0
        self._bad: set[Path] = set()  # skipped files, each logged once
        self._good_this_pass = False
        self._pending: tuple[Path, np.ndarray] | None = None  # decoded by open()
        self._count = _Counter()

    def open(self) -> None:
        if not self.path.is_dir():
            raise SourceError(
                f"{self.name}: folder not found"
                if not self.path.exists()
                else f"{self.name}: not a folder"
            )
        self.files = sorted(
            p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not self.files:
            raise SourceError(f"{self.name}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self._pos = 0
        self._good_this_pass = False
        # Decode the first good image now: a folder with none is a start-up error (exit 2),
        # not a source the capture thread would reopen forever.
        self._pending = self._next_image()

    def _next_image(self):
        """(path, BGR image) of the next decodable file, looping as configured; None at the
        end; SourceError when a whole pass finds nothing decodable."""
        while True:
            if self._pos >= len(self.files):
                if not self._good_this_pass:
                    raise SourceError(
                        f"{self.name}: none of the {len(self.files)} images could be decoded"
                    )
                if not self.cfg.loop:
                    return None
                self._pos, self._good_this_pass = 0, False
            p = self.files[self._pos]
            self._pos += 1
            try:
                img = read_image(p, self.cfg.max_image_pixels)
            except UnreadableImage as why:
                # Skip it (once-per-file warning) instead of failing: one bad file in a folder
                # should not stop the others, and a reopen would only hit it again.
                if p not in self._bad:
                    self._bad.add(p)
                    log.warning("%s: %s skipped: %s", self.name, p.name, why)
                continue
            self._good_this_pass = True
            return p, img

    @property
    def files_skipped(self) -> int:
        """Files skipped since open: undecodable, damaged or over [source] max_image_pixels."""
        return len(self._bad)

    def read(self) -> Frame | None:
        if not self.files:
            raise SourceError(f"{self.name}: read before open")
        got, self._pending = self._pending or self._next_image(), None
        if got is None:
            return None
        p, img = got
        return Frame(to_gray(img), self._count.next(), time.time(), img, name=p.name)

    def close(self) -> None:
        self.files = []
        self._pending = None


# -- demo: a real photo, panned and zoomed like a camera ----------------------------------------


class DemoSource:
    """scikit-image's astronaut photo (public domain) as a slowly panning and zooming sequence.

    A still photo would give the tracker nothing to do; the motion is slow enough for IoU
    tracking and keeps the face in view. One cycle lasts `DEMO_PERIOD_S` seconds of frames.
    """

    DEMO_PERIOD_S = 20.0

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg
        self.name = "demo:astronaut"
        self.pace_fps: float | None = cfg.fps
        self.period = max(2, round(cfg.fps * self.DEMO_PERIOD_S))
        self._bgr: np.ndarray | None = None
        self._gray: np.ndarray | None = None
        self._n = 0
        self._count = _Counter()

    def open(self) -> None:
        import cv2

        try:
            from skimage import data
        except ImportError:
            raise SourceError(
                "source 'demo' needs scikit-image: pip install scikit-image (or "
                "pip install 'emotion-edge[demo]'), or choose another source.kind "
                "(picamera2, opencv, video, images)"
            ) from None
        rgb = np.ascontiguousarray(data.astronaut())
        self._bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        self._gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        self._n = 0

    def transform(self, n: int) -> np.ndarray:
        """2x3 affine from photo to frame pixels for frame n of a cycle."""
        w, h = self.cfg.width, self.cfg.height
        ih, iw = self._gray.shape[:2]
        phase = 2 * math.pi * (n % self.period) / self.period
        # Zoom between 1.05x and 1.45x of "photo covers the frame"; pan around the face
        # (about x 170-280, y 60-190 in the 512x512 photo).
        scale = max(w / iw, h / ih) * (1.25 + 0.2 * math.sin(phase))
        cx = 240 + 40 * math.sin(phase)
        cy = 170 + 25 * math.sin(2 * phase)
        return np.array([[scale, 0.0, w / 2 - scale * cx], [0.0, scale, h / 2 - scale * cy]])

    def read(self) -> Frame | None:
        import cv2

        if self._gray is None:
            raise SourceError(f"{self.name}: read before open")
        if self._n >= self.period and not self.cfg.loop:
            return None
        m = self.transform(self._n)
        self._n += 1
        size = (self.cfg.width, self.cfg.height)
        gray = cv2.warpAffine(
            self._gray, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        bgr = cv2.warpAffine(
            self._bgr, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        return Frame(gray, self._count.next(), time.time(), bgr)

    def close(self) -> None:
        self._gray = self._bgr = None


# -- Raspberry Pi camera ------------------------------------------------------------------------


class Picamera2Source:
    """Raspberry Pi camera through picamera2 (libcamera), read against picamera2's own source.

    One stream, `main`, in YUV420 at the configured size: its first `height` rows are the Y
    (luma) plane, already the grayscale image, so no colour conversion is spent per frame, and
    no second stream is configured that nothing would read.

    - Size: picamera2 itself only makes it even; `align_configuration()` is not called (it
      would cut a YUV420 width down to a multiple of 64 px on a Pi 4 or 128 on a Pi 5, 320 to
      256, and the lores stream would squeeze the picture). The size libcamera settles on is
      read back after `configure()`, and the rows' stride padding is cut off each frame.
    - Range: below 1280x720 picamera2 picks SMPTE 170M for video, whose Y is limited range
      (16-235), while OpenCV and the file sources give full-range gray. sYCC (full range, the
      JPEG colour space) is asked for instead; should the camera report a limited range
      anyway, Y is expanded to 0-255 with a lookup table.
    - Waits: every capture waits at most `capture_timeout_s()` (picamera2 waits forever by
      default, so a camera whose cable fails would hang the capture thread and the reopen
      with backoff would never run). On the timeout the pending capture is cancelled
      (`cancel_all_and_flush()`: else `stop()` queues behind it and blocks forever) and a
      SourceError sends the camera through Capture's reopen path.
    - Shutdown: `interrupt()` cancels a capture in progress from another thread, and `close()`
      runs stop/close on a helper thread with a deadline, so a wedged camera cannot hang it.
    - Time: a frame's timestamp is the request's own SensorTimestamp (start of exposure,
      CLOCK_BOOTTIME) in wall-clock time, not the moment the copy was made.
    """

    pace_fps: float | None = None
    CAPTURE_TIMEOUT_S = 2.0  # on top of 3 frame periods; a first frame can take ~1 s
    CLOSE_TIMEOUT_S = 3.0

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg
        self.name = "picamera2" + (f":{cfg.uri}" if cfg.uri else "")
        self._cam = None
        self._size = (cfg.width, cfg.height)
        self._lut: np.ndarray | None = None  # limited -> full range, when the camera says so
        self._count = _Counter()

    def capture_timeout_s(self) -> float:
        return self.CAPTURE_TIMEOUT_S + 3.0 / float(self.cfg.fps)

    def open(self) -> None:
        self.close()
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise SourceError(
                "source 'picamera2' needs the picamera2 module (Raspberry Pi OS: sudo apt install "
                "python3-picamera2, and create the venv with --system-site-packages); for a USB "
                'camera use source.kind = "opencv"'
            ) from None
        # YUV420 needs even sizes; libcamera may adjust further, read back below.
        w, h = self.cfg.width // 2 * 2, self.cfg.height // 2 * 2
        try:
            cam = Picamera2(int(self.cfg.uri)) if self.cfg.uri.strip() else Picamera2()
        except (IndexError, RuntimeError, OSError, ValueError) as exc:
            raise SourceError(
                f"{self.name}: no Raspberry Pi camera found or it is busy ({exc}); "
                "check the ribbon cable and `rpicam-hello --list-cameras`"
            ) from None
        try:
            extra = {}
            full_range = _full_range_colour_space()
            if full_range is not None:
                extra["colour_space"] = full_range
            config = cam.create_video_configuration(
                main={"size": (w, h), "format": "YUV420"},
                controls={"FrameRate": float(self.cfg.fps)},
                buffer_count=4,
                **extra,
            )
            cam.configure(config)
            final = cam.camera_configuration() or config
            self._size = tuple(final["main"]["size"])
            self._lut = _LIMITED_TO_FULL if _is_limited_range(final.get("colour_space")) else None
            if self._size != (w, h):
                log.info(
                    "%s: the camera delivers %dx%d (asked for %dx%d)", self.name, *self._size, w, h
                )
            if self._lut is not None:
                log.info(
                    "%s: limited-range luma (%s), expanded to full range",
                    self.name,
                    final.get("colour_space"),
                )
            cam.start()
        except Exception as exc:
            _shut_camera(cam, self.name, self.CLOSE_TIMEOUT_S)
            raise SourceError(f"{self.name}: cannot configure/start the camera ({exc})") from None
        self._cam = cam

    def read(self) -> Frame | None:
        cam = self._cam
        if cam is None:
            raise SourceError(f"{self.name}: read before open")
        timeout = self.capture_timeout_s()
        try:
            arrays, meta = cam.capture_arrays(["main"], wait=timeout)
        except (TimeoutError, concurrent.futures.TimeoutError):
            # the capture job stays queued in picamera2 (and stop() would wait behind it)
            _call_quietly(cam, "cancel_all_and_flush", self.name)
            raise SourceError(
                f"{self.name}: no frame within {timeout:.3g} s (camera cable loose, or the "
                "sensor stopped); reopening"
            ) from None
        except concurrent.futures.CancelledError:
            raise SourceError(f"{self.name}: capture cancelled (camera closing)") from None
        except Exception as exc:
            raise SourceError(f"{self.name}: capture failed ({exc})") from None
        ts = _sensor_wall_time((meta or {}).get("SensorTimestamp"))
        yuv = arrays[0]
        w, h = self._size
        if yuv.ndim != 2 or yuv.shape[0] < h or yuv.shape[1] < w:
            raise SourceError(
                f"{self.name}: unexpected buffer shape {yuv.shape} for a {w}x{h} YUV420 stream"
            )
        # Rows beyond h are the U/V planes; columns beyond w are stride padding.
        y = yuv[:h, :w]
        gray = self._lut[y] if self._lut is not None else np.ascontiguousarray(y)
        return Frame(gray, self._count.next(), ts, None)

    def interrupt(self) -> None:
        """Cancel a capture another thread waits in (Capture.stop calls this first)."""
        cam = self._cam
        if cam is not None:
            _call_quietly(cam, "cancel_all_and_flush", self.name)

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            _shut_camera(cam, self.name, self.CLOSE_TIMEOUT_S)


# full range from limited-range (16-235) luma
_LIMITED_TO_FULL = np.clip(np.round((np.arange(256) - 16) * 255.0 / 219.0), 0, 255).astype(np.uint8)


def _full_range_colour_space():
    """libcamera's sYCC colour space (full-range BT.601 YCbCr, as JPEG), or None."""
    try:
        import libcamera

        return libcamera.ColorSpace.Sycc()
    except Exception:  # noqa: BLE001 - no libcamera bindings: measure the range instead
        return None


def _is_limited_range(colour_space) -> bool:
    if colour_space is None:
        return False
    rng = getattr(colour_space, "range", None)
    if rng is not None:
        return "limited" in str(rng).lower()
    return str(colour_space).lower() not in ("sycc", "jpeg", "srgb")


def _sensor_wall_time(sensor_ns) -> float:
    """Wall-clock time of a libcamera SensorTimestamp (ns since boot, CLOCK_BOOTTIME)."""
    now = time.time()
    if not isinstance(sensor_ns, int) or sensor_ns <= 0:
        return now
    try:
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - sensor_ns / 1e9
    except (AttributeError, OSError):  # not Linux
        return now
    return now - age if 0.0 <= age < 60.0 else now


def _call_quietly(cam, step: str, name: str) -> None:
    fn = getattr(cam, step, None)
    if fn is None:
        return
    try:
        fn()
    except Exception as exc:  # a camera that already failed
        log.debug("%s: %s failed: %s", name, step, exc)


def _shut_camera(cam, name: str, timeout: float) -> None:
    """cancel_all_and_flush, stop, close on a helper thread; never waits more than `timeout`."""

    def shut() -> None:
        for step in ("cancel_all_and_flush", "stop", "close"):
            _call_quietly(cam, step, name)

    t = threading.Thread(target=shut, name="picamera2-close", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        log.error(
            "%s: the camera did not stop within %g s (libcamera stuck); left behind, a daemon "
            "restart frees it",
            name,
            timeout,
        )


_KINDS: dict[str, type] = {
    "demo": DemoSource,
    "picamera2": Picamera2Source,
    "opencv": OpenCVSource,
    "video": VideoFileSource,
    "images": ImageFolderSource,
}


def make_source(cfg: SourceConfig) -> FrameSource:
    """The source for cfg.kind, not yet opened."""
    try:
        cls = _KINDS[cfg.kind]
    except KeyError:
        raise SourceError(
            f"unknown source kind {cfg.kind!r}; choose one of {', '.join(SOURCE_KINDS)}"
        ) from None
    return cls(cfg)
