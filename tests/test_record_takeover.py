"""The recorder's MQTT session (issue 42, defect 4), against a real mosquitto and real SQLite.

- The default client id is one per host and database, the same at every restart (the broker's
  persistent session is found again), different for two databases.
- Two recorders with one client id (both writing one database) do not fight: the takeover is
  named once with the fix, and the loser backs off (doubling), so the broker sees a handful of
  connections instead of one every ~200 ms; nothing published meanwhile is lost.
- SIGTERM: the recorder exits (rc 0) within 1 s with what it acknowledged committed.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy", reason="the recorder needs the [record] extra")

from emotion_edge_record.ingest import default_client_id  # noqa: E402
from emotion_edge_record.store import open_store  # noqa: E402
from mqtt_broker import Broker  # noqa: E402
from test_record_mqtt import (  # noqa: E402
    PREFIX,
    Publisher,
    RecorderProc,
    db_ids,
    exe,
    make_event,
    wait_until,
)

CONNECTED_AS = re.compile(r"MQTT: connected to \S+ as (\S+) \(session present")


class Rec:
    """emotion-edge-record with no --client-id (the default is under test)."""

    def __init__(self, tmp: Path, broker: Broker, db: Path, name: str, *extra: str):
        self.log_path = tmp / f"{name}.log"
        self.ready = tmp / f"{name}.ready"
        self.stats = tmp / f"{name}.json"
        self._log = open(self.log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                *exe("emotion-edge-record"),
                "--db",
                str(db),
                "--mqtt-host",
                broker.host,
                "--mqtt-port",
                str(broker.port),
                "--ready-file",
                str(self.ready),
                "--stats-json",
                str(self.stats),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def client_id(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            m = CONNECTED_AS.search(self.text())
            if m:
                return m.group(1)
            assert self.proc.poll() is None, self.text()
            assert time.monotonic() < deadline, "recorder never connected\n" + self.text()
            time.sleep(0.05)

    def term(self) -> tuple[int, float]:
        """SIGTERM; (exit status, seconds until the process ended)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(30)
        took = time.monotonic() - t0
        self._log.close()
        return rc, took


def test_default_client_id_is_one_per_database_and_stable(mqtt_broker, tmp_path):
    a, b = tmp_path / "a" / "rec.sqlite", tmp_path / "b" / "rec.sqlite"
    ids = []
    for name, db in (("a1", a), ("b1", b), ("a2", a)):  # a2: `a` restarted
        r = Rec(tmp_path, mqtt_broker, db, name)
        ids.append(r.client_id())
        assert r.term()[0] == 0, r.text()
    assert ids[0] == ids[2], "the same database must give the same id at every start"
    assert ids[0] != ids[1], "two databases must not share a session"
    assert all(i.startswith("emotion-edge-record-") and len(i) <= 64 for i in ids)
    # the id is the documented function of the database's URL (no password in it)
    store = open_store(str(a))
    try:
        assert ids[0] == default_client_id(store.url)
    finally:
        store.close()
    pg = "postgresql://rec:secret@db.example/emotions"
    assert default_client_id(pg) != default_client_id("postgresql://rec@db.example/other")


def test_two_recorders_with_one_id_back_off_and_lose_nothing(mqtt_broker, tmp_path):
    db = tmp_path / "shared.sqlite"
    backoff = ("--takeover-backoff", "1")
    a = Rec(tmp_path, mqtt_broker, db, "a", *backoff)
    cid = a.client_id()
    b = Rec(tmp_path, mqtt_broker, db, "b", *backoff)
    assert b.client_id() == cid
    pub = Publisher(mqtt_broker)
    sent = set()
    try:
        t_end = time.monotonic() + 8.0
        i = 0
        while time.monotonic() < t_end:
            ev = make_event("dev-1", i, time.time())
            pub.pub(f"{PREFIX}/dev-1/events", ev)
            sent.add(ev["event_id"])
            i += 1
            time.sleep(0.05)
        pub.flush()
        wait_until(lambda: sent <= db_ids(db, "events", "event_id"), 30, "all events stored")
    finally:
        pub.close()
        rcs = [a.term(), b.term()]
    connections = mqtt_broker.connections(cid)
    logs = a.text() + b.text()
    named = [ln for ln in logs.splitlines() if "ERROR" in ln and "session taken over" in ln]
    print(f"two recorders, one id, 8 s: {connections} connections as {cid}, {len(sent)} stored")
    assert all(rc == 0 for rc, _ in rcs), logs
    # without a backoff the pair reconnected every ~200 ms: 40+ connections in 8 s
    assert connections <= 14, logs
    assert 1 <= len(named) <= 2, logs  # once per recorder at most
    assert cid in named[0] and "--client-id" in named[0]
    assert "reconnecting in 2 s" in logs or "reconnecting in 4 s" in logs, logs
    counted = [json.loads(r.stats.read_text())["record"]["mqtt_takeovers"] for r in (a, b)]
    assert max(counted) >= 1, counted


def test_sigterm_stops_within_a_second_with_everything_acknowledged_committed(
    mqtt_broker, tmp_path
):
    db = tmp_path / "rec.sqlite"
    rec = RecorderProc(tmp_path, mqtt_broker, str(db), client_id="rec-term").start()
    pub = Publisher(mqtt_broker)
    sent = set()
    try:
        for i in range(400):  # a burst still being written when SIGTERM comes
            ev = make_event("dev-1", i, time.time())
            pub.pub(f"{PREFIX}/dev-1/events", ev)
            sent.add(ev["event_id"])
        pub.flush()
        t0 = time.monotonic()
        rec.proc.send_signal(signal.SIGTERM)
        rc = rec.proc.wait(30)
        took = time.monotonic() - t0
        rec.log.close()
        stats = json.loads(rec.stats_path.read_text())
        first_run = db_ids(db, "events", "event_id")
        print(f"SIGTERM to exit: {took:.2f} s, {len(first_run)} of 400 committed in the first run")
        assert rc == 0, rec.log_text()
        assert took < 1.0, f"took {took:.2f} s\n{rec.log_text()}"
        # everything it acknowledged is committed; the rest waits in the broker's session
        assert stats["record"]["acked"] <= len(first_run)
        rec.start()  # same client id: the session hands back what was not acknowledged
        wait_until(lambda: sent <= db_ids(db, "events", "event_id"), 30, "the rest stored")
        rec.stop()
    finally:
        pub.close()
        if rec.proc.poll() is None:
            rec.kill()


@pytest.mark.slow
def test_sigterm_during_a_backlog_stops_within_a_second(tmp_path):
    """5000 events queued in the recorder's session while it was away; SIGTERM 0.5 s after
    it came back, in the middle of writing them (the case that took 2.2 s before: it waited
    for the whole backlog). What it acknowledged is committed; the rest comes at the next
    start."""
    import paho.mqtt.client as paho

    broker = Broker(tmp_path)
    with broker.conf.open("a") as f:
        f.write("max_queued_messages 100000\n")
    broker.start()
    db = tmp_path / "rec.sqlite"
    rec = RecorderProc(tmp_path, broker, str(db), client_id="rec-backlog").start()
    rec.stop()  # the session stays: what comes now is queued for it
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="sim-backlog")
    c.max_inflight_messages_set(1000)
    c.connect(broker.host, broker.port)
    c.loop_start()
    sent = set()
    try:
        infos = []
        for i in range(5000):
            ev = make_event("dev-1", i, time.time())
            infos.append(c.publish(f"{PREFIX}/dev-1/events", json.dumps(ev), qos=1))
            sent.add(ev["event_id"])
        for info in infos:
            info.wait_for_publish(120)
        rec.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        rec.proc.send_signal(signal.SIGTERM)
        rc = rec.proc.wait(30)
        took = time.monotonic() - t0
        rec.log.close()
        stats = json.loads(rec.stats_path.read_text())
        first = db_ids(db, "events", "event_id")
        print(f"SIGTERM in a backlog: exit after {took:.2f} s, {len(first)} of 5000 committed")
        assert rc == 0, rec.log_text()
        assert took < 1.0, f"took {took:.2f} s\n{rec.log_text()}"
        assert stats["record"]["acked"] <= len(first)
        rec.start()
        wait_until(lambda: sent <= db_ids(db, "events", "event_id"), 60, "the rest stored")
        rec.stop()
    finally:
        c.disconnect()
        c.loop_stop()
        if rec.proc.poll() is None:
            rec.kill()
        broker.stop()


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "4000"])
def test_takeover_backoff_is_validated(tmp_path, bad):
    p = subprocess.run(
        [
            *exe("emotion-edge-record"),
            "--db",
            str(tmp_path / "x.sqlite"),
            "--mqtt-host",
            "127.0.0.1",
            "--takeover-backoff",
            bad,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2, p.stderr
    assert "--takeover-backoff" in p.stderr
