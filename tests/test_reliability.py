"""Real faults against a real mosquitto: a full and freed disk (a small tmpfs the test fills
and frees; needs root), a broker ACL that refuses the events topic, two daemons with one
device id, a damaged spool file, a dead sender thread. Issue 22: nothing is lost without being
counted, and `created + carried over = delivered + rejected + dropped + queued` always holds.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import cv2
import pytest
from emotion_edge.publish.mqtt import MqttPublisher
from emotion_edge.publish.spool import EventSpool
from mqtt_broker import Broker
from test_daemon_e2e import Recorder as _Recorder
from test_daemon_e2e import cli_cmd
from test_mqtt import DEVICE, Subscriber, make_cfg, make_event

MQTT_LOG = "emotion_edge.publish.mqtt"
LEDGER_RE = re.compile(
    r"MQTT events: (\d+) created \+ (\d+) from an earlier run = (\d+) delivered \+ "
    r"(\d+) rejected by the broker \+ (\d+) dropped \+ (\d+) queued"
)


class Recorder(_Recorder):
    """test_daemon_e2e's subscriber, for this module's device id."""

    def on(self, name: str) -> list[str]:
        with self._cond:
            return [p for t, p, _ in self.messages if t == f"emotion-edge/{DEVICE}/{name}"]


# -- a small disk -----------------------------------------------------------------------------


class SmallDisk:
    """A tmpfs of a few MB: `fill()` writes a file until ENOSPC, `free()` removes it."""

    def __init__(self, path: Path):
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 20, 65536, 4096, 512, 1):  # down to the last byte of room
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
        finally:
            os.close(fd)
        assert shutil.disk_usage(self.path).free < 8192

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs a tmpfs mount, which needs root")
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield SmallDisk(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def balanced(st: dict) -> bool:
    """The ledger of one stats() snapshot."""
    left = st["events_created"] + st["events_carried_over"]
    right = (
        st["events_acked"]
        + st["events_rejected"]
        + st["events_dropped"]
        + st["spool_depth"]
        + st["memory_queue"]
    )
    return left == right


class LedgerWatch:
    """Samples a publisher's stats() in a thread and keeps every unbalanced snapshot."""

    def __init__(self, pub: MqttPublisher):
        self.pub, self.bad, self.samples = pub, [], 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            st = self.pub.stats()
            self.samples += 1
            if not balanced(st):
                self.bad.append(st)
            time.sleep(0.005)

    def close(self):
        self._stop.set()
        self._t.join(2)


def wait_until(pred, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


@pytest.fixture
def publishers():
    made: list[MqttPublisher] = []
    yield made
    for p in made:
        p.stop(timeout=1.0)


# -- the spool on a full disk ------------------------------------------------------------------


def test_spool_counts_stay_exact_when_the_disk_is_full(small_disk):
    spool = EventSpool(small_disk.path / "spool.sqlite3", max_events=100000)
    for i in range(20):
        spool.put(f"e{i}", "x" * 200)
    small_disk.fill()
    failures = []
    for i in range(20, 60):
        try:
            spool.put(f"e{i}", "x" * 2000)
        except sqlite3.Error as exc:
            failures.append(str(exc))
    assert failures, "a full disk did not fail a single write"
    # the real error, not "cannot rollback - no transaction is active"
    assert all("full" in f for f in failures), set(failures)
    rows = sqlite3.connect(str(spool.path)).execute("SELECT COUNT(*) FROM events").fetchone()[0]
    assert spool.depth() == rows  # counted after COMMIT: never ahead of the file
    with pytest.raises(sqlite3.Error, match="full"):
        spool.ack_many([f"e{i}" for i in range(5)])  # a DELETE needs room in the WAL too
    assert spool.depth() == rows
    small_disk.free()
    assert spool.ack_many([f"e{i}" for i in range(5)]) == [f"e{i}" for i in range(5)]
    assert spool.depth() == rows - 5
    spool.close()


def test_full_disk_never_stops_delivery_and_the_ledger_balances(
    small_disk, tmp_path, publishers, caplog
):
    """Issue 22 items 1-3: broker down, disk filled, broker back (PUBACKs whose spool DELETE
    fails), events made while the disk is full and the broker up, then the disk freed: every
    event is delivered without a restart, and the ledger balances at every moment."""
    caplog.set_level(logging.INFO, logger=MQTT_LOG)
    broker = Broker(tmp_path).start()
    try:
        topic = f"emotion-edge/{DEVICE}/events"
        sub = Subscriber(broker, topic, persistent=True)
        broker.stop()  # clean stop: the persistent session is saved
        cfg = make_cfg(broker, tmp_path, spool_dir=str(small_disk.path / "spool"))
        pub = MqttPublisher(cfg, DEVICE, model_version="test")
        publishers.append(pub)
        pub.start()
        watch = LedgerWatch(pub)
        made = []

        def produce(n):
            for _ in range(n):
                ev = make_event(len(made))
                pub.publish_event(ev)
                made.append(ev["event_id"])
                time.sleep(0.005)

        produce(20)  # broker down: spooled
        assert pub.stats()["spool_depth"] == 20
        small_disk.fill()
        produce(30)  # broker down, disk full: held in memory
        st = pub.stats()
        assert st["memory_queue"] >= 25 and st["storage_error"], st
        assert str(small_disk.path / "spool") in st["storage_error"], st
        assert "full" in st["storage_error"] and not st["connected"]
        broker.start()  # PUBACKs arrive; deleting the delivered rows fails on the full disk
        assert wait_until(lambda: pub.stats()["events_acked"] >= 50, 20), pub.stats()
        assert pub.healthy() and pub._sender.is_alive()
        # delivered, so not queued, though their rows are still on the full disk
        rows = sqlite3.connect(str(pub.spool.path)).execute("SELECT COUNT(*) FROM events")
        assert rows.fetchone()[0] == 20 and pub.stats()["spool_depth"] == 0
        produce(30)  # broker up, disk still full: sent from memory, not lost
        assert wait_until(lambda: pub.stats()["events_acked"] >= 80, 20), pub.stats()
        st = pub.stats()
        assert st["events_dropped"] == 0 and st["storage_error"]
        small_disk.free()
        produce(30)  # the disk works again: spooled and delivered, no restart
        assert pub.flush(20), pub.stats()
        assert wait_until(lambda: not pub.stats()["storage_error"], 15), pub.stats()
        st = pub.stats()
        assert st["events_acked"] == len(made) == 110 and st["spool_depth"] == 0
        assert st["memory_queue"] == 0 and st["events_dropped"] == 0 and st["healthy"]
        assert "full" not in st["last_error"]
        assert sub.wait_for(lambda s: {e["event_id"] for e in s.events(topic)} >= set(made), 15)
        watch.close()
        assert watch.samples > 100 and not watch.bad, watch.bad[:3]
        pub.stop(timeout=2.0)
        assert (
            sqlite3.connect(str(pub.spool.path))
            .execute("SELECT COUNT(*) FROM events")
            .fetchone()[0]
            == 0
        )  # the delivered rows were deleted once the disk had room
        storage_errors = [
            r
            for r in caplog.records
            if r.levelno == logging.ERROR and "event spool" in r.getMessage()
        ]
        assert len(storage_errors) == 1, [r.getMessage() for r in storage_errors]
        assert str(pub.spool.path) in storage_errors[0].getMessage()
        assert "SQLITE_FULL" in storage_errors[0].getMessage()
        assert "works again" in caplog.text
        sub.close()
    finally:
        broker.stop()


def test_memory_queue_overflow_is_counted_and_logged_once_a_minute(
    small_disk, tmp_path, publishers, caplog
):
    caplog.set_level(logging.WARNING, logger=MQTT_LOG)
    broker = Broker(tmp_path)  # never started: nothing is delivered
    cfg = make_cfg(broker, tmp_path, spool_dir=str(small_disk.path / "s"), memory_queue_events=5)
    pub = MqttPublisher(cfg, DEVICE)
    publishers.append(pub)
    pub.start()
    small_disk.fill()
    for i in range(40):
        pub.publish_event(make_event(i))
    st = pub.stats()
    assert st["memory_queue"] == 5 and st["events_dropped"] == 35 and balanced(st), st
    drops = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drops) == 1, [r.getMessage() for r in drops]  # not one per event
    assert "memory queue full" in drops[0].getMessage()
    pub.stop(timeout=1.0)  # the 5 in memory cannot be written either: lost, and counted
    st = pub.stats()
    assert st["events_dropped"] == 40 and st["memory_queue"] == 0 and balanced(st), st
    summary = [r.getMessage() for r in caplog.records if "since the last report" in r.getMessage()]
    assert summary and "34 event(s) dropped" in summary[0], summary
    assert "could not be written" in caplog.text and "are lost" in caplog.text


@pytest.mark.slow
def test_daemon_on_a_full_disk_delivers_everything_it_counts(
    small_disk, tmp_path, mqtt_broker, sample_video, emotion_model
):
    """The real daemon, its spool on a small disk: broker down, disk filled, broker back,
    disk freed. The final ledger line matches the ids a persistent QoS 1 subscriber got."""
    cfg = write_config(
        tmp_path / "c.toml",
        mqtt_broker,
        spool=small_disk.path / "spool",
        source=f'kind = "video"\nuri = "{sample_video}"\nloop = true',
        model=emotion_model,
    )
    topic = f"emotion-edge/{DEVICE}/events"
    sub = Recorder(mqtt_broker.host, mqtt_broker.port, topic, persistent=True)
    mqtt_broker.stop()
    proc = subprocess.Popen(
        [*cli_cmd(), "--config", str(cfg)],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(10)  # events go to the spool (broker down)
        assert proc.poll() is None
        small_disk.fill()
        time.sleep(10)  # events wait in memory (disk full)
        mqtt_broker.start()
        time.sleep(8)  # delivered; their spool DELETEs fail
        small_disk.free()
        time.sleep(8)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    m = LEDGER_RE.search(err)
    assert m, err[-3000:]
    created, carried, delivered, rejected, dropped, queued = map(int, m.groups())
    assert created + carried == delivered + rejected + dropped + queued
    assert created >= 3 and dropped == rejected == queued == 0, m.group(0)
    assert sub.wait(
        lambda: len({json.loads(p)["event_id"] for p in sub.on("events")}) >= delivered, 10
    )
    ids = {json.loads(p)["event_id"] for p in sub.on("events")}
    assert len(ids) == delivered == created
    errors = [line for line in err.splitlines() if " ERROR " in line and "event spool" in line]
    assert len(errors) == 1 and "SQLITE_FULL" in errors[0], errors
    stats = Recorder(mqtt_broker.host, mqtt_broker.port, f"emotion-edge/{DEVICE}/stats")
    assert stats.wait(lambda: stats.on("stats"), 5)
    final = json.loads(stats.on("stats")[-1])
    assert sum(final["events"].values()) == created and balanced(final["mqtt"])
    stats.close()
    sub.close()


# -- a broker that refuses the events topic -----------------------------------------------------

DENY_EVENTS = f"topic readwrite #\ntopic deny emotion-edge/{DEVICE}/events\n"


@pytest.mark.parametrize("mqtt_broker", [{"acl": DENY_EVENTS}], indirect=True)
def test_events_the_broker_refuses_are_rejected_not_acked(
    mqtt_broker, tmp_path, publishers, caplog
):
    caplog.set_level(logging.WARNING, logger=MQTT_LOG)
    sub = Subscriber(mqtt_broker)
    pub = MqttPublisher(make_cfg(mqtt_broker, tmp_path), DEVICE)
    publishers.append(pub)
    pub.start()
    assert pub.wait_connected(5)
    for i in range(11):
        pub.publish_event(make_event(i))
    assert pub.flush(10), pub.stats()
    st = pub.stats()
    assert st["events_rejected"] == 11 and st["events_acked"] == 0, st
    assert st["spool_depth"] == 0 and balanced(st)
    assert "Not authorized" in st["last_error"] and st["protocol"] == "5"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors
    assert f"emotion-edge/{DEVICE}/events" in errors[0] and "Not authorized" in errors[0]
    time.sleep(0.3)
    assert not sub.payloads(pub.topic("events"))  # nothing arrived, and nothing was claimed
    pub.stop(timeout=1.0)
    assert "10 event(s) refused by the broker" in caplog.text  # the rest, summarized
    sub.close()


@pytest.mark.parametrize("mqtt_broker", [{"acl": DENY_EVENTS}], indirect=True)
def test_mqtt_311_cannot_tell_a_refused_event(mqtt_broker, tmp_path, publishers):
    """The documented blind spot of protocol = "3.1.1": the broker acknowledges the denied
    publish, so the event counts as delivered."""
    pub = MqttPublisher(make_cfg(mqtt_broker, tmp_path, protocol="3.1.1"), DEVICE)
    publishers.append(pub)
    pub.start()
    assert pub.wait_connected(5)
    for i in range(3):
        pub.publish_event(make_event(i))
    assert pub.flush(5)
    st = pub.stats()
    assert st["events_acked"] == 3 and st["events_rejected"] == 0 and st["protocol"] == "3.1.1"


# -- two devices with one device id -------------------------------------------------------------


def write_config(path, broker, spool, source, model=None, device=DEVICE, extra="") -> Path:
    model_line = f'model_path = "{model}"\n' if model else ""
    path.write_text(f"""
[device]
id = "{device}"

[source]
{source}

[classifier]
{model_line}num_threads = 1

[detector]
num_threads = 1

[pipeline]
stats_interval_s = 1.0
state_interval_s = 1.0

[mqtt]
enabled = true
host = "{broker.host}"
port = {broker.port}
spool_dir = "{spool}"
reconnect_min_s = 0.1
reconnect_max_s = 0.5
{extra}
""")
    return path


@pytest.mark.slow
def test_two_daemons_with_one_device_id(mqtt_broker, tmp_path, sample_video, emotion_model):
    """A cloned SD card: two daemons, one device id. Each says once what is wrong and how to
    fix it, and they back off instead of taking the session from each other in a loop."""
    photos = tmp_path / "photos"
    photos.mkdir()
    cap = cv2.VideoCapture(str(sample_video))
    ok, img = cap.read()
    cap.release()
    assert ok
    cv2.imwrite(str(photos / "face.png"), img)
    procs = []
    for name in ("a", "b"):
        cfg = write_config(
            tmp_path / f"{name}.toml",
            mqtt_broker,
            spool=tmp_path / f"spool-{name}",
            source=f'kind = "images"\nuri = "{photos}"\nfps = 2.0',
            model=emotion_model,
            extra="takeover_backoff_s = 3.0",
        )
        procs.append(
            subprocess.Popen(
                [*cli_cmd(), "--config", str(cfg)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    client_id = f"emotion-edge-{DEVICE}"
    try:
        assert wait_until(lambda: mqtt_broker.connections(client_id) >= 2, 60)
        t0, n0 = time.monotonic(), mqtt_broker.connections(client_id)
        time.sleep(15)
        fought = mqtt_broker.connections(client_id) - n0
        for p in procs:
            p.send_signal(signal.SIGTERM)
        errs = [p.communicate(timeout=30)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    # without the backoff: a reconnect every 0.1-0.5 s per daemon, ~100 in 15 s
    assert fought <= 12, (fought, time.monotonic() - t0, mqtt_broker.log_text()[-2000:])
    for err in errs:
        assert "Traceback" not in err
        takeover = [line for line in err.splitlines() if " ERROR " in line and client_id in line]
        assert len(takeover) == 1, err[-3000:]
        assert "[device] id" in takeover[0] and DEVICE in takeover[0]


# -- a damaged spool file -----------------------------------------------------------------------


@pytest.mark.slow
def test_damaged_spool_is_quarantined_and_the_daemon_delivers(
    mqtt_broker, tmp_path, sample_video, emotion_model
):
    spool = tmp_path / "spool"
    spool.mkdir()
    damaged = spool / f"{DEVICE}.sqlite3"
    damaged.write_bytes(b"SQLite format 3\0" + os.urandom(8192))  # power loss on an SD card
    cfg = write_config(
        tmp_path / "c.toml",
        mqtt_broker,
        spool=spool,
        source=f'kind = "video"\nuri = "{sample_video}"\nloop = true',
        model=emotion_model,
    )
    sub = Recorder(mqtt_broker.host, mqtt_broker.port, f"emotion-edge/{DEVICE}/#")
    proc = subprocess.Popen(
        [*cli_cmd(), "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert sub.wait(lambda: sub.on("events") and sub.on("stats"), 60), proc.poll()
        stats = json.loads(sub.on("stats")[-1])
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err  # not exit 2: systemd would never restart it
    moved = sorted(spool.glob(f"{DEVICE}.sqlite3.corrupt-*"))
    assert len([m for m in moved if not m.name.endswith(("-wal", "-shm"))]) == 1
    assert stats["mqtt"]["spool_quarantined"] == [str(moved[0])]
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "damaged" in errors[0] and str(moved[0]) in errors[0], errors
    assert sqlite3.connect(str(damaged)).execute("PRAGMA quick_check").fetchone()[0] == "ok"
    sub.close()


# -- a dead sender thread -----------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_dead_sender_thread_stops_the_watchdog(
    mqtt_broker, tmp_path, sample_video, emotion_model, monkeypatch, caplog
):
    """A sender thread that dies (a bug; injected here) must not leave a daemon that looks
    alive: healthy() turns False and the pipeline stops sending WATCHDOG=1."""
    import socket

    from emotion_edge.app import build_pipeline
    from emotion_edge.config import load_config
    from emotion_edge.systemd_notify import SystemdNotifier

    class Boom(BaseException):
        pass

    def die(self):
        raise Boom("injected")

    monkeypatch.setattr(MqttPublisher, "_send_pass", die)
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    cfg = load_config(
        None,
        {
            "device": {"id": DEVICE},
            "source": {"kind": "video", "uri": str(sample_video), "loop": False},
            "classifier": {"model_path": str(emotion_model), "num_threads": 1},
            "mqtt": {
                "enabled": True,
                "host": mqtt_broker.host,
                "port": mqtt_broker.port,
                "spool_dir": str(tmp_path / "spool"),
            },
        },
    )
    notifier = SystemdNotifier(socket_path=path, watchdog_usec="200000", watchdog_pid="")
    pipe = build_pipeline(cfg, notifier=notifier)
    with caplog.at_level(logging.ERROR):
        summary = pipe.run(max_frames=30)
    notes = []
    try:
        while True:
            notes.append(sock.recv(4096).decode())
    except TimeoutError:
        pass
    finally:
        sock.close()
    assert summary.frames_processed == 30
    assert notes[0].startswith("READY=1") and "WATCHDOG=1" not in notes
    assert "mqtt-sender thread died" in caplog.text
    assert "not pinging the systemd watchdog" in caplog.text
    assert summary.stats["mqtt"]["healthy"] is False


# -- smaller items: model errors, the final log line ------------------------------------------


def _with_sidecar(emotion_model, dst: Path, data: bytes) -> Path:
    """A model file with these bytes and a sidecar whose sha256 matches them."""
    import hashlib

    dst.write_bytes(data)
    meta = json.loads(emotion_model.with_suffix(".json").read_text())
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    dst.with_suffix(".json").write_text(json.dumps(meta))
    return dst


def test_model_errors_name_the_file(emotion_model, tmp_path):
    from emotion_edge.classify.classifier import EmotionClassifier
    from emotion_edge.classify.litert import make_interpreter
    from emotion_edge.errors import ModelError

    data = bytearray(emotion_model.read_bytes())
    data[8:64] = os.urandom(56)  # a broken header, and a sidecar that vouches for it
    bad = _with_sidecar(emotion_model, tmp_path / "bad.tflite", bytes(data))
    with pytest.raises(ModelError, match=re.escape(str(bad)) + ": not a valid TFLite model"):
        EmotionClassifier(bad)
    empty = _with_sidecar(emotion_model, tmp_path / "empty.tflite", b"")
    with pytest.raises(ModelError, match=re.escape(str(empty)) + ": empty file"):
        EmotionClassifier(empty)
    with pytest.raises(ModelError, match=re.escape(str(empty)) + ": empty file"):
        make_interpreter(model_path=str(empty))  # the detector's way in
    with pytest.raises(ModelError, match="missing.tflite: cannot read the model"):
        make_interpreter(model_path=str(tmp_path / "missing.tflite"))


def test_final_line_has_the_mean_fps_and_a_stop_is_not_an_end(sample_video, emotion_model):
    proc = subprocess.run(
        [
            *cli_cmd(),
            "--source",
            f"video:{sample_video}",
            "--model",
            str(emotion_model),
            "--dry-run",
            "--max-frames",
            "30",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    done = [line for line in proc.stderr.splitlines() if "done (" in line][-1]
    fps = float(re.search(r"([\d.]+) fps on average", done).group(1))
    assert fps > 1.0, done  # not the 0.0 of an empty last interval
    final = json.loads(proc.stdout.splitlines()[-1])
    assert final["frames"]["processed"] == 30
    assert final["source"]["ended"] is False  # a looping video stopped early did not end
