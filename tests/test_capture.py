"""The capture thread on real decoded video: newest-frame delivery with stale frames dropped
and counted, file pacing, end of stream, and recovery with backoff from sources that fail."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from emotion_edge.errors import SourceError
from emotion_edge.video.capture import Capture
from emotion_edge.video.sources import SourceConfig, make_source

N_FRAMES = 275  # short_hamilton_clip.mp4


class FailingAfter:
    """A real video source that raises SourceError after `n` frames (a camera that blinks)."""

    def __init__(self, inner, n: int | None, exc: Exception | None = None):
        self.inner, self.n, self.read_count = inner, n, 0
        self.exc = exc or SourceError("camera unplugged")
        self.pace_fps = None

    def open(self):
        self.inner.open()
        self.pace_fps = self.inner.pace_fps

    def read(self):
        if self.n is not None and self.read_count >= self.n:
            raise self.exc
        self.read_count += 1
        return self.inner.read()

    def close(self):
        self.inner.close()


class Unopenable:
    pace_fps = None

    def open(self):
        raise SourceError("/dev/video0: cannot open (no such camera)")

    def read(self):  # pragma: no cover - never opened
        raise AssertionError

    def close(self):
        pass


def video_cfg(sample_video, **kw) -> SourceConfig:
    kw.setdefault("loop", False)
    kw.setdefault("reopen_min_s", 0.01)
    kw.setdefault("reopen_max_s", 0.04)
    return SourceConfig(kind="video", uri=str(sample_video), **kw)


def drain(cap: Capture, timeout: float = 5.0, delay: float = 0.0) -> list:
    frames = []
    while (f := cap.latest(timeout)) is not None:
        frames.append(f)
        if delay:
            time.sleep(delay)
    return frames


def test_benchmark_mode_delivers_every_frame_in_order(sample_video):
    cfg = video_cfg(sample_video)
    cap = Capture(lambda: make_source(cfg), cfg, realtime=False)
    cap.start()
    frames = drain(cap)
    cap.stop()
    assert [f.index for f in frames] == list(range(N_FRAMES))
    st = cap.stats()
    assert st["frames_read"] == N_FRAMES and st["frames_dropped"] == 0
    assert st["ended"] and cap.ended and st["reopen_count"] == 0 and st["last_error"] is None


def test_slow_consumer_gets_the_newest_frame_and_stale_ones_are_counted(sample_video):
    # Real time: the file plays at its 29.97 fps; a consumer at ~8 fps cannot keep up.
    cfg = video_cfg(sample_video, loop=True)
    cap = Capture(lambda: make_source(cfg), cfg, realtime=True)
    cap.start()
    got, stale_at_take = [], []
    t_end = time.monotonic() + 1.5
    while time.monotonic() < t_end:
        f = cap.latest(2.0)
        assert f is not None
        # What it hands over is the newest frame read so far (at most one more arrived since).
        stale_at_take.append(cap.stats()["frames_read"] - 1 - f.index)
        got.append(f.index)
        time.sleep(0.12)  # the artificially slow stage
    cap.stop()
    st = cap.stats()
    assert max(stale_at_take) <= 1
    assert got == sorted(set(got))  # never an old frame again
    assert st["frames_dropped"] >= 2 * len(got)  # ~3 of every 4 frames are stale
    # Every frame read was either taken, dropped as stale, or still waiting (at most one).
    assert st["frames_read"] - len(got) - st["frames_dropped"] in (0, 1)
    assert 12 <= st["capture_fps"] <= 40  # paced to the file's rate, not decode speed


def test_realtime_file_is_paced_to_its_frame_rate(sample_video):
    cfg = video_cfg(sample_video, loop=True)
    cap = Capture(lambda: make_source(cfg), cfg, realtime=True)
    cap.start()
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < 1.0:
        if cap.latest(1.0) is not None:
            n += 1
    cap.stop()
    read = cap.stats()["frames_read"]
    assert 12 <= read <= 36, read  # ~30 in one second; an unpaced decode reads hundreds
    assert n >= read - 3  # a fast consumer misses (almost) nothing


def test_source_failing_mid_stream_recovers(sample_video, caplog):
    cfg = video_cfg(sample_video)
    made = []

    def factory():
        # 1st: fails after 20 frames; 2nd: cannot even open; 3rd: healthy.
        made.append(1)
        if len(made) == 2:
            return Unopenable()
        return FailingAfter(make_source(cfg), 20 if len(made) == 1 else None)

    cap = Capture(factory, cfg, realtime=False)
    with caplog.at_level(logging.INFO, logger="emotion_edge.video.capture"):
        cap.start()
        frames = drain(cap)
        cap.stop()
    st = cap.stats()
    assert len(made) == 3 and st["reopen_count"] == 2
    # 20 frames before the failure, then the whole file after the reopen: nothing lost, and
    # frame numbers keep rising across the reopen.
    assert len(frames) == 20 + N_FRAMES
    assert [f.index for f in frames] == list(range(20 + N_FRAMES))
    assert "no such camera" in st["last_error"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # one per backoff step, not one per frame
    assert "camera unplugged" in warnings[0].getMessage()
    assert "reopened" in caplog.text and st["ended"]


def test_unexpected_exception_does_not_kill_the_thread(sample_video):
    cfg = video_cfg(sample_video)
    made = []

    def factory():
        made.append(1)
        n = 5 if len(made) == 1 else None
        return FailingAfter(make_source(cfg), n, exc=ValueError("driver bug"))

    cap = Capture(factory, cfg, realtime=False)
    cap.start()
    frames = drain(cap)
    cap.stop()
    assert len(frames) == 5 + N_FRAMES and cap.stats()["last_error"] == "driver bug"


def test_missing_camera_backs_off_exponentially(caplog):
    cfg = SourceConfig(kind="opencv", uri="/dev/video0", reopen_min_s=0.05, reopen_max_s=0.2)
    cap = Capture(Unopenable, cfg)
    with caplog.at_level(logging.WARNING, logger="emotion_edge.video.capture"):
        cap.start()
        t0 = time.monotonic()
        assert cap.latest(timeout=1.0) is None
        waited = time.monotonic() - t0
        cap.stop()
    assert 0.9 <= waited < 2.0
    attempts = caplog.text.count("source open failed")
    # Delays 0.05, 0.1, 0.2, 0.2, ... : about 7 attempts in 1 s (a busy loop would make
    # thousands; a fixed 0.2 s would make 5).
    assert 3 <= attempts <= 9, attempts
    for d in ("0.1 s", "0.2 s"):
        assert f"in {d}" in caplog.text
    st = cap.stats()
    assert st["frames_read"] == 0 and st["reopen_count"] == attempts - 1
    assert "no such camera" in st["last_error"] and not st["source_open"]


def test_latest_times_out_while_a_camera_is_slow(sample_video):
    cfg = video_cfg(sample_video)
    release = threading.Event()

    class Stalled(FailingAfter):
        def read(self):
            release.wait(5)
            return super().read()

    cap = Capture(lambda: Stalled(make_source(cfg), None), cfg, realtime=False)
    cap.start()
    t0 = time.monotonic()
    assert cap.latest(timeout=0.2) is None
    assert 0.15 <= time.monotonic() - t0 < 1.0
    release.set()
    assert cap.latest(timeout=5.0) is not None
    cap.stop()


def test_stop_is_prompt_and_idempotent(sample_video):
    cfg = video_cfg(sample_video, loop=True)
    cap = Capture(lambda: make_source(cfg), cfg, realtime=True)
    cap.start()
    assert cap.latest(2.0) is not None
    t0 = time.monotonic()
    cap.stop()
    cap.stop()
    assert time.monotonic() - t0 < 1.0
    assert cap.latest(0.5) is None  # nothing after stop, and no waiting for the timeout
    with pytest.raises(RuntimeError):
        cap.start()


def test_a_stop_is_not_an_end(sample_video):
    # final stats of a looping video stopped by SIGTERM must not say source.ended
    cfg = video_cfg(sample_video, loop=True)
    cap = Capture(lambda: make_source(cfg), cfg, realtime=True)
    cap.start()
    assert cap.latest(2.0) is not None
    cap.stop()
    assert not cap.stats()["ended"] and not cap.ended


def test_stop_interrupts_a_blocked_read(sample_video):
    """A source with interrupt() (picamera2) is woken up before the join, so stop() does not
    wait out a read that blocks until a frame comes."""
    cfg = video_cfg(sample_video)
    release = threading.Event()

    class Blocking(FailingAfter):
        def read(self):
            if self.read_count >= 1:
                release.wait(30)
                raise SourceError("capture cancelled")
            return super().read()

        def interrupt(self):
            release.set()

    cap = Capture(lambda: Blocking(make_source(cfg), None), cfg, realtime=False)
    cap.start()
    assert cap.latest(5.0) is not None
    time.sleep(0.1)  # the thread is blocked in its second read now
    t0 = time.monotonic()
    cap.stop()
    assert time.monotonic() - t0 < 1.0 and release.is_set()
