"""End-to-end pipeline speed (in process) and the daemon's peak RSS (as a real process).

In process: the real `emotion_edge.pipeline.Pipeline` (capture thread, detector, classifier,
tracker, events) with a discarding output, reading as fast as it can (`realtime = false`), on
the sample video and on synthetic frames. As a process: `emotion-edge --dry-run` on the sample
video; its peak RSS comes from wait4(), so it covers the whole daemon, interpreter included.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import SAMPLE_VIDEO, SAMPLES_DIR, log

STAGES = ("capture_wait", "detect", "classify", "track", "publish", "total")


class NullOutput:
    """Counts payloads and drops them: the benchmark times the pipeline, not a terminal."""

    mode = "stdout"
    broken = False

    def __init__(self) -> None:
        self.counts = {"event": 0, "state": 0, "stats": 0}

    def start(self) -> None:
        pass

    def publish_event(self, payload: dict) -> None:
        self.counts["event"] += 1

    def publish_state(self, payload: dict) -> None:
        self.counts["state"] += 1

    def publish_stats(self, payload: dict) -> None:
        self.counts["stats"] += 1

    def publish_timeline(self, payload: dict) -> None:
        self.counts["timeline"] = self.counts.get("timeline", 0) + 1

    def stats(self) -> dict:
        return dict(self.counts)

    def healthy(self) -> bool:
        return True

    def delivery_summary(self) -> str:
        return ""

    def stop(self, timeout: float = 5.0) -> None:
        pass


class SyntheticSource:
    """640x480 frames: a window panning across a real two-face photo (plus noise), or noise only.

    Deterministic (seeded) so runs compare; `faces=False` gives the no-face floor of the loop.
    """

    def __init__(self, n_frames: int, faces: bool = True, size: tuple[int, int] = (640, 480)):
        self.n_frames, self.faces, self.size = n_frames, faces, size
        self._i = 0
        self._photo: np.ndarray | None = None

    def open(self) -> None:
        import cv2

        self._i = 0
        self._rng = np.random.default_rng(7)
        w, h = self.size
        self._bg = self._rng.integers(60, 120, (h, w), dtype=np.uint8)
        photo_path = SAMPLES_DIR / "face_recognition" / "two_people.jpg"
        if self.faces and photo_path.is_file():
            img = cv2.imread(str(photo_path), cv2.IMREAD_GRAYSCALE)
            # photo height = frame height: faces of ~100-130 px, in reach of short-range BlazeFace
            s = h / img.shape[0]
            self._photo = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)

    def read(self):
        from emotion_edge.video.frames import Frame

        if self._i >= self.n_frames:
            return None
        w, h = self.size
        frame = self._bg.copy()
        if self._photo is not None:
            # pan a frame-sized window across the photo, like a slowly turning camera
            pw = self._photo.shape[1]
            x = int((pw - w) * (0.5 + 0.5 * np.sin(self._i / 25.0))) if pw > w else 0
            frame[:, : min(w, pw)] = self._photo[:, x : x + w]
        noise = self._rng.integers(-6, 7, frame.shape, dtype=np.int16)
        frame = np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        f = Frame(image=frame, index=self._i, timestamp=time.time())
        self._i += 1
        return f

    def close(self) -> None:
        pass


def _config(model: Path, overrides: dict):
    from emotion_edge.config import load_config

    base = {
        "classifier": {"model_path": str(model)},
        "source": {"loop": False},
        # one stats payload at shutdown covering the whole run
        "pipeline": {"realtime": False, "stats_interval_s": 86400.0, "state_interval_s": 86400.0},
        "output": {"mode": "stdout"},
    }
    for table, values in overrides.items():
        base.setdefault(table, {}).update(values)
    return load_config(None, base)


def _summarise(name: str, pipeline, wall: float, summary) -> dict:
    st = summary.stats or {}
    stages = st.get("stages_ms", {})
    return {
        "name": name,
        "frames_processed": summary.frames_processed,
        "wall_s": round(wall, 3),
        "fps": round(summary.frames_processed / wall, 2) if wall > 0 else None,
        "detector": pipeline.detector.name,
        "detect_every_n_final": pipeline.budget.n,
        "frames_detected": pipeline.counters.detected,
        "events": summary.events,
        "stages_ms": {s: stages.get(s) for s in STAGES if s in stages},
        "end_reason": summary.reason,
    }


def run_video(model: Path, max_frames: int, adaptive: bool, detector: str = "blazeface") -> dict:
    from emotion_edge.app import build_pipeline

    cfg = _config(
        model,
        {
            "source": {"kind": "video", "uri": str(SAMPLE_VIDEO)},
            "detector": {"kind": detector},
            "pipeline": {"adaptive": adaptive, "detect_every_n": 1},
        },
    )
    pipe = build_pipeline(cfg, output=NullOutput())
    t = time.perf_counter()
    summary = pipe.run(max_frames=max_frames)
    wall = time.perf_counter() - t
    name = f"video {SAMPLE_VIDEO.name}, " + (
        "adaptive budget" if adaptive else "detect every frame"
    )
    return _summarise(name, pipe, wall, summary)


def run_synthetic(model: Path, n_frames: int, faces: bool, detector: str = "blazeface") -> dict:
    from emotion_edge.classify.classifier import load_classifier
    from emotion_edge.detect.detector import make_detector
    from emotion_edge.pipeline import Pipeline
    from emotion_edge.video.capture import Capture

    cfg = _config(
        model,
        {
            "source": {"kind": "demo"},  # a file-like kind: the stream may end
            "detector": {"kind": detector},
            "pipeline": {"adaptive": False, "detect_every_n": 1},
        },
    )
    src = SyntheticSource(n_frames, faces=faces)
    pipe = Pipeline(
        cfg,
        Capture(lambda: src, cfg.source, realtime=False),
        make_detector(cfg.detector),
        load_classifier(cfg.classifier),
        NullOutput(),
    )
    t = time.perf_counter()
    summary = pipe.run(max_frames=n_frames)
    wall = time.perf_counter() - t
    name = "synthetic 640x480, " + (
        "two faces (window panning over two_people.jpg)" if faces else "no faces (noise)"
    )
    return _summarise(name, pipe, wall, summary)


# Runs the real CLI and, at interpreter exit, reports the process's own peak RSS (VmHWM).
# wait4()'s ru_maxrss is not usable: Linux carries the pre-exec high-water mark of the forked
# parent (here a benchmark process that may hold TensorFlow) into the child's figure.
_RSS_MARK = "EMOTION_EDGE_BENCH_VMHWM_KB="
_CLI_WRAPPER = f"""
import atexit, runpy, sys
def _report():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            sys.stderr.write('{_RSS_MARK}' + line.split()[1] + '\\n')
atexit.register(_report)
sys.argv[0] = 'emotion-edge'
runpy.run_module('emotion_edge.cli', run_name='__main__')
"""


def daemon_run(
    model: Path,
    max_frames: int,
    prefix: list[str] | None = None,
    python: str = sys.executable,
    env: dict | None = None,
    timeout: float = 600,
    extra_args: list[str] | None = None,
) -> dict:
    """`emotion-edge --dry-run` on the sample video as a child process: exit code, JSON lines
    by schema, wall time and peak RSS. `prefix` (e.g. qemu) wraps the interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "bench.toml"
        # realtime = false: read the file as fast as the pipeline takes frames
        cfg.write_text(
            "[pipeline]\nrealtime = false\nstats_interval_s = 86400.0\n[source]\nloop = false\n"
        )
        cmd = [
            *(prefix or []),
            python,
            "-c",
            _CLI_WRAPPER,
            "--config",
            str(cfg),
            "--dry-run",
            "--source",
            f"video:{SAMPLE_VIDEO}",
            "--model",
            str(model),
            "--max-frames",
            str(max_frames),
            "--log-level",
            "WARNING",
            *(extra_args or []),
        ]
        out_f, err_f = Path(tmp) / "out", Path(tmp) / "err"
        t = time.perf_counter()
        with open(out_f, "w") as out, open(err_f, "w") as err:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        wall = time.perf_counter() - t
        kinds: dict[str, int] = {}
        bad = 0
        last_stats = None
        for line in out_f.read_text().splitlines():
            try:
                payload = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            schema = str(payload.get("schema", "?"))
            kinds[schema] = kinds.get(schema, 0) + 1
            if "stats" in schema:
                last_stats = payload
        stderr = err_f.read_text()
        hwm = [ln for ln in stderr.splitlines() if ln.startswith(_RSS_MARK)]
        stderr = "\n".join(ln for ln in stderr.splitlines() if not ln.startswith(_RSS_MARK))
        result = {
            "exit_code": proc.returncode,
            "wall_s": round(wall, 2),
            "peak_rss_mb": round(int(hwm[-1][len(_RSS_MARK) :]) / 1024.0, 1) if hwm else None,
            "lines_by_schema": kinds,
            "non_json_lines": bad,
            "frames_processed": (last_stats or {}).get("frames", {}).get("processed"),
            "stderr_tail": stderr[-800:],
        }
    if result["exit_code"] != 0:
        log(f"daemon exited {result['exit_code']}: {result['stderr_tail']}")
    return result


def run_all(model: Path, quick: bool) -> dict:
    out: dict = {"runs": []}
    if not SAMPLE_VIDEO.is_file():
        out["video_skipped"] = f"sample video absent: {SAMPLE_VIDEO}"
    n_video = 120 if quick else 275
    n_syn = 60 if quick else 300
    plan = []
    if SAMPLE_VIDEO.is_file():
        plan.append(lambda: run_video(model, n_video, adaptive=False))
        if not quick:
            plan.append(lambda: run_video(model, n_video, adaptive=True))
    plan.append(lambda: run_synthetic(model, n_syn, faces=True))
    if not quick:
        plan.append(lambda: run_synthetic(model, n_syn, faces=False))
    for step in plan:
        r = step()
        log(f"pipeline {r['name']}: {r['fps']} fps over {r['frames_processed']} frames")
        out["runs"].append(r)
    if SAMPLE_VIDEO.is_file():
        d = daemon_run(model, n_video)
        log(f"daemon: exit {d['exit_code']}, peak RSS {d['peak_rss_mb']} MB")
        out["daemon"] = d
    return out
