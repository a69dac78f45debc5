"""The real `emotion-edge` CLI as a subprocess: sample video -> real mosquitto -> subscriber."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from emotion_edge.classify.classifier import DEFAULT_MODEL
from emotion_edge.classify.model_meta import load_metadata
from emotion_edge.tools.payload_schema import validate
from mqtt_broker import free_port

DEVICE = "e2e-kiosk"
PREFIX = "emotion-edge"


def cli_cmd() -> list[str]:
    script = Path(sys.executable).with_name("emotion-edge")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "emotion_edge.cli"]


def run_cli(*args: str, timeout: float = 60, env: dict | None = None):
    return subprocess.run(
        [*cli_cmd(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR " in f" {line} "]


def assert_one_line_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    errors = error_lines(proc.stderr)
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


class Recorder:
    """A real paho subscriber keeping every message under the device's topics."""

    def __init__(self, host: str, port: int, topic: str, persistent: bool = False):
        self.messages: list[tuple[str, str, bool]] = []
        self._cond = threading.Condition()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=f"e2e-sub-{free_port()}",
            clean_session=not persistent,
        )
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.connect(host, port, keepalive=10)
        self.client.loop_start()
        assert subscribed.wait(5), "subscriber got no SUBACK"

    def _on_message(self, client, userdata, msg):
        with self._cond:
            self.messages.append((msg.topic, msg.payload.decode(), msg.retain))
            self._cond.notify_all()

    def on(self, name: str) -> list[str]:
        with self._cond:
            return [p for t, p, _ in self.messages if t == f"{PREFIX}/{DEVICE}/{name}"]

    def wait(self, pred, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(pred, timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def write_config(path: Path, broker, video: Path, model: Path, spool: Path) -> Path:
    path.write_text(f"""
[device]
id = "{DEVICE}"

[source]
kind = "video"
uri = "{video}"
loop = true

[classifier]
model_path = "{model}"
num_threads = 1

[pipeline]
stats_interval_s = 1.0
state_interval_s = 1.0

[mqtt]
enabled = true
host = "{broker.host}"
port = {broker.port}
spool_dir = "{spool}"
reconnect_min_s = 0.2
reconnect_max_s = 1.0
""")
    return path


@pytest.fixture
def notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    received: list[str] = []
    stop = threading.Event()

    def pump():
        while not stop.is_set():
            try:
                received.append(sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    yield path, received
    stop.set()
    t.join(2)
    sock.close()


@pytest.mark.slow
def test_daemon_publishes_schema_valid_events_and_stops_cleanly(
    mqtt_broker, sample_video, emotion_model, tmp_path, notify_socket
):
    cfg = write_config(
        tmp_path / "config.toml", mqtt_broker, sample_video, emotion_model, tmp_path / "spool"
    )
    sock_path, notes = notify_socket
    sub = Recorder(mqtt_broker.host, mqtt_broker.port, f"{PREFIX}/{DEVICE}/#")
    env = {**os.environ, "NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [*cli_cmd(), "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        ok = sub.wait(
            lambda: (
                any('"appeared"' in p for p in sub.on("events"))
                and len(sub.on("stats")) >= 2
                and sub.on("state")
            ),
            timeout=60,
        )
        assert ok, f"no events/stats in time; stderr:\n{proc.stderr.read() if proc.poll() else ''}"
        assert "online" in sub.on("availability")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert out == ""  # MQTT mode writes nothing to stdout
    assert sub.wait(lambda: "stopped" in sub.on("availability"), timeout=10)
    sub.close()

    version = load_metadata(emotion_model).version
    events = [json.loads(p) for p in sub.on("events")]
    for e in events:
        validate(e, "event")
        assert e["device_id"] == DEVICE and e["model_version"] == version
        assert "snapshot_jpeg_b64" not in e
    assert len({e["event_id"] for e in events}) == len(events)
    for p in sub.on("state"):
        validate(json.loads(p), "state")
    stats = [json.loads(p) for p in sub.on("stats")]
    for s in stats:
        validate(s, "stats")
    assert stats[-1]["mqtt"]["connected"] is True or stats[-1]["mqtt"]["events_acked"] > 0
    assert stats[-1]["frames"]["processed"] > 0

    # a newcomer sees the retained `stopped`, and the last state
    late = Recorder(mqtt_broker.host, mqtt_broker.port, f"{PREFIX}/{DEVICE}/#")
    assert late.wait(lambda: late.on("availability") and late.on("state"), timeout=5)
    assert late.on("availability") == ["stopped"]
    late.close()

    # systemd: READY first, watchdog pings while frames flowed, STOPPING at the end
    time.sleep(0.3)
    assert notes and notes[0].startswith("READY=1")
    assert "WATCHDOG=1" in notes
    assert "STOPPING=1" in notes


def test_stdout_dry_run_with_sample_video(sample_video, emotion_model):
    proc = run_cli(
        "--source",
        f"video:{sample_video}",
        "--model",
        str(emotion_model),
        "--dry-run",
        "--max-frames",
        "40",
        "--device-id",
        DEVICE,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines
    for p in lines:
        validate(p)
    assert any(p["schema"] == "emotion-edge/event/1" for p in lines)
    assert lines[-1]["schema"] == "emotion-edge/stats/1"
    assert lines[-1]["frames"]["processed"] == 40


def test_default_demo_runs_without_camera_or_broker(emotion_model):
    pytest.importorskip("skimage", reason="the demo source needs scikit-image ([demo] extra)")
    args = ["--max-frames", "15"]
    if not DEFAULT_MODEL.is_file():  # until the trained model ships, the default is absent
        proc = run_cli(*args)
        assert_one_line_error(proc, "emotion model not found", "--model")
        args += ["--model", str(emotion_model)]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "--source opencv:0" in proc.stderr and "--mqtt-host" in proc.stderr  # the hints
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    for p in lines:
        validate(p)
    assert lines[-1]["frames"]["processed"] == 15
    assert lines[-1]["source"]["kind"] == "demo"


def test_corrupt_model_is_one_line_error(emotion_model, tmp_path, sample_video):
    model = tmp_path / "emotion_int8.tflite"
    shutil.copy(emotion_model, model)
    shutil.copy(emotion_model.with_suffix(".json"), model.with_suffix(".json"))
    data = bytearray(model.read_bytes())
    data[100] ^= 0x55
    model.write_bytes(bytes(data))
    proc = run_cli("--model", str(model), "--source", f"video:{sample_video}", "--dry-run")
    assert_one_line_error(proc, "sha256", str(model))
    assert proc.stdout == ""


def test_bad_config_is_one_line_error(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[pipeline]\nbudget_ms = -1\n")
    assert_one_line_error(run_cli("--config", str(cfg)), "pipeline.budget_ms", "> 0")
    cfg.write_text("[pipeline]\nbudget_ms = 10\n[sorce]\nkind = 'video'\n")
    assert_one_line_error(run_cli("--config", str(cfg)), "sorce", "did you mean 'source'")
    cfg.write_text("[pipeline\n")
    assert_one_line_error(run_cli("--config", str(cfg)), "invalid TOML")
    assert_one_line_error(run_cli("--config", str(tmp_path / "missing.toml")), "not found")


def test_unknown_source_is_one_line_error(tmp_path, emotion_model):
    assert_one_line_error(run_cli("--source", "webcam"), "unknown source")
    cfg = tmp_path / "c.toml"
    cfg.write_text("[source]\nkind = 'webcam'\n")
    assert_one_line_error(run_cli("--config", str(cfg)), "source.kind")
    proc = run_cli(
        "--source",
        f"video:{tmp_path / 'missing.mp4'}",
        "--model",
        str(emotion_model),
        "--dry-run",
    )
    assert_one_line_error(proc, "missing.mp4")


def test_help_and_print_config():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for flag in (
        "--config",
        "--source",
        "--model",
        "--mqtt-host",
        "--dry-run",
        "--print-config",
        "--max-frames",
        "--duration",
        "--log-level",
        "picamera2",
    ):
        assert flag in proc.stdout
    proc = run_cli("--print-config", "--budget-ms", "75")
    assert proc.returncode == 0 and "budget_ms = 75.0" in proc.stdout


@pytest.mark.slow
def test_events_made_while_broker_is_down_are_delivered(
    mqtt_broker, sample_video, emotion_model, tmp_path
):
    """Broker down when the daemon starts and for a while after: events wait in the spool and
    arrive once it is up. Every event the daemon counted is received (distinct ids)."""
    cfg = write_config(
        tmp_path / "config.toml", mqtt_broker, sample_video, emotion_model, tmp_path / "spool"
    )
    events_topic = f"{PREFIX}/{DEVICE}/events"
    # a persistent QoS 1 session: the broker keeps what arrives while we are reconnecting
    sub = Recorder(mqtt_broker.host, mqtt_broker.port, events_topic, persistent=True)
    mqtt_broker.stop()
    proc = subprocess.Popen(
        [*cli_cmd(), "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(8)  # start-up, then the video's first faces appear within a second
        assert proc.poll() is None, proc.communicate()[1]
        broker_back = time.time()
        mqtt_broker.start()
        assert sub.wait(lambda: len(sub.on("events")) >= 1, timeout=30), "nothing delivered"
        time.sleep(2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    # the retained final stats say how many events the daemon produced
    stats_sub = Recorder(mqtt_broker.host, mqtt_broker.port, f"{PREFIX}/{DEVICE}/stats")
    assert stats_sub.wait(lambda: stats_sub.on("stats"), timeout=5)
    final = json.loads(stats_sub.on("stats")[-1])
    stats_sub.close()
    produced = sum(final["events"].values())
    assert final["mqtt"]["spool_dropped"] == 0 and final["mqtt"]["spool_depth"] == 0
    assert sub.wait(
        lambda: len({json.loads(p)["event_id"] for p in sub.on("events")}) >= produced, timeout=10
    )
    sub.close()
    received = [json.loads(p) for p in sub.on("events")]
    ids = {e["event_id"] for e in received}
    assert produced >= 1 and len(ids) == produced
    # some of them were made while the broker was down: delivered from the spool
    assert min(e["published_ts"] for e in received) < broker_back
