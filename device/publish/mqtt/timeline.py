"""Timeline samples over MQTT, spooled on their own (`<spool>/<id>.timeline.sqlite3`).

Independent of the event sender: each sample is stored (bounded by spool_max_events, drops
counted and logged) until its PUBACK, and each call hands waiting samples to paho (which
re-sends its unacknowledged ones after a reconnect) and deletes those paho reports delivered.
A sample left unacknowledged at stop is sent again at the next start with the same
`sample_id` (consumers de-duplicate). A spool that cannot be written (full or failing disk)
loses the sample, counted in timeline_lost and logged once a minute.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import paho.mqtt.client as paho
from emotion_edge.config import MqttConfig
from emotion_edge.publish.mqtt.client import LinkState
from emotion_edge.publish.mqtt.ledger import DeliveryLedger
from emotion_edge.publish.mqtt.sender import SEND_WINDOW
from emotion_edge.publish.spool import STORAGE_ERRORS, EventSpool

log = logging.getLogger(__name__)


class TimelineSender:
    """Spools and sends timeline samples; the spool file is made on first use only."""

    def __init__(
        self,
        cfg: MqttConfig,
        path: Path,
        client: paho.Client,
        ledger: DeliveryLedger,
        link: LinkState,
        topic: str,
    ):
        self.cfg = cfg
        self.path = path
        self.client = client
        self.ledger = ledger
        self.lock = ledger.lock
        self.link = link
        self.topic = topic
        self.spool: EventSpool | None = None
        self.handed: dict[str, paho.MQTTMessageInfo] = {}  # sample id -> paho's handle
        self._logged = 0.0  # when the last "sample lost" ERROR was logged

    def publish(self, sample_id: str, text: str) -> None:
        spool = self.spool
        try:
            if spool is None:
                spool = self.spool = EventSpool(self.path, self.cfg.spool_max_events)
            handed = self.handed
            dropped = spool.put(sample_id, text)
            acked = [sid for sid, info in handed.items() if info.is_published()]
            for sid in [*dropped, *acked]:
                handed.pop(sid, None)
                spool.ack(sid)
        except STORAGE_ERRORS as exc:
            self._count("timeline_lost", 1)
            if spool is None or time.monotonic() - self._logged > 60:
                if spool is not None:
                    self._logged = time.monotonic()
                log.error("MQTT: timeline sample lost, the timeline spool failed: %s", exc)
            return
        with self.lock:
            counts = self.ledger.counts
            counts["timeline_samples"] = counts.get("timeline_samples", 0) + 1
            counts["timeline_acked"] = counts.get("timeline_acked", 0) + len(acked)
            counts["timeline_dropped"] = spool.dropped
            send = self.link.connected and not self.link.stopping
        if dropped:
            log.warning(
                "MQTT: timeline spool full (%d samples): dropped the %d oldest (%d so far)",
                self.cfg.spool_max_events,
                len(dropped),
                spool.dropped,
            )
        if not send:
            return
        for sample in spool.oldest(SEND_WINDOW - len(handed), exclude=set(handed)):
            info = self.client.publish(self.topic, sample.payload, qos=1)
            if info.rc in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
                handed[sample.event_id] = info

    def _count(self, key: str, n: int) -> None:
        with self.lock:
            self.ledger.counts[key] = self.ledger.counts.get(key, 0) + n

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
