"""The main loop on the real sample video, with the real detector, model and capture thread."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import cv2
import numpy as np
import pytest
from emotion_edge.app import build_pipeline
from emotion_edge.classify.model_meta import load_metadata
from emotion_edge.config import load_config
from emotion_edge.pipeline import BudgetController
from emotion_edge.publish.stdout import StdoutOutput
from emotion_edge.tools.payload_schema import validate

N_VIDEO_FRAMES = 275  # short_hamilton_clip.mp4


def make_cfg(video, model, source=None, **tables):
    over = {
        "device": {"id": "test-dev"},
        "source": {"kind": "video", "uri": str(video), "loop": False, **(source or {})},
        "classifier": {"model_path": str(model), "num_threads": 1},
        "detector": {"num_threads": 1},
    }
    for name, values in tables.items():
        over.setdefault(name, {}).update(values)
    return load_config(None, over)


def lines_of(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


class SlowDetector:
    """The real detector behind an artificial delay (the 'slow stage' of the test) until
    `fast_when()` turns true."""

    def __init__(self, inner, delay_s: float, fast_when=lambda: False):
        self.inner, self.delay_s, self.fast_when = inner, delay_s, fast_when
        self.name = f"slow-{inner.name}"
        self.slow = True

    def detect(self, gray):
        if self.slow and self.fast_when():
            self.slow = False
        if self.slow:
            time.sleep(self.delay_s)
        return self.inner.detect(gray)


def test_stdout_events_on_sample_video_are_schema_valid(sample_video, emotion_model):
    cfg = make_cfg(
        sample_video,
        emotion_model,
        pipeline={"realtime": False, "stats_interval_s": 0.5, "adaptive": False},
    )
    buf = io.StringIO()
    pipe = build_pipeline(cfg, output=StdoutOutput(buf))
    summary = pipe.run()
    assert summary.reason == "source ended"
    # not realtime: the capture thread waits for the consumer, nothing is dropped
    assert summary.frames_processed == N_VIDEO_FRAMES and summary.frames_skipped == 0
    payloads = lines_of(buf)
    kinds = {"event": 0, "state": 0, "stats": 0}
    for p in payloads:
        validate(p)
        kinds[p["schema"].split("/")[1]] += 1
        # privacy default: no image data anywhere (no snapshot key, no long base64 strings)
        assert "snapshot_jpeg_b64" not in p
        assert max(len(s) for s in _strings(p)) < 200
    assert kinds["state"] >= 1 and kinds["stats"] >= 1
    events = [p for p in payloads if p["schema"] == "emotion-edge/event/1"]
    appeared = [e for e in events if e["kind"] == "appeared"]
    assert appeared, "no face announced in a video full of faces"
    assert len({e["event_id"] for e in events}) == len(events)
    assert all(
        e["device_id"] == "test-dev" and e["model_version"] == load_metadata(emotion_model).version
        for e in events
    )
    # every face that disappeared had appeared first, with the same id
    seen = set()
    for e in events:
        if e["kind"] == "appeared":
            seen.add(e["face_id"])
        else:
            assert e["face_id"] in seen
    frames = [e["frame"]["index"] for e in events]
    assert frames == sorted(frames)
    all_stats = [p for p in payloads if p["schema"] == "emotion-edge/stats/1"]
    stats = all_stats[-1]
    assert stats["frames"]["processed"] == N_VIDEO_FRAMES
    assert stats["frames"]["detected"] == N_VIDEO_FRAMES  # adaptive = false: every frame
    # stage figures cover one interval each (the last one may hold no frame at all, when a
    # periodic report fired just after the last frame), so the intervals together hold them all
    assert sum(s["stages_ms"]["detect"]["n"] for s in all_stats) == N_VIDEO_FRAMES
    assert stats["events"]["appeared"] == len(appeared)


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    else:
        yield ""


@pytest.mark.slow
def test_slow_stage_drops_stale_frames_and_raises_detect_every_n(sample_video, emotion_model):
    """Detection made 90 ms slower than a 50 ms budget on a video paced like a camera: stale
    frames are dropped and counted and N rises; once detection is fast again N comes back."""
    cfg = make_cfg(
        sample_video,
        emotion_model,
        source={"loop": True},
        pipeline={
            "realtime": True,
            "budget_ms": 50.0,
            "stats_interval_s": 0.5,
            "max_detect_every_n": 6,
        },
    )
    buf = io.StringIO()
    pipe = build_pipeline(cfg, output=StdoutOutput(buf))
    seen = {"max_n": 1, "slow_frames": 0}

    def fast_when() -> bool:
        # stay slow until N has risen and had some frames to show its effect; N=2 is enough
        # (on a fast CPU 90 ms + detection every 2nd frame sits right at the 50 ms budget, so
        # N need not climb higher)
        seen["max_n"] = max(seen["max_n"], pipe.budget.n)
        seen["slow_frames"] += 1
        return seen["max_n"] >= 2 and seen["slow_frames"] >= 15

    slow = SlowDetector(pipe.detector, 0.09, fast_when)
    pipe.detector = slow

    def watch():  # end the run once N is back to 1 after the slow phase (or time is up)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not pipe.stopping:
            if not slow.slow and pipe.budget.n == 1:
                time.sleep(0.6)  # let one more stats payload go out
                break
            time.sleep(0.05)
        pipe.stop()

    threading.Thread(target=watch, daemon=True).start()
    summary = pipe.run(duration_s=60)
    stats = [p for p in lines_of(buf) if p["schema"] == "emotion-edge/stats/1"]
    for s in stats:
        validate(s)
    ns = [s["detect_every_n"] for s in stats]
    assert max(ns) >= 2, ns
    assert not slow.slow and pipe.budget.n == 1, f"N did not recover: {ns}"
    last = stats[-1]
    assert last["detect_every_n"] == 1
    assert last["frames"]["dropped_stale"] > 0
    assert summary.frames_skipped > 0 and last["frames"]["skipped"] == summary.frames_skipped
    assert last["frames"]["over_budget"] > 0
    assert last["frames"]["detected"] < last["frames"]["processed"]
    assert pipe.budget.changes >= 2


def test_budget_controller_rises_and_recovers():
    bc = BudgetController(budget_ms=50, base_n=1, max_n=4, window=5)
    for _ in range(5):
        bc.observe(80.0, detected=True, detect_ms=78.0)
    assert bc.n == 2
    for i in range(30):  # D = 80, T = 2: at N=2 the mean is 41 < 50, N=1 would be 80
        det = i % 2 == 0
        bc.observe(80.0 if det else 2.0, detected=det, detect_ms=78.0 if det else 0.0)
    assert bc.n == 2
    for i in range(40):  # detection became cheap: 10 ms
        det = i % 2 == 0
        bc.observe(10.0 if det else 2.0, detected=det, detect_ms=8.0 if det else 0.0)
    assert bc.n == 1
    assert bc.over_budget_frames == 5 + 15
    fixed = BudgetController(budget_ms=50, adaptive=False, window=5)
    for _ in range(20):
        fixed.observe(500.0, detected=True)
    assert fixed.n == 1


def test_snapshots_only_when_allowed(sample_video, emotion_model):
    cfg = make_cfg(
        sample_video,
        emotion_model,
        pipeline={"realtime": False},
        privacy={"allow_snapshots": True, "snapshot_size": 64},
    )
    buf = io.StringIO()
    build_pipeline(cfg, output=StdoutOutput(buf)).run(max_frames=60)
    events = [p for p in lines_of(buf) if p["schema"] == "emotion-edge/event/1"]
    with_snap = [e for e in events if e["kind"] != "disappeared"]
    assert with_snap
    for e in with_snap:
        validate(e)
        jpg = np.frombuffer(base64.b64decode(e["snapshot_jpeg_b64"]), np.uint8)
        img = cv2.imdecode(jpg, cv2.IMREAD_UNCHANGED)
        assert img is not None and img.shape[:2] == (64, 64)


def test_frame_errors_are_counted_not_fatal(sample_video, emotion_model, caplog):
    cfg = make_cfg(sample_video, emotion_model, pipeline={"realtime": False})
    buf = io.StringIO()
    pipe = build_pipeline(cfg, output=StdoutOutput(buf))
    inner = pipe.detector

    class Flaky:
        name = "flaky"
        calls = 0

        def detect(self, gray):
            Flaky.calls += 1
            if Flaky.calls in (3, 4):
                raise RuntimeError("injected detector failure")
            return inner.detect(gray)

    pipe.detector = Flaky()
    summary = pipe.run(max_frames=20)
    assert summary.frames_processed == 20
    assert pipe.errors == 2
    assert "injected detector failure" in caplog.text


def test_stop_from_another_thread(sample_video, emotion_model):
    cfg = make_cfg(sample_video, emotion_model, source={"loop": True})
    buf = io.StringIO()
    pipe = build_pipeline(cfg, output=StdoutOutput(buf))
    threading.Timer(1.0, pipe.stop).start()
    t0 = time.monotonic()
    summary = pipe.run(duration_s=30)
    assert time.monotonic() - t0 < 5
    assert summary.reason == "stopped" and summary.frames_processed > 0
    # the final stats payload is written on the way out
    assert lines_of(buf)[-1]["schema"] == "emotion-edge/stats/1"


@pytest.mark.parametrize("bad", ["video", "images"])
def test_missing_file_source_fails_at_start(tmp_path, emotion_model, bad):
    from emotion_edge.errors import SourceError

    cfg = make_cfg(tmp_path / "nope.mp4", emotion_model, source={"kind": bad})
    with pytest.raises(SourceError):
        build_pipeline(cfg, output=StdoutOutput(io.StringIO()))


def test_dead_camera_keeps_daemon_alive_without_watchdog(tmp_path, emotion_model):
    """A camera that cannot open: the loop keeps running and reporting, the capture retries,
    and no WATCHDOG=1 goes to systemd (frames do not flow), so systemd can act on it."""
    import socket

    from emotion_edge.systemd_notify import SystemdNotifier

    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    cfg = make_cfg(
        "/dev/video99",
        emotion_model,
        source={"kind": "opencv", "reopen_min_s": 0.2, "reopen_max_s": 0.4},
        pipeline={"frame_timeout_s": 0.1, "stats_interval_s": 0.5},
    )
    buf = io.StringIO()
    notifier = SystemdNotifier(socket_path=path, watchdog_usec="200000", watchdog_pid="")
    pipe = build_pipeline(cfg, output=StdoutOutput(buf), notifier=notifier)
    summary = pipe.run(duration_s=2.5)
    notes = []
    try:
        while True:
            notes.append(sock.recv(4096).decode())
    except TimeoutError:
        pass
    finally:
        sock.close()
    assert summary.frames_processed == 0 and summary.reason.startswith("duration")
    assert notes[0].startswith("READY=1") and notes[-1] == "STOPPING=1"
    assert "WATCHDOG=1" not in notes
    stats = [p for p in lines_of(buf) if p["schema"] == "emotion-edge/stats/1"]
    assert len(stats) >= 3  # stats keep flowing without frames
    for s in stats:
        validate(s)
    assert stats[-1]["source"]["last_error"]
    assert stats[-1]["fps"] == 0


@pytest.mark.realdata
def test_photo_folder_every_photo_its_faces_at_once(samples_dir, emotion_model, tmp_path):
    """images: a photo is a scene of its own, scanned with every detector view, its faces
    announced at once; none is dropped however long it takes."""
    src = samples_dir / "dlib_faces"
    if not (src / "bald_guys.jpg").is_file():
        pytest.skip(f"sample photos missing: {src}")
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("2008_002470.jpg", "bald_guys.jpg"):  # 7 faces labelled; a crowd
        (folder / name).symlink_to(src / name)
    cfg = make_cfg(
        folder, emotion_model, source={"kind": "images"}, output={"timeline_interval_s": 0.001}
    )
    buf = io.StringIO()
    summary = build_pipeline(cfg, output=StdoutOutput(buf)).run()
    assert summary.frames_processed == 2 and summary.frames_skipped == 0
    payloads = lines_of(buf)
    for p in payloads:
        validate(p)
    events = [p for p in payloads if p["schema"] == "emotion-edge/event/1"]
    first = {e["face_id"] for e in events if e["kind"] == "appeared" and e["frame"]["index"] == 0}
    second = {e["face_id"] for e in events if e["kind"] == "appeared" and e["frame"]["index"] == 1}
    # the first photo's faces end when the second photo comes; no id is shared
    gone = {e["face_id"] for e in events if e["kind"] == "disappeared"}
    assert len(first) >= 6 and gone == first and not first & second
    assert len(second) >= 15, f"{len(second)} faces in bald_guys.jpg"
    samples = [p for p in payloads if p["schema"] == "emotion-edge/timeline/1"]
    assert [len(s["faces"]) for s in samples] == [len(first), len(second)]
    assert {s["file"] for s in samples} == {"2008_002470.jpg", "bald_guys.jpg"}
