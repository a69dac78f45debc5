"""Home Assistant MQTT discovery: a device with two sensors read from the retained `state`."""

from __future__ import annotations

from collections.abc import Callable

from .base import safe_id

_SENSORS = {
    "dominant_emotion": {
        "name": "Dominant emotion",
        "icon": "mdi:emoticon-outline",
        "value_template": "{{ value_json.dominant_emotion or 'none' }}",
    },
    "face_count": {
        "name": "Face count",
        "icon": "mdi:account-group",
        "state_class": "measurement",
        "unit_of_measurement": "faces",
        "value_template": "{{ value_json.face_count }}",
    },
}


def discovery_configs(
    device_id: str, topic: Callable[[str], str], ha_prefix: str, model_version: str = ""
) -> dict[str, dict]:
    """Retained discovery payloads by topic; `topic(name)` gives the device's own topics."""
    node = safe_id(f"emotion_edge_{device_id}")
    device = {
        "identifiers": [node],
        "name": f"emotion-edge {device_id}",
        "manufacturer": "emotion-edge",
        "model": "emotion-edge daemon",
    }
    if model_version:
        device["sw_version"] = f"model {model_version}"
    common = {
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
        "device": device,
    }
    return {
        f"{ha_prefix}/sensor/{node}/{obj}/config": {**conf, "unique_id": f"{node}_{obj}", **common}
        for obj, conf in _SENSORS.items()
    }
