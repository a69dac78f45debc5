"""Where the study's markers go: the broker (spooled, at least once) or a recording database.

`MqttMarkerSink` is the daemon's own MQTT publisher (emotion_edge.publish.mqtt) with its
event path pointed at `<prefix>/<device>/markers`: every marker is written to an on-disk
spool before it is sent and deleted only when the broker's PUBACK arrives, so a broker that
restarts mid-session loses nothing (markers wait and go out after the reconnect, oldest
first; a re-sent one keeps its marker_id and the recorder stores it once). The player is not
the device: its presence goes to `<prefix>/<device>/study/availability`, never to the
daemon's availability topic, it has its own client id (no session takeover fight with the
daemon) and its own spool folder.

`WriterMarkerSink` hands markers to the recorder's Writer in this process (`--db`), through
the same checks as messages from the broker.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from typing import Protocol

from emotion_edge.config.tables import MqttConfig
from emotion_edge.publish.mqtt import MqttPublisher

log = logging.getLogger(__name__)

# daemon topic name -> the study's topic name under <prefix>/<device>/
_STUDY_TOPICS = {"events": "markers", "availability": "study/availability"}


class MarkerSink(Protocol):
    def start(self) -> None: ...
    def send(self, marker: dict) -> None: ...
    def stats(self) -> dict: ...
    def close(self, timeout: float = 5.0) -> None: ...


class MarkerPublisher(MqttPublisher):
    """The daemon's spooled publisher, carrying markers instead of events."""

    def topic(self, name: str) -> str:
        name = _STUDY_TOPICS.get(name, f"study/{name}")
        return f"{self.cfg.topic_prefix}/{self.device_id}/{name}"


def study_mqtt_config(cfg: MqttConfig, device_id: str) -> MqttConfig:
    """The daemon's broker settings for the player: its own client id and spool folder."""
    spool = cfg.resolved_spool_dir() / "study"
    return replace(
        cfg,
        enabled=True,
        client_id=f"emotion-edge-study-{device_id}"[:64],
        spool_dir=str(spool),
        ha_discovery=False,
    )


class MqttMarkerSink:
    def __init__(self, cfg: MqttConfig, device_id: str):
        self.publisher = MarkerPublisher(study_mqtt_config(cfg, device_id), device_id)
        self.where = f"mqtt://{cfg.host}:{cfg.port} {self.publisher.topic('events')}"

    def start(self) -> None:
        self.publisher.start()

    def send(self, marker: dict) -> None:
        self.publisher.publish_event(marker, id_key="marker_id")

    def stats(self) -> dict:
        st = self.publisher.stats()
        return {
            "connected": st.get("connected"),
            "markers_created": st.get("events_created", 0),
            "markers_acked": st.get("events_acked", 0),
            "queued": st.get("spool_depth", 0),
            "last_error": st.get("last_error", ""),
        }

    def close(self, timeout: float = 5.0) -> None:
        self.publisher.stop(timeout)


class WriterMarkerSink:
    """Markers straight into a recorder Writer (the --db mode)."""

    def __init__(self, writer):
        self.writer = writer
        self.where = f"database {writer.store.url}"
        self.sent = 0

    def start(self) -> None:
        pass

    def send(self, marker: dict) -> None:
        from emotion_edge_record.ingest import Pending

        self.writer.submit(Pending(json.dumps(marker), None, None, time.time()))
        self.sent += 1

    def stats(self) -> dict:
        return {"markers_sent": self.sent, **self.writer.stats.as_dict()}

    def close(self, timeout: float = 5.0) -> None:
        self.writer.wait_idle(timeout)
