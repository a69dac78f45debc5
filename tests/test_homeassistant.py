"""Home Assistant discovery against a real mosquitto: the payload's keys are checked against the
options Home Assistant documents for device-based discovery, MQTT sensors and MQTT events
(HA refuses a payload with unknown keys), and every value template is rendered with real
Jinja2 (the engine HA uses) on the payloads the real daemon published while it watched the
sample video.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_mqtt import Subscriber, make_cfg, new_pub

jinja2 = pytest.importorskip("jinja2", reason="pip install jinja2 (dev): renders HA templates")
from emotion_edge.preprocess import FER2013_LABELS  # noqa: E402
from emotion_edge.publish.homeassistant import (  # noqa: E402
    EVENT_TYPES,
    HaDevice,
    discovery_payload,
    ha_device_for,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402

# Options Home Assistant documents (integrations/mqtt: device-based discovery payload,
# device and origin mappings; sensor.mqtt; event.mqtt), full names.
AVAILABILITY = {
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "payload_available",
    "payload_not_available",
}
ROOT_KEYS = {
    "device",
    "origin",
    "components",
    "state_topic",
    "command_topic",
    "qos",
    "encoding",
} | AVAILABILITY
DEVICE_KEYS = {
    "configuration_url",
    "connections",
    "hw_version",
    "identifiers",
    "manufacturer",
    "model",
    "model_id",
    "name",
    "serial_number",
    "suggested_area",
    "sw_version",
    "via_device",
}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
ENTITY_KEYS = {
    "platform",
    "unique_id",
    "name",
    "icon",
    "device_class",
    "enabled_by_default",
    "encoding",
    "entity_category",
    "entity_picture",
    "json_attributes_template",
    "json_attributes_topic",
    "qos",
    "state_topic",
    "value_template",
} | AVAILABILITY
PLATFORM_KEYS = {
    "sensor": ENTITY_KEYS
    | {
        "expire_after",
        "force_update",
        "last_reset_value_template",
        "options",
        "state_class",
        "suggested_display_precision",
        "unit_of_measurement",
    },
    "event": ENTITY_KEYS | {"event_types"},
}
ID_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
LABELS = ("angry", "happy", "sad", "neutral")  # a model with a class subset


@pytest.fixture
def publishers():
    made = []
    yield made
    for p in made:
        p.stop(timeout=1.0)


def topic_fn(prefix: str):
    return lambda name: f"{prefix}/{name}"


def check_payload(payload: dict, labels: tuple[str, ...]) -> None:
    """What HA requires of a device-based discovery payload and its components."""
    assert set(payload) <= ROOT_KEYS, set(payload) - ROOT_KEYS
    assert {"device", "origin", "components"} <= set(payload)
    dev, origin = payload["device"], payload["origin"]
    assert set(dev) <= DEVICE_KEYS and dev["identifiers"] and dev["name"]
    assert set(origin) <= ORIGIN_KEYS and origin["name"] == "emotion-edge"
    unique = set()
    for obj, comp in payload["components"].items():
        assert ID_RE.match(obj), obj
        platform = comp["platform"]
        assert platform in PLATFORM_KEYS, platform
        extra = set(comp) - PLATFORM_KEYS[platform]
        assert not extra, (obj, extra)
        assert comp["unique_id"] not in unique
        unique.add(comp["unique_id"])
        assert comp.get("state_topic") or payload.get("state_topic")
        if comp.get("device_class") == "enum":
            # HA: an enum sensor has options and neither a unit nor a state class
            assert comp["options"] == list(labels)
            assert "unit_of_measurement" not in comp and "state_class" not in comp
        if comp.get("state_class") == "measurement":
            assert "unit_of_measurement" in comp or comp.get("device_class") not in (None, "enum")
        if comp.get("device_class") == "temperature":
            assert comp["unit_of_measurement"] in ("°C", "°F", "K")
        if comp.get("entity_category") is not None:
            assert comp["entity_category"] in ("config", "diagnostic")
        if platform == "event":
            assert comp["event_types"] == list(EVENT_TYPES)
            assert comp["state_topic"]
    for avail in payload["availability"]:
        assert set(avail) <= {
            "topic",
            "value_template",
            "payload_available",
            "payload_not_available",
        }


# -- payload shape ------------------------------------------------------------------------------


def test_payload_has_every_entity_the_issue_names():
    dev = HaDevice("kiosk-1", name="Living room", model_version="m1", labels=LABELS)
    payload = discovery_payload(dev, topic_fn("emotion-edge/kiosk-1"))
    check_payload(payload, LABELS)
    comps = payload["components"]
    assert payload["device"]["name"] == "Living room"
    assert "m1" in payload["device"]["sw_version"]
    assert {
        "room_emotion",
        "room_confidence",
        "face_count",
        "largest_face_emotion",
        "largest_face_confidence",
        "emotion_event",
        "fps",
        "cpu_temperature",
        "model",
        "spool_depth",
    } <= set(comps)
    for lab in LABELS:
        c = comps[f"room_{lab}"]
        assert c["unit_of_measurement"] == "%" and c["state_class"] == "measurement"
    assert "room_surprise" not in comps  # not one of this model's labels
    for obj in ("fps", "cpu_temperature", "model", "spool_depth"):
        assert comps[obj]["entity_category"] == "diagnostic"
        assert comps[obj]["state_topic"] == "emotion-edge/kiosk-1/stats"
    assert comps["emotion_event"]["state_topic"] == "emotion-edge/kiosk-1/events"
    assert payload["state_topic"] == "emotion-edge/kiosk-1/state"


def test_device_name_and_live_view_link_from_the_config(tmp_path, monkeypatch):
    from emotion_edge.config import load_config

    cfg = load_config(None, {"device": {"id": "hall"}})
    dev = ha_device_for(cfg, "m", FER2013_LABELS)
    assert (dev.name, dev.configuration_url) == ("hall", "")  # the name defaults to the id
    assert discovery_payload(dev, topic_fn("x"))["device"]["name"] == "hall"
    web = {"enabled": True, "port": 8088}
    cfg = load_config(None, {"device": {"id": "hall", "name": "Hallway"}, "web": web})
    dev = ha_device_for(cfg, "m", FER2013_LABELS)  # loopback: no link HA's user could follow
    assert dev.name == "Hallway" and dev.configuration_url == ""
    monkeypatch.setenv("EMOTION_EDGE_WEB_TOKEN", "a-long-enough-token-for-the-test")
    web.update(host="192.168.1.20", allow_remote=True)
    cfg = load_config(None, {"device": {"id": "hall"}, "web": web})
    dev = ha_device_for(cfg, "m", FER2013_LABELS)
    assert dev.configuration_url == "http://192.168.1.20:8088/"
    assert discovery_payload(dev, topic_fn("x"))["device"]["configuration_url"] == (
        "http://192.168.1.20:8088/"
    )


# -- real broker: publish, clear legacy topics, republish on HA's birth message ------------------


def test_discovery_on_the_broker_and_republished_when_ha_comes_online(
    mqtt_broker, tmp_path, publishers
):
    sub = Subscriber(mqtt_broker, "homeassistant/#")
    pub = new_pub(publishers, make_cfg(mqtt_broker, tmp_path, ha_discovery=True), start=False)
    pub.ha_device = HaDevice("kiosk-1", name="Kitchen", model_version="test", labels=LABELS)
    pub.start()
    assert pub.wait_connected(5)
    node = "emotion_edge_kiosk-1"
    config_topic = f"homeassistant/device/{node}/config"
    assert sub.wait_for(lambda s: len(s.payloads(config_topic)) == 1, 5), sub.messages
    # the per-entity topics of earlier versions are cleared first (empty retained payloads)
    assert [t for t, _, _ in sub.messages] == [
        f"homeassistant/sensor/{node}/dominant_emotion/config",
        f"homeassistant/sensor/{node}/face_count/config",
        config_topic,
    ]
    payload = json.loads(sub.payloads(config_topic)[0])
    check_payload(payload, LABELS)
    assert payload["device"]["name"] == "Kitchen"
    assert payload["state_topic"] == pub.topic("state")
    assert payload["availability"][0]["topic"] == pub.topic("availability")
    for obj in ("dominant_emotion", "face_count"):
        assert sub.payloads(f"homeassistant/sensor/{node}/{obj}/config") == [""]

    # Home Assistant restarts: its birth message brings the discovery payload again
    ha = Subscriber(mqtt_broker, "nothing/#")
    ha.client.publish("homeassistant/status", "offline", qos=1).wait_for_publish(5)
    time.sleep(0.5)
    assert len(sub.payloads(config_topic)) == 1
    ha.client.publish("homeassistant/status", "online", qos=1).wait_for_publish(5)
    assert sub.wait_for(lambda s: len(s.payloads(config_topic)) == 2, 5)
    assert json.loads(sub.payloads(config_topic)[1]) == payload
    # a new subscriber (HA after a broker restart) finds it retained
    late = Subscriber(mqtt_broker, config_topic)
    assert late.wait_for(lambda s: len(s.messages) == 1 and s.messages[0][2], 5)
    for s in (sub, ha, late):
        s.close()


# -- the real daemon's payloads through the templates --------------------------------------------


def cli_cmd() -> list[str]:
    script = Path(sys.executable).with_name("emotion-edge")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "emotion_edge.cli"]


@pytest.fixture(scope="module")
def daemon_run(tmp_path_factory, sample_video, request):
    """The daemon on the sample video with discovery on; every message it published."""
    from mqtt_broker import MOSQUITTO, Broker

    if MOSQUITTO is None:
        pytest.skip("mosquitto not installed (apt-get install mosquitto)")
    tmp = tmp_path_factory.mktemp("ha")
    broker = Broker(tmp / "broker")
    broker.start()
    request.addfinalizer(broker.stop)
    sub = Subscriber(broker, "#")
    config = tmp / "ha.toml"
    config.write_text(
        "\n".join(
            [
                "[device]",
                'id = "den"',
                'name = "The den"',
                "[mqtt]",
                "ha_discovery = true",
                f'spool_dir = "{tmp / "spool"}"',
                "[pipeline]",
                "state_interval_s = 0.5",
                "stats_interval_s = 1.0",
                "",
            ]
        )
    )
    run = subprocess.run(
        [
            *cli_cmd(),
            "--config",
            str(config),
            "--source",
            f"video:{sample_video}",
            "--no-loop",
            "--max-frames",
            "150",
            "--mqtt-host",
            "127.0.0.1",
            "--mqtt-port",
            str(broker.port),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    time.sleep(0.5)
    sub.close()
    return sub


def render(template: str, text: str) -> str:
    env = ImmutableSandboxedEnvironment()
    return env.from_string(template).render(value=text, value_json=json.loads(text)).strip()


def as_pct(text: str) -> float | None:
    if text == "None":
        return None
    v = float(text)
    assert 0.0 <= v <= 100.0, text
    return v


def test_daemon_templates_render_what_home_assistant_expects(daemon_run):
    sub = daemon_run
    node = "emotion_edge_den"
    configs = sub.payloads(f"homeassistant/device/{node}/config")
    assert configs, [t for t, _, _ in sub.messages][:20]
    payload = json.loads(configs[0])
    labels = tuple(payload["components"]["room_emotion"]["options"])
    check_payload(payload, labels)
    assert payload["device"]["name"] == "The den"
    comps = payload["components"]
    states = sub.payloads("emotion-edge/den/state")
    stats = sub.payloads("emotion-edge/den/stats")
    events = sub.payloads("emotion-edge/den/events")
    assert states and stats and events

    with_faces = 0
    for text in states:
        state = json.loads(text)
        out = {
            obj: render(c["value_template"], text)
            for obj, c in comps.items()
            if not c.get("state_topic")
        }
        assert int(out["face_count"]) == state["face_count"]
        assert out["largest_face_emotion"] == (state["dominant_emotion"] or "None")
        largest = as_pct(out["largest_face_confidence"])
        if state["faces"]:
            with_faces += 1
            big = max(state["faces"], key=lambda f: f["box"]["w"] * f["box"]["h"])
            assert largest == round(100 * big["confidence"], 1)
            assert big["emotion"] == state["dominant_emotion"]
        else:
            assert largest is None
        for obj in ("room_emotion", "largest_face_emotion"):
            assert out[obj] in (*labels, "None")
        room = state.get("room")
        if room is None:
            assert out["room_emotion"] == "None" and as_pct(out["room_confidence"]) is None
            continue
        assert out["room_emotion"] == (room["emotion"] or "None")
        conf = as_pct(out["room_confidence"])
        assert conf == (None if room["confidence"] is None else round(100 * room["confidence"], 1))
        for lab in labels:
            p = room["probabilities"].get(lab)
            assert as_pct(out[f"room_{lab}"]) == (None if p is None else round(100 * p, 1))
    assert with_faces, "no state payload with a face: the templates' main path went untested"

    for text in stats:
        s = json.loads(text)
        assert float(render(comps["fps"]["value_template"], text)) == s["fps"]
        assert render(comps["model"]["value_template"], text) == s["model_version"]
        temp = render(comps["cpu_temperature"]["value_template"], text)
        assert temp == ("None" if s["cpu_temp_c"] is None else str(s["cpu_temp_c"]))
        assert int(render(comps["spool_depth"]["value_template"], text)) == s["mqtt"]["spool_depth"]

    kinds = set()
    for text in events:
        ev = json.loads(text)
        fired = json.loads(render(comps["emotion_event"]["value_template"], text))
        assert fired["event_type"] in comps["emotion_event"]["event_types"]
        assert fired["event_type"] == ev["kind"] and fired["emotion"] in labels
        assert fired["confidence"] == ev["confidence"] and fired["face_id"] == ev["face_id"]
        assert "snapshot_jpeg_b64" not in fired
        kinds.add(fired["event_type"])
    assert "appeared" in kinds


def test_room_sensors_read_the_room_object(daemon_run):
    """The room sensors' main path, once the state payload carries `room` (issue 39)."""
    states = [json.loads(t) for t in daemon_run.payloads("emotion-edge/den/state")]
    rooms = [s["room"] for s in states if s.get("room") and s["room"].get("emotion")]
    if not any("room" in s for s in states):
        pytest.skip("this daemon's state payload has no `room` object yet (issue 39)")
    assert rooms, "room objects, but none with a face in view"
    for room in rooms:
        assert room["face_count"] >= 1 and abs(sum(room["probabilities"].values()) - 1) < 0.01
