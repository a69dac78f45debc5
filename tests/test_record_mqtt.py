"""emotion-edge-record over MQTT against a real mosquitto: a persistent QoS 1 session with
acknowledgements after commit (nothing lost across broker and recorder restarts, duplicates
stored once), bad input counted, and the whole chain end to end with the real daemon on the
sample video, markers from emotion-edge-mark and the report's CSV."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

pytest.importorskip("sqlalchemy", reason="the recorder needs the [record] extra")

from emotion_edge.preprocess import FER2013_LABELS  # noqa: E402
from emotion_edge.track.events import EmotionEvent, FaceObservation  # noqa: E402
from emotion_edge.track.timeline import timeline_payload  # noqa: E402
from emotion_edge_record.payloads import marker_payload  # noqa: E402
from mqtt_broker import free_port  # noqa: E402

BIN = Path(sys.executable).parent
PREFIX = "emotion-edge"


def exe(name: str) -> list[str]:
    p = BIN / name
    if p.is_file():
        return [str(p)]
    fn = {
        "emotion-edge-record": "record_main",
        "emotion-edge-report": "report_main",
        "emotion-edge-mark": "mark_main",
    }[name]
    return [
        sys.executable,
        "-c",
        f"import sys; from emotion_edge_record.cli import {fn}; sys.exit({fn}())",
    ]


class RecorderProc:
    """emotion-edge-record as a subprocess, restartable with the same client id."""

    def __init__(self, tmp: Path, broker, db: str, *extra: str, client_id: str = "rec-test"):
        self.tmp, self.broker, self.db, self.extra = tmp, broker, db, extra
        self.client_id = client_id
        self.proc: subprocess.Popen | None = None
        self.runs = 0
        self.stats: list[dict] = []

    def start(self, timeout: float = 30) -> RecorderProc:
        self.runs += 1
        ready = self.tmp / f"{self.client_id}-ready-{self.runs}"
        self.stats_path = self.tmp / f"{self.client_id}-stats-{self.runs}.json"
        self.log = open(self.tmp / f"{self.client_id}-{self.runs}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                *exe("emotion-edge-record"),
                "--db",
                self.db,
                "--mqtt-host",
                self.broker.host,
                "--mqtt-port",
                str(self.broker.port),
                "--client-id",
                self.client_id,
                "--ready-file",
                str(ready),
                "--stats-json",
                str(self.stats_path),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        deadline = time.monotonic() + timeout
        while not ready.exists():
            assert self.proc.poll() is None, self.log_text()
            assert time.monotonic() < deadline, "recorder not subscribed\n" + self.log_text()
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(60) == 0, self.log_text()
        self.log.close()
        s = json.loads(self.stats_path.read_text())
        self.stats.append(s)
        return s

    def log_text(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return (self.tmp / f"{self.client_id}-{self.runs}.log").read_text()


class Publisher:
    """Simulated devices: a paho client publishing QoS 1 and waiting for each PUBACK."""

    def __init__(self, broker):
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"sim-{free_port()}")
        self.c.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self.c.connect(broker.host, broker.port, keepalive=5)
        self.c.loop_start()
        self.pending: list = []

    def pub(self, topic: str, payload, retain: bool = False) -> None:
        data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
        self.pending.append(self.c.publish(topic, data, qos=1, retain=retain))

    def flush(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        for info in self.pending:
            while not info.is_published():
                assert time.monotonic() < deadline, "broker did not acknowledge"
                time.sleep(0.02)
        self.pending = []

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def make_event(dev: str, i: int, ts: float) -> dict:
    return EmotionEvent(
        kind="appeared",
        device_id=dev,
        face_id=i + 1,
        emotion="sad",
        confidence=0.6,
        top=[{"emotion": "sad", "confidence": 0.6}],
        box=(1.0, 1.0, 30.0, 30.0),
        frame_index=i,
        frame_size=(320, 240),
        captured_ts=ts,
        model_version="sim",
    ).to_payload(ts)


def make_sample(dev: str, i: int, ts: float, faces: int = 2) -> dict:
    import numpy as np

    p = np.full(7, 1 / 7)
    obs = [FaceObservation(f + 1, (1.0, 1.0, 30.0, 30.0), 3, p) for f in range(faces)]
    return timeline_payload(dev, "sim", FER2013_LABELS, obs, i, (320, 240), ts, ts)


def db_ids(db: Path, table: str, key: str) -> set[str]:
    if not db.exists():
        return set()
    con = sqlite3.connect(db, timeout=10)
    try:
        return {r[0] for r in con.execute(f"SELECT {key} FROM {table}")}
    except sqlite3.OperationalError:
        return set()
    finally:
        con.close()


def wait_until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_recorder_loses_nothing_across_broker_and_recorder_restarts(mqtt_broker, tmp_path):
    db = tmp_path / "fleet.sqlite"
    rec = RecorderProc(tmp_path, mqtt_broker, str(db)).start()
    pub = Publisher(mqtt_broker)
    devices = [f"sim-{i}" for i in range(3)]
    events, samples, marks = set(), set(), set()
    t = time.time()

    def burst(n: int) -> None:
        for i in range(n):
            for d in devices:
                e, s = make_event(d, i, t + i * 0.01), make_sample(d, i, t + i * 0.01)
                events.add(e["event_id"])
                samples.add(s["sample_id"])
                pub.pub(f"{PREFIX}/{d}/events", e)
                pub.pub(f"{PREFIX}/{d}/timeline", s)
                if i % 10 == 0:
                    pub.pub(f"{PREFIX}/{d}/events", e)  # a device re-sending after a reconnect
        pub.flush()

    for d in devices:
        pub.pub(f"{PREFIX}/{d}/availability", "online", retain=True)
        m = marker_payload(d, "session", "start", f"S-{d}", t - 1, group="g")
        marks.add(m["marker_id"])
        pub.pub(f"{PREFIX}/{d}/markers", m)
    # bad input: counted, never stored, never a crash
    pub.pub(f"{PREFIX}/sim-0/events", b"{not json")
    pub.pub(f"{PREFIX}/sim-0/events", json.dumps({"schema": "emotion-edge/event/2"}))
    pub.pub(f"{PREFIX}/sim-0/timeline", b"x" * 300_000)
    pub.pub(f"{PREFIX}/sim-1/events", make_event("sim-2", 0, t))  # device mismatch
    pub.pub(f"{PREFIX}/sim-1/events", make_event("sim-1", 0, t + 7200))  # clock skew
    burst(40)

    mqtt_broker.restart()  # clean stop: the broker keeps the recorder's session and queue
    time.sleep(0.3)
    wait_until(pub.c.is_connected, 15, "the devices to reconnect")
    burst(40)
    wait_until(lambda: len(db_ids(db, "events", "event_id")) > 0, 30, "first events")

    rec.kill()  # SIGKILL: whatever was committed but not acknowledged comes again
    burst(60)  # queued by the broker for the recorder's session meanwhile
    rec.start()
    burst(20)
    wait_until(
        lambda: (
            db_ids(db, "events", "event_id") == events
            and db_ids(db, "samples", "sample_id") == samples
        ),
        60,
        "every event and sample",
    )
    s = rec.stop()
    pub.close()
    assert db_ids(db, "markers", "marker_id") == marks
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM timeline_faces").fetchone()[0] == 2 * len(samples)
    assert con.execute("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events").fetchone() == (
        len(events),
        len(events),
    )
    status = con.execute("SELECT device_id, status FROM availability ORDER BY id").fetchall()
    assert sorted(status) == [(d, "online") for d in devices]  # retained re-delivery: once
    # the bad messages of the first run were counted there (a killed run leaves no stats)
    assert s["record"]["duplicates"].get("event", 0) >= 1
    first_log = (tmp_path / "rec-test-1.log").read_text()
    for reason in ("malformed", "unknown_version", "too_large", "topic_mismatch", "clock_skew"):
        assert reason in first_log, reason
    assert "Traceback" not in first_log + rec.log_text()


# -- end to end with the real daemon ----------------------------------------------------------


def daemon_cmd() -> list[str]:
    p = BIN / "emotion-edge"
    return [str(p)] if p.is_file() else [sys.executable, "-m", "emotion_edge.cli"]


class Watch:
    """An independent persistent subscriber: what the daemon really published."""

    def __init__(self, broker, topic: str):
        self.msgs: dict[str, list[str]] = {}
        self.lock = threading.Lock()
        self.c = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=f"watch-{free_port()}", clean_session=False
        )
        self.c.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        ok = threading.Event()
        self.c.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.c.on_subscribe = lambda *a: ok.set()
        self.c.on_message = self._on
        self.c.connect(broker.host, broker.port, keepalive=5)
        self.c.loop_start()
        assert ok.wait(5)

    def _on(self, c, u, msg):
        with self.lock:
            self.msgs.setdefault(msg.topic.rsplit("/", 1)[1], []).append(msg.payload.decode())

    def on(self, name: str) -> list[str]:
        with self.lock:
            return list(self.msgs.get(name, []))

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


@pytest.mark.slow
def test_daemon_to_recorder_to_report_end_to_end(
    mqtt_broker, tmp_path, sample_video, emotion_model
):
    dev = "e2e-rec"
    cfg = tmp_path / "daemon.toml"
    cfg.write_text(f"""
[device]
id = "{dev}"
[source]
kind = "video"
uri = "{sample_video}"
loop = true
[classifier]
model_path = "{emotion_model}"
num_threads = 1
[pipeline]
stats_interval_s = 1.0
[output]
timeline_interval_s = 0.25
[mqtt]
enabled = true
host = "{mqtt_broker.host}"
port = {mqtt_broker.port}
spool_dir = "{tmp_path / "spool"}"
reconnect_min_s = 0.2
reconnect_max_s = 1.0
""")
    db = tmp_path / "e2e.sqlite"
    rec = RecorderProc(tmp_path, mqtt_broker, str(db), "--device", dev).start()
    watch = Watch(mqtt_broker, f"{PREFIX}/{dev}/#")
    mark = [
        *exe("emotion-edge-mark"),
        "--mqtt-host",
        mqtt_broker.host,
        "--mqtt-port",
        str(mqtt_broker.port),
        "--device",
        dev,
    ]

    def marker(*args: str) -> None:
        p = subprocess.run([*mark, *args], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr

    marker("session-start", "S-e2e", "--participant", "P1", "--group", "pilot")
    marker("start", "clip-A", "--session", "S-e2e", "--tag", "first")
    daemon = subprocess.Popen(
        [*daemon_cmd(), "--config", str(cfg), "--duration", "16"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: len(watch.on("timeline")) >= 4, 60, "the daemon's first samples")
        mqtt_broker.restart()  # the broker goes away mid-run and comes back
        time.sleep(3)
        switch = str(time.time())  # one instant: no gap between the stimuli
        marker("end", "clip-A", "--at", switch)
        marker("start", "clip-B", "--session", "S-e2e", "--at", switch)
        rec.kill()  # the recorder dies mid-run and comes back
        time.sleep(1.5)
        rec.start()
        _, err = daemon.communicate(timeout=90)
        assert daemon.returncode == 0, err
    finally:
        if daemon.poll() is None:
            daemon.kill()
    marker("end", "clip-B")
    marker("session-end", "S-e2e")

    # `stopped` comes after the daemon's final stats: the last stats seen are the final ones
    wait_until(lambda: "stopped" in watch.on("availability"), 30, "the daemon's goodbye")
    stats = json.loads(watch.on("stats")[-1])
    produced = stats["events"]
    assert sum(produced.values()) > 0
    samples = {}
    for text in watch.on("timeline"):
        p = json.loads(text)
        samples[p["sample_id"]] = p
    n_events = sum(produced.values())
    wait_until(
        lambda: (
            len(db_ids(db, "events", "event_id")) == n_events
            and db_ids(db, "samples", "sample_id") >= set(samples)
            and len(db_ids(db, "markers", "marker_id")) == 6
        ),
        60,
        "the recorder to catch up",
    )
    rec.stop()
    watch.close()
    con = sqlite3.connect(db)
    by_kind = dict(con.execute("SELECT kind, COUNT(*) FROM events GROUP BY kind"))
    assert by_kind == {
        k: v for k, v in produced.items() if v
    }  # the daemon's own counts, none lost, none twice
    assert con.execute("SELECT COUNT(DISTINCT event_id) FROM events").fetchone()[0] == n_events
    assert "Traceback" not in rec.log_text()

    out = tmp_path / "report"
    p = subprocess.run(
        [*exe("emotion-edge-report"), str(db), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    with open(out / "timeline.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    stored = db_ids(db, "samples", "sample_id")
    assert len(rows) == sum(len(samples[s]["faces"]) for s in stored if s in samples) > 0
    assert stored == set(samples)  # nothing in the database the daemon did not publish
    for lab in FER2013_LABELS:
        assert all(r[f"p_{lab}"] for r in rows)
    assert all(r["stimulus"] in ("clip-A", "clip-B") for r in rows)
    assert {r["stimulus"] for r in rows} == {"clip-A", "clip-B"}  # split in two
    assert all(r["session"] == "S-e2e" and r["group"] == "pilot" for r in rows)
    assert (out / "report.html").stat().st_size > 10_000
    assert os.path.getsize(out / "stimuli_profile.png") > 1000
