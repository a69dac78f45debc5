"""Background capture thread that always offers the newest frame (Frigate-style).

The thread reads the source as fast as it delivers (a camera) or at the file's own frame rate
(a video/folder/demo when `realtime`), and keeps only the newest frame: one the consumer did not
take before the next arrived is dropped and counted. With `realtime=False` nothing is dropped
and the thread waits for the consumer, so a file is processed frame by frame (benchmarks).

A source that fails is closed and reopened with exponential backoff, forever; one warning is
logged per backoff step, not per frame. A file source that ends with `loop = false` ends the
capture (`ended`; a stop is not an end). `stop()` first calls the source's `interrupt()` when
it has one, so a read blocked waiting for a camera frame returns at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from emotion_edge.video.frames import Frame
from emotion_edge.video.sources import FILE_KINDS, FrameSource, SourceConfig

log = logging.getLogger(__name__)


class FrameFeed(Protocol):
    """What the pipeline reads frames from: the newest frame, whether the source ended for
    good, and the capture figures for the stats payload."""

    def start(self) -> None: ...
    def latest(self, timeout: float) -> Frame | None: ...
    @property
    def ended(self) -> bool: ...
    def stats(self) -> dict: ...
    def stop(self, timeout: float = 5.0) -> None: ...


class Capture:
    """The capture thread: opens the source (reopening with backoff), keeps only the newest
    frame, counts the frames the pipeline did not take in time."""

    def __init__(
        self,
        source_factory: Callable[[], FrameSource],
        cfg: SourceConfig,
        realtime: bool = True,
        clock: Callable[[], float] = time.monotonic,
        drop_stale: bool | None = None,
    ) -> None:
        self._factory = source_factory
        self.cfg = cfg
        self.realtime = realtime
        # realtime paces file sources; drop_stale (default: as realtime) replaces a frame the
        # consumer has not taken yet instead of waiting for it (a photo folder waits)
        self.drop_stale = realtime if drop_stale is None else drop_stale
        self._clock = clock
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._slot: Frame | None = None
        self._ended = False
        self._source: FrameSource | None = None
        self._next_index = 0
        # stats
        self.frames_read = 0
        self.frames_dropped = 0
        self.reopen_count = 0
        self._files_skipped_closed = 0  # image files skipped by sources closed since
        self.failures = 0  # consecutive, drives the backoff
        self.last_error: str | None = None
        self._read_times: deque[float] = deque(maxlen=60)

    # -- consumer side ---------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("Capture already started")
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def latest(self, timeout: float) -> Frame | None:
        """Newest frame not yet returned; None after `timeout` s, at once once ended or stopped."""
        deadline = self._clock() + timeout
        with self._cond:
            if self._stop.is_set():
                return None
            while self._slot is None:
                if self._ended or self._stop.is_set():
                    return None
                left = deadline - self._clock()
                if left <= 0:
                    return None
                self._cond.wait(left)
            frame, self._slot = self._slot, None
            self._cond.notify_all()  # a non-realtime producer waits for the slot to empty
            return frame

    @property
    def ended(self) -> bool:
        """The source ended for good (a file with loop = false) and its frames were taken.

        Not after stop() (a looping video stopped by SIGTERM did not end) nor after a crash of
        the thread (no frames come, so the systemd watchdog is not fed and restarts us)."""
        with self._cond:
            return self._ended and self._slot is None

    def stats(self) -> dict:
        with self._cond:
            times = list(self._read_times)
            return {
                "capture_fps": self._fps(times),
                "frames_read": self.frames_read,
                "frames_dropped": self.frames_dropped,
                "reopen_count": self.reopen_count,
                "files_skipped": self.files_skipped,
                "last_error": self.last_error,
                "ended": self._ended,
                "source_open": self._source is not None,
            }

    @property
    def files_skipped(self) -> int:
        """Image files the source skipped (undecodable, damaged, over max_image_pixels),
        over every opening of it."""
        current = getattr(self._source, "files_skipped", 0) if self._source is not None else 0
        return self._files_skipped_closed + int(current)

    def _fps(self, times: list[float]) -> float:
        if len(times) < 2:
            return 0.0
        # A source that stalled has a rate of 0, not the rate it had before the stall.
        span = max(times[-1] - times[0], self._clock() - times[-1])
        return round((len(times) - 1) / span, 2) if span > 0 else 0.0

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        # a source whose read can block (picamera2 waiting for a frame) is woken up first
        interrupt = getattr(self._source, "interrupt", None)
        if interrupt is not None:
            try:
                interrupt()
            except Exception as exc:  # noqa: BLE001 - stopping goes on regardless
                log.debug("interrupting the source failed: %s", exc)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning(
                    "capture thread did not stop within %.1f s (blocked in a read)", timeout
                )
        self._close_source()

    # -- capture thread --------------------------------------------------------------------

    def _close_source(self) -> None:
        src, self._source = self._source, None
        if src is not None:
            self._files_skipped_closed += int(getattr(src, "files_skipped", 0))
            try:
                src.close()
            except Exception as exc:  # closing a broken camera must not kill the thread
                log.debug("closing source failed: %s", exc)

    def _fail(self, what: str, exc: BaseException) -> None:
        """Close, log once for this backoff step, then wait the step out."""
        self._close_source()
        self.failures += 1
        # Exponent capped: a camera missing for days must not overflow the float.
        step = min(self.failures - 1, 40)
        delay = min(self.cfg.reopen_max_s, self.cfg.reopen_min_s * 2.0**step)
        msg = str(exc) or type(exc).__name__
        with self._cond:
            self.last_error = msg
        log.warning("source %s failed (%s); retry %d in %.3g s", what, msg, self.failures, delay)
        self._stop.wait(delay)

    def _open(self) -> bool:
        first = self.frames_read == 0 and self.failures == 0 and self.reopen_count == 0
        if not first:
            self.reopen_count += 1
        try:
            src = self._factory()
            src.open()
        except Exception as exc:
            self._fail("open", exc)
            return False
        self._source = src
        if not first:
            log.info("source reopened after %d failure(s)", self.failures)
        return True

    def _put(self, frame: Frame) -> None:
        with self._cond:
            if self.drop_stale:
                if self._slot is not None:
                    self.frames_dropped += 1  # the consumer did not take it in time: stale
            else:
                while self._slot is not None and not self._stop.is_set():
                    self._cond.wait(0.1)
            self._slot = frame
            self._cond.notify_all()

    def _run(self) -> None:
        next_due: float | None = None  # pacing clock for file sources
        try:
            while not self._stop.is_set():
                if self._source is None:
                    if not self._open():
                        continue
                    next_due = None
                src = self._source
                pace = src.pace_fps if self.realtime else None
                if pace:
                    period, now = 1.0 / pace, self._clock()
                    if next_due is None or now - next_due > period:
                        next_due = now  # first frame, or after a stall: restart, don't burst
                    elif next_due > now and self._stop.wait(next_due - now):
                        break
                    next_due += period
                try:
                    frame = src.read()
                except Exception as exc:
                    self._fail("read", exc)
                    continue
                if frame is None:
                    if self.cfg.kind not in FILE_KINDS:
                        # Only files end; a stream that "ends" is treated as a failure.
                        self._fail("read", EOFError("stream ended"))
                        continue
                    log.info("source ended (loop = false)")
                    self._close_source()
                    with self._cond:
                        self._ended = True  # only here: not on stop() and not on a crash
                    break
                self.failures = 0  # frames flow again: the next failure starts a new backoff
                # Numbered here, not by the source, so numbers keep rising across reopens.
                frame.index = self._next_index
                self._next_index += 1
                with self._cond:
                    self.frames_read += 1
                    self._read_times.append(self._clock())
                self._put(frame)
        except BaseException:  # pragma: no cover - a bug; keep the daemon informed, not hung
            log.exception("capture thread crashed")
            with self._cond:
                self.last_error = "capture thread crashed"
            raise
        finally:
            with self._cond:
                self._cond.notify_all()
