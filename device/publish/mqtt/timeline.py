"""Timeline samples over MQTT, spooled on their own (`<spool>/<id>.timeline.sqlite3`).

Independent of the event sender: each sample is stored (bounded by spool_max_events, drops
counted and logged) until its PUBACK, and each call hands waiting samples to paho (which
re-sends its unacknowledged ones after a reconnect) and deletes those paho reports delivered.
A sample left unacknowledged at stop is sent again at the next start with the same
`sample_id` (consumers de-duplicate). A spool that cannot be written (full or failing disk)
loses the sample, counted in timeline_lost and logged once a minute.

With `require_subscriber`, a sample the broker acknowledged with 0x10 ("no matching
subscribers") stays in the spool and is handed to paho again at the next call (the timeline
interval paces the retries), counted in timeline_no_subscriber_retries.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import paho.mqtt.client as paho
from emotion_edge.config import MqttConfig
from emotion_edge.publish.mqtt.client import LinkState
from emotion_edge.publish.mqtt.ledger import DeliveryLedger
from emotion_edge.publish.mqtt.sender import RC_NO_MATCHING_SUBSCRIBERS, SEND_WINDOW
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
        self._mids: set[int] = set()  # paho mids of the samples in `handed`
        self._no_subscriber: set[int] = set()  # of those, answered 0x10 (require_subscriber)

    def on_puback(self, mid: int, reason_code) -> None:
        """paho's thread, before it marks the message published: note a 0x10 answer."""
        if (
            self.cfg.require_subscriber
            and getattr(reason_code, "value", None) == RC_NO_MATCHING_SUBSCRIBERS
            and mid in self._mids
        ):
            self._no_subscriber.add(mid)

    def publish(self, sample_id: str, text: str) -> None:
        spool = self.spool
        try:
            if spool is None:
                spool = self.spool = EventSpool(self.path, self.cfg.spool_max_events)
            handed = self.handed
            dropped = spool.put(sample_id, text)
            answered = [(sid, info) for sid, info in handed.items() if info.is_published()]
            again = [sid for sid, info in answered if info.mid in self._no_subscriber]
            acked = [sid for sid, info in answered if info.mid not in self._no_subscriber]
            for _sid, info in answered:
                self._mids.discard(info.mid)
                self._no_subscriber.discard(info.mid)
            for sid in again:  # nobody got it: stays in the spool, handed again below
                handed.pop(sid, None)
            for sid in [*dropped, *acked]:
                info = handed.pop(sid, None)
                if info is not None:
                    self._mids.discard(info.mid)
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
            if again:
                n = counts.get("timeline_no_subscriber_retries", 0) + len(again)
                counts["timeline_no_subscriber_retries"] = n
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
                self._mids.add(info.mid)
                handed[sample.event_id] = info

    def _count(self, key: str, n: int) -> None:
        with self.lock:
            self.ledger.counts[key] = self.ledger.counts.get(key, 0) + n

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
