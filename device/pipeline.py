"""The main loop: newest frame -> detect -> classify -> track/smooth -> events -> output.

Frigate-style, the loop always takes the newest frame from the capture thread; frames it did
not get to in time are dropped there and counted. Every stage is timed. When the processing
time per frame goes over `pipeline.budget_ms`, detection (usually the most expensive stage)
runs only on every Nth frame and the tracker predicts boxes in between; N goes back down when
the cost model says the lower N fits the budget again.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from emotion_edge import __version__
from emotion_edge.classify.auto_select import classifier_stats
from emotion_edge.classify.classifier import FaceClassifier
from emotion_edge.config import AppConfig
from emotion_edge.detect.detector import FaceDetector, detect_photo
from emotion_edge.preprocess import eye_roll_deg, square_crop_box
from emotion_edge.publish.base import Output
from emotion_edge.stats import BudgetFigures, FrameCounters, StageTimes, stats_payload
from emotion_edge.systemd_notify import SystemdNotifier
from emotion_edge.track.events import EmotionEvent, EventEngine, FaceObservation, state_payload
from emotion_edge.track.smoothing import EmotionSmoother
from emotion_edge.track.timeline import TimelineSampler
from emotion_edge.track.tracker import IouTracker
from emotion_edge.video.capture import FrameFeed
from emotion_edge.video.frames import Frame

log = logging.getLogger(__name__)

# Runtime errors in one frame (a bad crop, an interpreter hiccup) are logged and counted; this
# many in a row means something is broken for good and the daemon exits so systemd restarts it.
MAX_CONSECUTIVE_ERRORS = 50


class BudgetController:
    """Chooses detect_every_n from measured per-frame processing cost.

    Raise N when the mean processing time of the last `window` frames exceeds the budget.
    Lower it when the predicted mean at N-1, (D + (N-2)*T) / (N-1), fits within
    `recover_ratio` of the budget, where D is the 90th percentile cost of recent frames with
    detection and T the mean cost of recent frames without. Predicting from a pessimistic D,
    and waiting `2 * window` frames after any change before lowering, keeps N from flapping
    when detection time is noisy (a busy CPU).
    """

    def __init__(
        self,
        budget_ms: float,
        base_n: int = 1,
        max_n: int = 6,
        adaptive: bool = True,
        window: int = 10,
        recover_ratio: float = 0.8,
    ):
        self.budget_ms = budget_ms
        self.base_n = base_n
        self.max_n = max(base_n, max_n)
        self.adaptive = adaptive
        self.window = window
        self.recover_ratio = recover_ratio
        self.n = base_n
        self._recent: deque[float] = deque(maxlen=window)
        self._detect_ms: deque[float] = deque(maxlen=window)  # frames with detection
        self._track_ms: deque[float] = deque(maxlen=window)  # frames without
        self._since_change = 0
        self._no_detect_guess = 0.0
        self.changes = 0
        self.over_budget_frames = 0

    def predicted_ms(self, n: int) -> float | None:
        if not self._detect_ms:
            return None
        d = float(np.percentile(np.fromiter(self._detect_ms, float), 90))
        t = (sum(self._track_ms) / len(self._track_ms)) if self._track_ms else None
        if t is None:
            t = self._no_detect_guess
        return (d + (n - 1) * t) / n

    def observe(self, total_ms: float, detected: bool, detect_ms: float = 0.0) -> int:
        if total_ms > self.budget_ms:
            self.over_budget_frames += 1
        if detected:
            self._detect_ms.append(total_ms)
            # until a frame without detection is seen, guess its cost as total minus detect
            self._no_detect_guess = max(0.0, total_ms - detect_ms)
        else:
            self._track_ms.append(total_ms)
        self._recent.append(total_ms)
        self._since_change += 1
        if not self.adaptive or len(self._recent) < self.window:
            return self.n
        mean = sum(self._recent) / len(self._recent)
        if mean > self.budget_ms and self.n < self.max_n:
            self._set(self.n + 1, f"mean {mean:.1f} ms > budget {self.budget_ms:g} ms")
        elif self.n > self.base_n and self._since_change >= 2 * self.window:
            pred = self.predicted_ms(self.n - 1)
            if pred is not None and pred < self.budget_ms * self.recover_ratio:
                self._set(self.n - 1, f"predicted {pred:.1f} ms fits budget {self.budget_ms:g} ms")
        return self.n

    def _set(self, n: int, why: str) -> None:
        log.info("detect_every_n %d -> %d (%s)", self.n, n, why)
        self.n = n
        self.changes += 1
        self._since_change = 0
        self._recent.clear()


@dataclass
class RunSummary:
    frames_processed: int = 0
    frames_skipped: int = 0
    events: int = 0
    event_counts: dict = field(default_factory=dict)
    reason: str = ""
    stats: dict = field(default_factory=dict)


class FrameTap(Protocol):
    """Sees every processed frame with its tracked faces (the [web] live view implements it).

    Called on the pipeline thread, so it may only keep references (the newest frame and face
    list, and only while someone watches); encoding happens on the tap's own thread."""

    def on_frame(self, frame: Frame, faces: list[FaceObservation]) -> None: ...
    def close(self) -> None: ...


class Pipeline:
    """Wires capture, detector, classifier, tracker and output; `run()` is the main loop."""

    def __init__(
        self,
        cfg: AppConfig,
        capture: FrameFeed,
        detector: FaceDetector,
        classifier: FaceClassifier,
        output: Output,
        notifier: SystemdNotifier | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.cfg = cfg
        self.capture = capture
        self.detector = detector
        self.classifier = classifier
        self.output = output
        self.notifier = notifier or SystemdNotifier(socket_path="")
        self.clock = clock
        self.device_id = cfg.device.id
        self.model_version = classifier.version
        t = cfg.tracking
        self.tracker = IouTracker(t)
        self.smoother = EmotionSmoother(t.smoothing_tau_s, t.change_distance)
        self.engine = EventEngine(t, classifier.labels, self.device_id, self.model_version)
        # timeline samples: every announced face's probabilities, at [output] timeline_interval_s
        self.timeline: TimelineSampler | None = None
        if cfg.output.timeline_interval_s > 0:
            self.timeline = TimelineSampler(
                cfg.output.timeline_interval_s,
                classifier.labels,
                self.device_id,
                self.model_version,
            )
        p = cfg.pipeline
        self.budget = BudgetController(
            p.budget_ms, p.detect_every_n, p.max_detect_every_n, p.adaptive
        )
        self.times = StageTimes()
        self._stop = threading.Event()
        self._since_detect = 10**9  # detect on the first frame
        self._last_index: int | None = None
        self._last_frame_index = -1
        self.counters = FrameCounters()
        self._consecutive_errors = 0
        self._last_error_log = 0.0
        self._last_photo: str | None = None
        self._rolls: dict[tuple, float] = {}  # roll (degrees) of each box of the last detection
        self._started_mono = time.monotonic()
        self._interval_start = self._started_mono
        self._interval_frames = 0
        self._next_stats = 0.0
        self._next_state = 0.0
        self.last_stats: dict = {}
        self._unhealthy_logged = False  # see _output_healthy
        self.taps: list[FrameTap] = []  # see FrameTap; closed at shutdown

    # -- control ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish (signal handlers call this; safe from any thread)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def errors(self) -> int:
        return self.counters.errors

    def run(self, max_frames: int | None = None, duration_s: float | None = None) -> RunSummary:
        p = self.cfg.pipeline
        reason = "stopped"
        self.output.start()
        try:
            self.capture.start()
        except BaseException:
            self.output.stop()
            raise
        self._started_mono = self._interval_start = time.monotonic()
        self._next_stats = self._started_mono + p.stats_interval_s
        self._next_state = self._started_mono + p.state_interval_s
        self.notifier.ready(f"running, device {self.device_id}")
        log.info(
            "pipeline running: device %s, detector %s, model %s, budget %g ms",
            self.device_id,
            self.detector.name,
            self.model_version,
            p.budget_ms,
        )
        try:
            while not self._stop.is_set():
                if max_frames is not None and self.counters.processed >= max_frames:
                    reason = f"max_frames {max_frames} reached"
                    break
                if duration_s is not None and time.monotonic() - self._started_mono >= duration_s:
                    reason = f"duration {duration_s:g} s reached"
                    break
                if self.output.broken:
                    reason = "output closed"
                    break
                t0 = time.monotonic()
                frame = self.capture.latest(timeout=p.frame_timeout_s)
                wait_ms = (time.monotonic() - t0) * 1000.0
                if frame is None:
                    if self.capture.ended:
                        reason = "source ended"
                        break
                    self._periodic(time.monotonic())
                    continue
                self.times.add("capture_wait", wait_ms)
                self._process_safely(frame)
                if self._output_healthy():  # a dead or stuck sender: no ping, a restart
                    self.notifier.watchdog()
                self._periodic(time.monotonic())
        finally:
            self._shutdown(reason)
        c = self.counters
        return RunSummary(
            c.processed, c.skipped, c.events_total, dict(c.events), reason, self.last_stats
        )

    def _output_healthy(self) -> bool:
        """Whether the output's background threads work (MqttPublisher.healthy(): its sender
        thread is alive and passing its loop). While they do not, the systemd watchdog is not
        fed, so systemd restarts the daemon instead of it running on without delivering."""
        ok = bool(self.output.healthy())
        if not ok and not self._unhealthy_logged:
            log.error("output unhealthy: not pinging the systemd watchdog (a restart follows)")
        self._unhealthy_logged = not ok
        return ok

    def _shutdown(self, reason: str) -> None:
        log.info("pipeline stopping: %s", reason)
        self.notifier.stopping()
        try:
            self.capture.stop()
        except Exception:  # noqa: BLE001 - shutdown must go on to flush the output
            log.exception("capture did not stop cleanly")
        try:
            self._publish_state()
            # the events of the last frames get their acknowledgements first, so the retained
            # final stats count them as delivered, not as still in the spool
            flush = getattr(self.output, "flush", None)
            if flush is not None:
                flush(2.0)
            self._publish_stats(time.monotonic())
        except Exception:  # noqa: BLE001
            log.exception("final state/stats not published")
        self.output.stop()
        self.notifier.close()
        for tap in self.taps:
            try:
                tap.close()
            except Exception:  # noqa: BLE001 - one tap must not keep the others open
                log.exception("frame tap did not close cleanly")

    # -- one frame ----------------------------------------------------------------------------

    def _process_safely(self, frame: Frame) -> None:
        try:
            self.process(frame)
            self._consecutive_errors = 0
        except Exception as exc:
            self.counters.errors += 1
            self._consecutive_errors += 1
            now = time.monotonic()
            if now - self._last_error_log > 60:
                self._last_error_log = now
                log.exception("frame %s failed (%d errors so far)", frame.index, self.errors)
            if self._consecutive_errors >= MAX_CONSECUTIVE_ERRORS:
                raise RuntimeError(
                    f"{self._consecutive_errors} frames in a row failed; last: {exc}"
                ) from exc

    def process(self, frame: Frame) -> list[EmotionEvent]:
        """Run every stage on one frame; returns the events it emitted."""
        t_start = time.monotonic()
        if self._last_index is not None and frame.index > self._last_index + 1:
            self.counters.skipped += frame.index - self._last_index - 1
        self._last_index = frame.index
        gray = frame.image
        h, w = gray.shape[:2]

        # A photo of a folder (images source) is a scene of its own: no face carries over from
        # the previous photo, every face in it is looked for at once (all the detector's
        # views) and announced at once (there is no next frame to confirm it in). The same
        # photo again (a folder of one, looping) is a still scene: detected as frames are.
        still = frame.name is not None
        new_photo = still and frame.name != self._last_photo
        self._last_photo = frame.name
        gone = self.tracker.clear() if new_photo else []
        detected = new_photo or self._since_detect + 1 >= self.budget.n
        t0 = time.monotonic()
        detect_ms = 0.0
        if detected:
            detections = (
                detect_photo(self.detector, gray) if new_photo else self.detector.detect(gray)
            )
            detect_ms = (time.monotonic() - t0) * 1000.0
            self.times.add("detect", detect_ms)
            self.counters.detected += 1
            self._since_detect = 0
        else:
            self._since_detect += 1

        t1 = time.monotonic()
        if detected:
            boxes = [tuple(float(v) for v in d.box) for d in detections]
            self._rolls = {
                b: eye_roll_deg(d.keypoints) for b, d in zip(boxes, detections, strict=True)
            }
            tracks, removed = self.tracker.update(
                boxes, [d.score for d in detections], ts=frame.timestamp, frame_size=(w, h)
            )
        else:
            tracks, removed = self.tracker.predict(), []
        removed = gone + removed
        visible = [t for t in tracks if t.visible]
        # missed by the detector but still held (tracking.hold_s): kept in state and timeline
        # with their last probabilities, not classified at a box nobody saw
        carried = [
            (t, p)
            for t in tracks
            if not t.visible and (p := self.smoother.get(t.track_id)) is not None
        ]
        track_ms = (time.monotonic() - t1) * 1000.0

        t2 = time.monotonic()
        rolls = [self._rolls.get(t.detected_box, 0.0) for t in visible]
        probs = self.classifier.classify(gray, [t.box for t in visible], rolls)
        self.times.add("classify", (time.monotonic() - t2) * 1000.0)

        t3 = time.monotonic()
        obs = [
            FaceObservation(
                t.track_id,
                t.box,
                t.hits,
                self.smoother.update(t.track_id, p, frame.timestamp),
                change_ts=self.smoother.last_change(t.track_id),
            )
            for t, p in zip(visible, probs, strict=True)
        ] + [FaceObservation(t.track_id, t.box, t.hits, p, detected=False) for t, p in carried]
        self._sync_model_version()
        self.smoother.forget(removed)
        events = self.engine.update(
            obs, removed, frame.index, (w, h), frame.timestamp, announce_now=still
        )
        self.times.add("track", track_ms + (time.monotonic() - t3) * 1000.0)

        t4 = time.monotonic()
        for ev in events:
            if self.cfg.privacy.allow_snapshots and ev.kind != "disappeared":
                ev.snapshot_jpeg_b64 = self._snapshot(frame, ev.box)
            self.output.publish_event(ev.to_payload(self.clock()))
            self.counters.events[ev.kind] += 1
        self._last_frame_index = frame.index
        for tap in self.taps:  # the web live view: keeps references, never encodes here
            tap.on_frame(frame, obs)
        if events:
            self._publish_state()
        self._sample_timeline(frame, obs, (w, h))
        t_end = time.monotonic()
        self.times.add("publish", (t_end - t4) * 1000.0)

        total_ms = (t_end - t_start) * 1000.0
        self.times.add("total", total_ms)
        self.times.add("latency", max(0.0, (self.clock() - frame.timestamp) * 1000.0))
        self.counters.processed += 1
        self._interval_frames += 1
        self.budget.observe(total_ms, detected, detect_ms)
        observe = getattr(self.classifier, "observe_frame_ms", None)
        if observe is not None and not still:  # a photo has no frame budget to keep
            observe(total_ms)  # classify.auto_select: the other stages' share of the budget
        return events

    def _sync_model_version(self) -> None:
        """[classifier] model = auto may switch models between frames: events, timeline and
        stats name the model that classified the faces they report."""
        version = self.classifier.version
        if version != self.model_version:
            self.model_version = version
            self.engine.model_version = version
            if self.timeline is not None:
                self.timeline.model_version = version

    def _sample_timeline(self, frame: Frame, obs: list[FaceObservation], size) -> None:
        """A timeline sample of the announced faces when one is due (track/timeline.py)."""
        if self.timeline is None or not self.timeline.due(frame.timestamp):
            return
        announced = [o for o in obs if (st := self.engine.faces.get(o.face_id)) and st.announced]
        payload = self.timeline.sample(
            announced, frame.index, size, frame.timestamp, self.clock(), frame.name
        )
        if payload is not None:
            self.output.publish_timeline(payload)

    def _snapshot(self, frame: Frame, box) -> str | None:
        """JPEG of the face crop, base64 - only reached with [privacy] allow_snapshots.

        Cropped with the model's own crop scale, so the snapshot shows what was classified."""
        import cv2

        img = frame.color if frame.color is not None else frame.image
        x0, y0, x1, y1 = square_crop_box(
            box, img.shape, self.classifier.crop_scale, self.classifier.crop_shift_y
        )
        hh, ww = img.shape[:2]
        crop = img[max(0, y0) : min(hh, y1), max(0, x0) : min(ww, x1)]
        if crop.size == 0:
            return None
        side = self.cfg.privacy.snapshot_size
        crop = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(
            ".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, self.cfg.privacy.snapshot_jpeg_quality]
        )
        return base64.b64encode(buf.tobytes()).decode("ascii") if ok else None

    # -- periodic payloads --------------------------------------------------------------------

    def _periodic(self, now: float) -> None:
        p = self.cfg.pipeline
        try:
            if now >= self._next_state:
                self._next_state = now + p.state_interval_s
                self._publish_state()
            if now >= self._next_stats:
                self._next_stats = now + p.stats_interval_s
                self._publish_stats(now)
        except Exception:  # noqa: BLE001 - a failed status payload must not stop the loop
            self.counters.errors += 1
            if now - self._last_error_log > 60:
                self._last_error_log = now
                log.exception("state/stats payload not published")

    def _publish_state(self) -> None:
        self.output.publish_state(
            state_payload(
                self.device_id,
                self.model_version,
                self.engine.state_faces(),
                self._last_frame_index,
                self.clock(),
                room=self.engine.room(),
            )
        )

    def stats_payload(self, now: float | None = None, reset: bool = True) -> dict:
        now = time.monotonic() if now is None else now
        b = self.budget
        payload = stats_payload(
            device_id=self.device_id,
            model_version=self.model_version,
            software_version=__version__,
            ts=self.clock(),
            uptime_s=now - self._started_mono,
            interval_s=now - self._interval_start,
            interval_frames=self._interval_frames,
            budget=BudgetFigures(b.budget_ms, b.n, b.changes, b.over_budget_frames),
            counters=self.counters,
            stages_ms=self.times.summary(reset=reset),
            capture=self.capture.stats(),
            faces=len(self.engine.state_faces()),
            detector=self.detector.name,
            detector_passes=dict(getattr(self.detector, "passes", None) or {}),
            classifier=classifier_stats(self.classifier),
            source_kind=self.cfg.source.kind,
            output_mode=self.cfg.output.mode,
            output_stats=self.output.stats(),
        )
        if reset:
            self._interval_start = now
            self._interval_frames = 0
        return payload

    def _publish_stats(self, now: float) -> None:
        self.last_stats = self.stats_payload(now)
        self.output.publish_stats(self.last_stats)
