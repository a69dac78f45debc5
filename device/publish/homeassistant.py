"""Home Assistant MQTT discovery: one device with the room's and the largest face's emotion,
per-emotion room probabilities, an event entity and diagnostics.

Device-based discovery (Home Assistant 2024.11 or later): one retained payload on
`<ha_prefix>/device/emotion_edge_<id>/config` holds the device, the origin and every
component, so the device appears at once and whole. The entities read the daemon's own
topics, nothing is published for Home Assistant alone:

  state  (retained)  room: emotion (enum), confidence %, one probability % per emotion, and
                     face_count; largest face: emotion (enum), confidence %
  events (QoS 1)     an `event` entity firing appeared / changed / disappeared, with the
                     emotion, confidence, previous emotion and face id as attributes
  stats  (retained)  diagnostics: fps, CPU temperature, model version, spool depth

The room figures are the state payload's `room` object (emotion_edge.track.room, the one
place that computes them). Where a figure does not exist (no face in view, no thermal
sensor) a template renders `None`, which Home Assistant's MQTT sensor takes as "unknown"
rather than a made-up 0 or "neutral".

`announce()` publishes the payload on every connect and subscribes to `<ha_prefix>/status`,
so a Home Assistant that restarts (its birth message `online`) gets it again. It also clears
the two per-entity topics earlier versions published, so an upgraded daemon leaves no
orphaned duplicates.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from emotion_edge import __version__
from emotion_edge.preprocess import FER2013_LABELS
from emotion_edge.publish.base import safe_id

log = logging.getLogger(__name__)

EVENT_TYPES = ("appeared", "changed", "disappeared")
LEGACY_OBJECTS = ("dominant_emotion", "face_count")  # per-entity topics of earlier versions
ORIGIN = {"name": "emotion-edge", "sw_version": __version__}
NONE = "'None'"  # rendered as the string None: Home Assistant's "no value" (state unknown)
ROOM = "value_json.room"
HAS_ROOM = f"{ROOM} is defined and {ROOM}"


@dataclass(frozen=True)
class HaDevice:
    """What Home Assistant shows about the daemon."""

    device_id: str
    name: str = ""  # [device] name; empty: the id
    model_version: str = ""
    labels: tuple[str, ...] = FER2013_LABELS  # the model's labels: the enum sensors' options
    configuration_url: str = ""  # the live view, when [web] listens beyond loopback

    @property
    def node(self) -> str:
        return safe_id(f"emotion_edge_{self.device_id}")


def ha_device_for(cfg, model_version: str, labels: tuple[str, ...]) -> HaDevice:
    """From a validated AppConfig: [device] name, the model, and the live view's address
    (only when it is reachable from elsewhere)."""
    from emotion_edge.config.validate import is_loopback

    url = ""
    web = cfg.web
    # a loopback address would send Home Assistant's user to their own machine: no link then
    if web.enabled and not is_loopback(web.host):
        host = web.host.strip("[]")
        if host in ("0.0.0.0", "::", ""):  # every address: name the machine instead
            host = socket.gethostname()
        url = f"http://{f'[{host}]' if ':' in host else host}:{web.port}/"
    return HaDevice(
        device_id=cfg.device.id,
        name=cfg.device.name,
        model_version=model_version,
        labels=tuple(labels),
        configuration_url=url,
    )


def _pct(expr: str, defined: str) -> str:
    """A 0..1 figure as a percentage with one decimal, or None when `defined` is false."""
    return f"{{{{ (({expr}) * 100) | round(1) if ({defined}) else {NONE} }}}}"


# the largest face (by box area, as state_payload's dominant_emotion), its confidence
LARGEST_CONFIDENCE = (
    "{% set ns = namespace(area=-1, conf=none) %}"
    "{% for f in value_json.faces %}{% if f.box.w * f.box.h > ns.area %}"
    "{% set ns.area = f.box.w * f.box.h %}{% set ns.conf = f.confidence %}"
    "{% endif %}{% endfor %}"
    "{{ (ns.conf * 100) | round(1) if ns.conf is not none else " + NONE + " }}"
)
EVENT_TEMPLATE = (
    "{{ {'event_type': value_json.kind, 'emotion': value_json.emotion, "
    "'confidence': value_json.confidence, 'previous_emotion': value_json.previous_emotion, "
    "'face_id': value_json.face_id, 'event_id': value_json.event_id} | tojson }}"
)


def components(dev: HaDevice, topic: Callable[[str], str]) -> dict[str, dict]:
    """Component configs by object id; the shared state topic is `state`."""
    node, labels = dev.node, list(dev.labels)

    def comp(obj: str, **conf) -> tuple[str, dict]:
        return obj, {"unique_id": f"{node}_{obj}", **conf}

    pct = {"unit_of_measurement": "%", "state_class": "measurement"}
    enum = {"device_class": "enum", "options": labels}
    items = [
        comp(
            "room_emotion",
            platform="sensor",
            name="Room emotion",
            icon="mdi:emoticon-outline",
            value_template=f"{{{{ {ROOM}.emotion if {HAS_ROOM}.emotion else {NONE} }}}}",
            **enum,
        ),
        comp(
            "room_confidence",
            platform="sensor",
            name="Room confidence",
            icon="mdi:percent",
            value_template=_pct(f"{ROOM}.confidence", f"{HAS_ROOM}.confidence is not none"),
            suggested_display_precision=0,
            **pct,
        ),
        comp(
            "face_count",
            platform="sensor",
            name="Face count",
            icon="mdi:account-group",
            state_class="measurement",
            unit_of_measurement="faces",
            value_template="{{ value_json.face_count }}",
        ),
        comp(
            "largest_face_emotion",
            platform="sensor",
            name="Largest face emotion",
            icon="mdi:face-recognition",
            value_template=f"{{{{ value_json.dominant_emotion or {NONE} }}}}",
            **enum,
        ),
        comp(
            "largest_face_confidence",
            platform="sensor",
            name="Largest face confidence",
            icon="mdi:percent",
            value_template=LARGEST_CONFIDENCE,
            suggested_display_precision=0,
            **pct,
        ),
    ]
    for lab in labels:
        items.append(
            comp(
                f"room_{lab}",
                platform="sensor",
                name=f"Room {lab}",
                icon="mdi:chart-bar",
                value_template=_pct(
                    f"{ROOM}.probabilities.{lab}",
                    f"{HAS_ROOM}.probabilities.{lab} is defined",
                ),
                suggested_display_precision=0,
                **pct,
            )
        )
    items.append(
        comp(
            "emotion_event",
            platform="event",
            name="Emotion event",
            icon="mdi:bell-ring-outline",
            state_topic=topic("events"),
            event_types=list(EVENT_TYPES),
            value_template=EVENT_TEMPLATE,
        )
    )
    diag = {"entity_category": "diagnostic", "state_topic": topic("stats")}
    items += [
        comp(
            "fps",
            platform="sensor",
            name="Frame rate",
            icon="mdi:speedometer",
            unit_of_measurement="fps",
            state_class="measurement",
            value_template="{{ value_json.fps }}",
            **diag,
        ),
        comp(
            "cpu_temperature",
            platform="sensor",
            name="CPU temperature",
            device_class="temperature",
            unit_of_measurement="°C",
            state_class="measurement",
            value_template=(
                "{{ value_json.cpu_temp_c if value_json.cpu_temp_c is not none else " + NONE + " }}"
            ),
            **diag,
        ),
        comp(
            "model",
            platform="sensor",
            name="Model",
            icon="mdi:brain",
            value_template="{{ value_json.model_version }}",
            **diag,
        ),
        comp(
            "spool_depth",
            platform="sensor",
            name="Event spool depth",
            icon="mdi:tray-full",
            unit_of_measurement="events",
            state_class="measurement",
            value_template=(
                "{{ value_json.mqtt.spool_depth if value_json.mqtt else " + NONE + " }}"
            ),
            **diag,
        ),
    ]
    return dict(items)


def discovery_payload(dev: HaDevice, topic: Callable[[str], str]) -> dict:
    """The device-based discovery payload (full key names; HA also accepts abbreviations)."""
    device = {
        "identifiers": [dev.node],
        "name": dev.name or dev.device_id,
        "manufacturer": "emotion-edge",
        "model": "emotion-edge daemon",
        "sw_version": __version__ + (f" (model {dev.model_version})" if dev.model_version else ""),
    }
    if dev.configuration_url:
        device["configuration_url"] = dev.configuration_url
    return {
        "device": device,
        "origin": dict(ORIGIN),
        "components": components(dev, topic),
        "state_topic": topic("state"),
        "availability": [
            {
                "topic": topic("availability"),
                # `stopped` and `offline` both mean unavailable to Home Assistant
                "value_template": "{{ 'online' if value == 'online' else 'offline' }}",
            }
        ],
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": 1,
    }


def discovery_configs(
    dev: HaDevice, topic: Callable[[str], str], ha_prefix: str
) -> dict[str, dict | None]:
    """Retained payloads by topic: the device's, and None (clear) for the legacy topics."""
    # the legacy topics first: HA drops the old entities before the device brings new ones
    out: dict[str, dict | None] = {
        f"{ha_prefix}/sensor/{dev.node}/{obj}/config": None for obj in LEGACY_OBJECTS
    }
    out[f"{ha_prefix}/device/{dev.node}/config"] = discovery_payload(dev, topic)
    return out


def announce(client, dev: HaDevice, topic: Callable[[str], str], ha_prefix: str) -> None:
    """On every connect (paho's network thread): publish the discovery payload and listen
    for Home Assistant's birth message to publish it again."""
    status = f"{ha_prefix}/status"

    def on_status(client, userdata, msg) -> None:
        if msg.payload.strip().lower() == b"online":
            log.info("MQTT: Home Assistant is online (%s): discovery published again", status)
            _publish(client, dev, topic, ha_prefix, clear_legacy=False)

    client.message_callback_add(status, on_status)
    client.subscribe(status, qos=1)
    _publish(client, dev, topic, ha_prefix, clear_legacy=True)


def _publish(client, dev, topic, ha_prefix: str, clear_legacy: bool) -> None:
    for t, payload in discovery_configs(dev, topic, ha_prefix).items():
        if payload is None:
            if clear_legacy:
                client.publish(t, b"", qos=1, retain=True)
            continue
        client.publish(t, json.dumps(payload, separators=(",", ":")), qos=1, retain=True)
