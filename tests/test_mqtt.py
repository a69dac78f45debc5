"""MQTT publisher against a real mosquitto (tests/mqtt_broker.py) and real paho subscribers."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from emotion_edge.config import MqttConfig, load_table
from emotion_edge.errors import ConfigError
from emotion_edge.publish.mqtt import MqttPublisher
from emotion_edge.track.events import EmotionEvent
from mqtt_broker import Broker, free_port

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "device" / "schemas"
DEVICE = "kiosk-1"


# -- helpers --------------------------------------------------------------------------------


class Subscriber:
    """A real paho client recording every message; reconnects and resubscribes by itself."""

    def __init__(
        self,
        broker: Broker,
        topic: str = "#",
        *,
        persistent: bool = False,
        username: str = "",
        password: str = "",
    ):
        self.messages: list[tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()
        self.topic = topic
        cid = f"test-sub-{free_port()}"
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=not persistent
        )
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        assert self._subscribed.wait(5), "test subscriber did not get SUBACK"

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_message(self, client, userdata, msg):
        with self._cond:
            self.messages.append((msg.topic, msg.payload, msg.retain))
            self._cond.notify_all()

    def payloads(self, topic: str) -> list[str]:
        with self._cond:
            return [p.decode() for t, p, _ in self.messages if t == topic]

    def events(self, topic: str) -> list[dict]:
        return [json.loads(p) for p in self.payloads(topic)]

    def wait_for(self, pred, timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: pred(self), timeout)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def make_cfg(broker: Broker | None, tmp_path: Path, **kw) -> MqttConfig:
    d = {
        "enabled": True,
        "host": "127.0.0.1",
        "port": broker.port if broker else free_port(),
        "spool_dir": str(tmp_path / "spool"),
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
        "keepalive_s": 5,
    }
    d.update(kw)
    return load_table("mqtt", d)


def make_event(i: int) -> dict:
    """A real event payload, as the daemon builds it."""
    return EmotionEvent(
        kind="appeared",
        device_id=DEVICE,
        face_id=i + 1,
        emotion="happy",
        confidence=0.8,
        top=[{"emotion": "happy", "confidence": 0.8}, {"emotion": "neutral", "confidence": 0.1}],
        box=(10.0, 20.0, 64.0, 64.0),
        frame_index=i,
        frame_size=(640, 480),
        captured_ts=time.time(),
        model_version="test",
    ).to_payload()


def validate(payload: dict, schema_name: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema_path = SCHEMAS / schema_name
    if not schema_path.is_file():
        pytest.fail(f"JSON Schema {schema_path} missing (the daemon documents payloads there)")
    jsonschema.validate(payload, json.loads(schema_path.read_text()))


@pytest.fixture
def publishers():
    """Publishers made by a test; stopped at the end even when the test fails."""
    made: list[MqttPublisher] = []
    yield made
    for p in made:
        p.stop(timeout=1.0)


def new_pub(publishers, cfg: MqttConfig, start: bool = True) -> MqttPublisher:
    pub = MqttPublisher(cfg, DEVICE, model_version="test")
    publishers.append(pub)
    if start:
        pub.start()
    return pub


# -- tests ----------------------------------------------------------------------------------


def test_events_arrive_with_ids_and_schema(mqtt_broker, tmp_path, publishers):
    sub = Subscriber(mqtt_broker)
    pub = new_pub(publishers, make_cfg(mqtt_broker, tmp_path))
    assert pub.wait_connected(5), pub.stats()
    sent = [make_event(i) for i in range(20)]
    for ev in sent:
        pub.publish_event(ev)
    assert pub.flush(5), pub.stats()
    topic = pub.topic("events")
    assert topic == f"emotion-edge/{DEVICE}/events"
    assert sub.wait_for(lambda s: len(s.payloads(topic)) >= 20, 5)
    got = sub.events(topic)
    assert [e["event_id"] for e in got] == [e["event_id"] for e in sent]  # in order
    assert got == sent
    validate(got[0], "event.schema.json")
    st = pub.stats()
    assert st["events_published"] == 20 and st["events_acked"] == 20
    assert st["spool_depth"] == 0 and st["connected"] and st["last_error"] == ""
    sub.close()


def test_availability_online_then_stopped_and_retained_state(mqtt_broker, tmp_path, publishers):
    pub = new_pub(publishers, make_cfg(mqtt_broker, tmp_path), start=False)
    # state published before the connection exists is kept and sent on connect (latest wins)
    pub.publish_state({"face_count": 1})
    pub.publish_state({"face_count": 2})
    pub.publish_stats({"fps": 9.5})
    pub.start()
    assert pub.wait_connected(5)
    avail = pub.topic("availability")
    sub = Subscriber(mqtt_broker)
    assert sub.wait_for(
        lambda s: (
            s.payloads(avail) == ["online"]
            and len(s.payloads(pub.topic("state"))) == 1
            and len(s.payloads(pub.topic("stats"))) == 1
        ),
        5,
    ), sub.messages
    assert json.loads(sub.payloads(pub.topic("state"))[0]) == {"face_count": 2}
    # Retained: a subscriber that arrives after publication gets them with the retain flag.
    # (The first subscriber may have subscribed before they were sent, so it can see them live.)
    newcomer = Subscriber(mqtt_broker)
    assert newcomer.wait_for(lambda s: len(s.messages) >= 3, 5), newcomer.messages
    assert {t for t, _, r in newcomer.messages if r} >= {
        avail,
        pub.topic("state"),
        pub.topic("stats"),
    }, newcomer.messages
    newcomer.close()
    pub.stop()
    assert sub.wait_for(lambda s: s.payloads(avail)[-1:] == ["stopped"], 5), sub.messages
    sub.close()
    late = Subscriber(mqtt_broker, avail)  # a newcomer sees the retained `stopped`
    assert late.wait_for(lambda s: s.payloads(avail) == ["stopped"], 5)
    assert pub.stats()["connected"] is False
    late.close()


_CHILD = textwrap.dedent("""
    import sys, time
    from emotion_edge.config import MqttConfig, load_table
    from emotion_edge.publish.mqtt import MqttPublisher
    cfg = load_table("mqtt", {"enabled": True, "host": "127.0.0.1", "port": int(sys.argv[1]),
                                "spool_dir": sys.argv[2], "keepalive_s": 5})
    pub = MqttPublisher(cfg, "kiosk-1")
    pub.start()
    assert pub.wait_connected(10)
    print("READY", flush=True)
    time.sleep(60)
""")


def test_last_will_offline_when_process_is_killed(mqtt_broker, tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(mqtt_broker.port), str(tmp_path / "spool")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "READY"
        avail = f"emotion-edge/{DEVICE}/availability"
        sub = Subscriber(mqtt_broker, avail)
        assert sub.wait_for(lambda s: s.payloads(avail) == ["online"], 5)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(5)
        assert sub.wait_for(lambda s: s.payloads(avail)[-1:] == ["offline"], 5), sub.messages
        sub.close()
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()


_CRASHER = textwrap.dedent("""
    import sys, time
    from emotion_edge.config import MqttConfig, load_table
    from emotion_edge.publish.mqtt import MqttPublisher
    cfg = load_table("mqtt", {"enabled": True, "host": "127.0.0.1", "port": int(sys.argv[1]),
                                "spool_dir": sys.argv[2]})
    pub = MqttPublisher(cfg, "kiosk-1")
    pub.start()  # nothing listens: every event stays in the spool
    for i in range(10):
        pub.publish_event({"event_id": f"crash-{i}", "n": i})
    print("SPOOLED", flush=True)
    time.sleep(60)
""")


def test_spool_survives_publisher_crash(tmp_path, publishers):
    broker = Broker(tmp_path)  # not started yet
    spool = tmp_path / "spool"
    child = subprocess.Popen(
        [sys.executable, "-c", _CRASHER, str(broker.port), str(spool)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "SPOOLED"
        os.kill(child.pid, signal.SIGKILL)  # no stop(), no flush: only what is on disk counts
        child.wait(5)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()
    broker.start()
    try:
        sub = Subscriber(broker)
        # not started yet: a started publisher may already have drained part of the spool
        pub = new_pub(publishers, make_cfg(broker, tmp_path), start=False)
        assert pub.stats()["spool_depth"] == 10
        pub.start()
        assert pub.wait_connected(5) and pub.flush(5), pub.stats()
        topic = pub.topic("events")
        assert sub.wait_for(lambda s: len(s.payloads(topic)) >= 10, 5)
        assert [e["event_id"] for e in sub.events(topic)] == [f"crash-{i}" for i in range(10)]
        sub.close()
    finally:
        for p in publishers:
            p.stop(timeout=1.0)
        broker.stop()


def test_broker_killed_and_restarted_every_event_delivered(mqtt_broker, tmp_path, publishers):
    """At least once with ids: distinct ids received == ids produced, spool drained."""
    events_topic = f"emotion-edge/{DEVICE}/events"
    # a persistent session (and a broker that saves it on every change) so that the test
    # subscriber misses nothing while it is itself reconnecting to the restarted broker
    sub = Subscriber(mqtt_broker, events_topic, persistent=True)
    pub = new_pub(publishers, make_cfg(mqtt_broker, tmp_path))
    assert pub.wait_connected(5)
    produced: list[str] = []
    max_depth_while_down = 0
    n_before, n_down, n_after = 60, 40, 60
    for i in range(n_before + n_down + n_after):
        if i == n_before:
            mqtt_broker.stop(kill=True)  # SIGKILL: no goodbye, sockets reset
        ev = make_event(i)
        pub.publish_event(ev)
        produced.append(ev["event_id"])
        if n_before <= i < n_before + n_down:
            max_depth_while_down = max(max_depth_while_down, pub.stats()["spool_depth"])
        if i == n_before + n_down - 1:
            assert not pub.connected()
            mqtt_broker.start()
        time.sleep(0.01)
    assert max_depth_while_down >= n_down // 2, "events were not spooled while the broker was down"
    assert pub.flush(15), pub.stats()
    assert sub.wait_for(
        lambda s: set(e["event_id"] for e in s.events(events_topic)) >= set(produced), 15
    )
    received = [e["event_id"] for e in sub.events(events_topic)]
    assert set(received) == set(produced)
    st = pub.stats()
    assert st["reconnects"] >= 1 and st["spool_depth"] == 0 and st["spool_dropped"] == 0
    assert st["events_acked"] == len(produced)
    sub.close()


def test_spool_full_drops_oldest_and_survives_restart(tmp_path, publishers, caplog):
    caplog.set_level(logging.WARNING, logger="emotion_edge.publish.mqtt")
    broker = Broker(tmp_path)  # configured, not started: nothing listens on its port yet
    cfg = make_cfg(broker, tmp_path, spool_max_events=5)
    pub = new_pub(publishers, cfg)
    sent = [make_event(i) for i in range(12)]
    for ev in sent:
        pub.publish_event(ev)
    deadline = time.monotonic() + 5  # the first connect attempt runs in paho's thread
    while not pub.stats()["last_error"] and time.monotonic() < deadline:
        time.sleep(0.05)
    st = pub.stats()
    assert st["spool_depth"] == 5 and st["spool_dropped"] == 7 and not st["connected"]
    assert "ConnectionRefusedError" in st["last_error"] or "refused" in st["last_error"].lower()
    assert any("dropped the 1 oldest" in r.getMessage() for r in caplog.records)
    pub.stop(timeout=1.0)  # broker unreachable: the 5 events stay on disk

    broker.start()
    try:
        sub = Subscriber(broker)
        pub2 = new_pub(publishers, cfg)  # a new daemon process would do the same
        topic = pub2.topic("events")
        assert pub2.flush(5) or pub2.wait_connected(5)
        assert sub.wait_for(lambda s: len(s.payloads(topic)) >= 5, 5), pub2.stats()
        got = [e["event_id"] for e in sub.events(topic)]
        assert got == [e["event_id"] for e in sent[-5:]]  # the newest five, oldest first
        assert pub2.flush(5) and pub2.stats()["spool_depth"] == 0
        sub.close()
    finally:
        for p in publishers:
            p.stop(timeout=1.0)
        broker.stop()


@pytest.mark.parametrize("mqtt_broker", [{"users": {"alice": "s3cret"}}], indirect=True)
def test_auth_failure_is_reported_not_fatal(mqtt_broker, tmp_path, publishers, caplog, monkeypatch):
    caplog.set_level(logging.ERROR, logger="emotion_edge.publish.mqtt")
    monkeypatch.setenv("EMOTION_EDGE_MQTT_PASSWORD", "wrong")
    pub = new_pub(publishers, make_cfg(mqtt_broker, tmp_path, username="alice"))
    deadline = time.monotonic() + 5
    while not pub.stats()["last_error"] and time.monotonic() < deadline:
        time.sleep(0.05)
    st = pub.stats()
    assert "refused" in st["last_error"] and "mqtt.username" in st["last_error"], st
    assert (
        "Not authorized" in st["last_error"] or "Bad user name or password" in st["last_error"]
    ), st
    assert not st["connected"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "refused" in errors[0].getMessage()
    time.sleep(0.5)  # retries with backoff keep failing, logged loudly only once
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    pub.publish_event(make_event(0))  # still accepted: spooled
    assert pub.stats()["spool_depth"] == 1
    pub.stop(timeout=1.0)

    # the right password from a file (never the command line) gets through
    pw = tmp_path / "mqtt-password"
    pw.write_text("s3cret\n")
    sub = Subscriber(mqtt_broker, username="alice", password="s3cret")
    good = new_pub(
        publishers, make_cfg(mqtt_broker, tmp_path, username="alice", password_file=str(pw))
    )
    assert good.wait_connected(5), good.stats()
    assert good.flush(5)  # the event spooled during the failure goes out now
    assert sub.wait_for(lambda s: len(s.payloads(good.topic("events"))) == 1, 5)
    sub.close()


@pytest.mark.parametrize("mqtt_broker", [{"tls": True}], indirect=True)
def test_tls_with_ca(mqtt_broker, tmp_path, publishers):
    certs = mqtt_broker.certs
    sub = Subscriber(mqtt_broker)  # plain listener of the same broker
    pub = new_pub(
        publishers,
        make_cfg(mqtt_broker, tmp_path, port=mqtt_broker.tls_port, tls=True, ca_file=str(certs.ca)),
    )
    assert pub.wait_connected(5), pub.stats()
    pub.publish_event(make_event(1))
    assert pub.flush(5)
    assert sub.wait_for(lambda s: len(s.payloads(pub.topic("events"))) == 1, 5)
    sub.close()
    pub.stop()

    # without our CA (system CAs only) the broker's certificate must be rejected
    bad = new_pub(
        publishers, make_cfg(mqtt_broker, tmp_path / "b", port=mqtt_broker.tls_port, tls=True)
    )
    assert not bad.wait_connected(1.5)
    assert "CERTIFICATE_VERIFY_FAILED" in bad.stats()["last_error"], bad.stats()


@pytest.mark.parametrize("mqtt_broker", [{"tls": True, "require_client_cert": True}], indirect=True)
def test_tls_client_certificate(mqtt_broker, tmp_path, publishers):
    certs = mqtt_broker.certs
    pub = new_pub(
        publishers,
        make_cfg(
            mqtt_broker,
            tmp_path,
            port=mqtt_broker.tls_port,
            tls=True,
            ca_file=str(certs.ca),
            cert_file=str(certs.client_cert),
            key_file=str(certs.client_key),
        ),
    )
    assert pub.wait_connected(5), pub.stats()
    # the same broker turns away a client without a certificate
    anon = new_pub(
        publishers,
        make_cfg(
            mqtt_broker, tmp_path / "b", port=mqtt_broker.tls_port, tls=True, ca_file=str(certs.ca)
        ),
    )
    assert not anon.wait_connected(1.5)
    assert anon.stats()["last_error"], anon.stats()


def test_home_assistant_discovery(mqtt_broker, tmp_path, publishers):
    """One device-based discovery payload (its content: tests/test_homeassistant.py)."""
    sub = Subscriber(mqtt_broker, "homeassistant/device/#")
    pub = new_pub(publishers, make_cfg(mqtt_broker, tmp_path, ha_discovery=True))
    assert pub.wait_connected(5)
    assert sub.wait_for(lambda s: len(s.messages) == 1, 5), sub.messages
    topic, payload, _ = sub.messages[0]
    assert topic == "homeassistant/device/emotion_edge_kiosk-1/config"
    config = json.loads(payload)
    assert config["state_topic"] == pub.topic("state")
    assert config["availability"][0]["topic"] == pub.topic("availability")
    assert "value_json.face_count" in config["components"]["face_count"]["value_template"]
    sub.close()


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"port": 70000}, "mqtt.port"),
        ({"prot": 1883}, "mqtt.prot"),
        ({"tls": "yes"}, "mqtt.tls"),
        ({"qos_events": 0}, "mqtt.qos_events"),
        ({"tls": True, "ca_file": "/nonexistent/ca.crt"}, "mqtt.ca_file"),
        ({"tls": True, "cert_file": __file__}, "mqtt.key_file"),
        ({"password_file": "/nonexistent/pw"}, "mqtt.password_file"),
        ({"reconnect_min_s": 5.0, "reconnect_max_s": 1.0}, "mqtt.reconnect_max_s"),
        ({"topic_prefix": "a/#"}, "mqtt.topic_prefix"),
        ({"protocol": "4"}, "mqtt.protocol"),
        ({"memory_queue_events": 0}, "mqtt.memory_queue_events"),
        ({"takeover_backoff_s": 0}, "mqtt.takeover_backoff_s"),
    ],
)
def test_config_errors_name_the_key(table, key):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        load_table("mqtt", table)


def test_spool_overflow_is_logged_once_then_summarized(tmp_path, publishers, caplog):
    caplog.set_level(logging.WARNING, logger="emotion_edge.publish.mqtt")
    broker = Broker(tmp_path)  # not started
    pub = new_pub(publishers, make_cfg(broker, tmp_path, spool_max_events=5))
    for i in range(50):
        pub.publish_event(make_event(i))
    st = pub.stats()
    assert st["spool_dropped"] == 45 and st["events_dropped"] == 45 and st["spool_depth"] == 5
    drops = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drops) == 1 and "dropped the 1 oldest" in drops[0], drops  # not one per event
    pub.stop(timeout=1.0)
    summary = [r.getMessage() for r in caplog.records if "since the last report" in r.getMessage()]
    assert len(summary) == 1 and "44 event(s) dropped (event spool full" in summary[0], summary


def test_paho_lines_stay_below_info(tmp_path, publishers, caplog):
    """paho's own lines (a failed connect every retry) are DEBUG records: none is printed at
    INFO, whatever handler the root logger has (they used to be relabelled after the level
    check and print as "DEBUG" lines at INFO)."""
    caplog.set_level(logging.INFO)
    pub = new_pub(publishers, make_cfg(None, tmp_path))  # nothing listens on its port
    deadline = time.monotonic() + 5
    while not pub.stats()["last_error"] and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a few retries
    assert pub.stats()["last_error"]
    assert not [r for r in caplog.records if r.name.endswith(".paho")], caplog.text
    assert all(r.levelno >= logging.INFO for r in caplog.records)
    caplog.set_level(logging.DEBUG)
    time.sleep(1.0)
    paho_lines = [r for r in caplog.records if r.name.endswith(".paho")]
    assert paho_lines and all(r.levelno == logging.DEBUG for r in paho_lines)


def test_mqtt_5_is_the_default_and_3_1_1_an_option(mqtt_broker, tmp_path, publishers):
    for proto, tag in (("5", "v5"), ("3.1.1", "v311")):
        cfg = make_cfg(mqtt_broker, tmp_path / proto, client_id=f"proto-{tag}", protocol=proto)
        pub = new_pub(publishers, cfg)
        assert pub.wait_connected(5) and pub.stats()["protocol"] == proto
        pub.publish_event(make_event(0))
        assert pub.flush(5) and pub.stats()["events_acked"] == 1
    assert MqttConfig().protocol == "5"
    log_text = mqtt_broker.log_text()
    # mosquitto names 3.1.1 "p2" (the second protocol it learned) and 5 "p5"
    assert "as proto-v5 (p5," in log_text and "as proto-v311 (p2," in log_text


def test_stats_payload_with_the_publisher_figures_is_schema_valid(
    mqtt_broker, tmp_path, publishers
):
    pub = new_pub(publishers, make_cfg(mqtt_broker, tmp_path))
    assert pub.wait_connected(5)
    pub.publish_event(make_event(0))
    assert pub.flush(5)
    st = pub.stats()
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((SCHEMAS / "stats.schema.json").read_text())
    mqtt_schema = next(s for s in schema["properties"]["mqtt"]["anyOf"] if s["type"] == "object")
    jsonschema.validate(st, mqtt_schema)
    assert set(mqtt_schema["required"]) <= set(st)
    g = pub.ledger()
    assert (
        g["created"] + g["carried_over"]
        == g["delivered"] + g["rejected"] + g["dropped"] + g["queued"]
    )
    assert "1 created" in pub.ledger_text() and "1 delivered" in pub.ledger_text()
