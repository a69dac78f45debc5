"""Moving queued events to the broker and PUBACKs back to the queue.

`SpoolSender.send_pass()` is one pass of the sender thread: it applies the PUBACKs paho
reported, retries a failing spool, and hands up to `SEND_WINDOW` unacknowledged events to paho,
oldest first. PUBACKs are handled in the sender thread, not in paho's callback, because paho
calls on_publish while holding its message mutex, which publish() needs too: mapping a mid to
its event here, right after publish() returns, avoids both a deadlock and a PUBACK that
arrives before its mid is known.

Events already handed to paho are not handed again after a reconnect: paho re-sends its
unacknowledged messages itself (same mid, so the PUBACK still finds the event). After a daemon
restart the whole spool goes out afresh.

MQTT 5 reason codes decide what a PUBACK means: a failure is a refusal (counted in
events_rejected, one ERROR naming the topic and reason, not retried), except "quota exceeded"
(paused, retried). 0x10 "no matching subscribers" counts as delivered unless
`require_subscriber` is on: then the event stays queued and goes out again, one at a time with
a doubling pause, until a subscriber takes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from emotion_edge.config import MqttConfig
from emotion_edge.publish.mqtt.client import LinkState, PahoConnection
from emotion_edge.publish.mqtt.ledger import DeliveryLedger
from emotion_edge.publish.mqtt.storage import SpoolStorage

log = logging.getLogger(__name__)

# events handed to paho and not yet acknowledged; more wait in the spool, not in paho's memory
SEND_WINDOW = 100
_RC_QUOTA_EXCEEDED = 0x97  # PUBACK: try again later
_RC_NOT_AUTHORIZED = 0x87
RC_NO_MATCHING_SUBSCRIBERS = 0x10  # PUBACK: accepted, but nobody subscribed to the topic
_QUOTA_PAUSE_S = 5.0
# require_subscriber: first and longest pause before sending again to a topic nobody reads
_NO_SUBSCRIBER_RETRY_MIN_S, _NO_SUBSCRIBER_RETRY_MAX_S = 0.5, 10.0


class SpoolSender:
    """Queued events to paho within a window; PUBACKs to deletions; see the module docstring.

    `handed` (shared with the storage) holds the event ids paho has; `topic(name)` is the
    full topic of `name` under the device's prefix.
    """

    def __init__(
        self,
        cfg: MqttConfig,
        connection: PahoConnection,
        ledger: DeliveryLedger,
        storage: SpoolStorage,
        link: LinkState,
        handed: set[str],
        topic: Callable[[str], str],
    ):
        self.cfg = cfg
        self.connection = connection
        self.client = connection.client
        self.client_id = connection.client_id
        self.ledger = ledger
        self.lock = ledger.lock
        self.storage = storage
        self.link = link
        self.handed = handed
        self.topic = topic
        self.inflight: dict[int, str] = {}  # paho mid -> event_id, until PUBACK
        self.acks: list[tuple[int, Any]] = []  # (mid, reason code) from paho, for the sender
        self.other_mids: dict[int, str] = {}  # mid -> topic name of retained publishes
        self._pause_until = 0.0
        self._refusals_logged: set[str] = set()
        self._no_subscriber_streak = 0

    def on_puback(self, mid: int, reason_code: Any) -> None:
        with self.lock:
            self.acks.append((mid, reason_code))
            self.lock.notify_all()

    def note_other(self, mid: int, name: str) -> None:
        """A retained payload (`name`) went out as `mid`: its PUBACK is not an event's."""
        with self.lock:
            if len(self.other_mids) > 1000:  # acks that came before we noted the mid
                self.other_mids.clear()
            self.other_mids[mid] = name

    def take_acks(self) -> list[tuple[int, Any]]:
        with self.lock:
            acks, self.acks = self.acks, []
            return acks

    def send_pass(self) -> bool:
        """One pass of the sender thread; False when it is time to end."""
        now = time.monotonic()
        with self.lock:
            acks, self.acks = self.acks, []
            if self.link.stopping and not acks:
                return False
        if acks:
            self.process_acks(acks)
            return True
        self.storage.maintenance(now)
        self.ledger.flush_tally(now)
        batch = self.next_batch(now)
        handed = self.hand_over(batch) if batch else 0
        if not handed:
            with self.lock:
                if not self.acks and not self.link.stopping:
                    self.lock.wait(0.5)
        with self.lock:
            self.ledger.errors["sender"] = ""
        return True

    def next_batch(self, now: float) -> list[tuple[str, str]]:
        """Up to the free window of queued events, oldest first (the spool, then memory),
        marked as handed under the same lock so nothing drops them meanwhile."""
        with self.lock:
            if not self.link.connected or self.link.stopping or now < self._pause_until:
                return []
            window = 1 if self.ledger.waiting_subscriber else SEND_WINDOW
            room = window - len(self.inflight)
            if room <= 0:
                return []
            batch = self.storage.oldest(room)
            self.handed.update(e for e, _ in batch)
            return batch

    def hand_over(self, batch: list[tuple[str, str]]) -> int:
        topic, qos = self.topic("events"), self.cfg.qos_events
        handed = 0
        for i, (event_id, text) in enumerate(batch):
            with self.lock:
                if not self.link.connected or self.link.stopping:
                    self.handed.difference_update(e for e, _ in batch[i:])
                    break
            # not under our lock: see the module docstring
            info = self.client.publish(topic, text, qos=qos)
            with self.lock:
                if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
                    # paho did not take it: it stays queued for the next pass
                    self.handed.discard(event_id)
                    err = f"publish failed: {paho.error_string(info.rc)}"
                else:
                    self.inflight[info.mid] = event_id
                    self.ledger.counts["events_published"] += 1
                    handed += 1
                    err = ""
            if err:
                self.connection.set_error(err)
        return handed

    def process_acks(self, acks: list[tuple[int, Any]]) -> None:
        # one critical section, so flush() and stats() never see a half-applied PUBACK
        if not acks:
            return
        with self.lock:
            now = time.monotonic()
            done: list[str] = []
            counts = self.ledger.counts
            for mid, rc in acks:
                event_id = self.inflight.pop(mid, None)
                failed = bool(getattr(rc, "is_failure", False))
                if event_id is None:  # availability / state / stats / discovery / timeline
                    name = self.other_mids.pop(mid, None)
                    if failed and name and name not in self._refusals_logged:
                        self._refusals_logged.add(name)
                        log.error(
                            "MQTT: the broker refused the %s payload on %s: %s",
                            name,
                            self.topic(name),
                            rc,
                        )
                    continue
                self.handed.discard(event_id)
                if failed and getattr(rc, "value", None) == _RC_QUOTA_EXCEEDED:
                    # the broker asks us to slow down: keep the event, send again later
                    self._pause_until = now + _QUOTA_PAUSE_S
                    self.ledger.errors["broker"] = (
                        f"broker quota exceeded; pausing {_QUOTA_PAUSE_S:g} s"
                    )
                    continue
                no_subscriber = getattr(rc, "value", None) == RC_NO_MATCHING_SUBSCRIBERS
                if no_subscriber and self.cfg.require_subscriber:
                    self._no_subscriber(event_id, now)
                    continue
                if failed:
                    counts["events_rejected"] += 1
                    self._note_refusal(event_id, rc)
                else:
                    counts["events_acked"] += 1
                    counts["acked_no_subscriber"] += no_subscriber
                    self.ledger.errors["broker"] = ""
                    if self.ledger.waiting_subscriber:
                        self._subscriber_back()
                done.append(event_id)
            self.storage.settled(done)
            self.lock.notify_all()

    def _no_subscriber(self, event_id: str, now: float) -> None:
        """PUBACK 0x10 with require_subscriber: the event stays queued (it was never handed to
        anyone) and goes out again after a pause that doubles while nobody subscribes."""
        self.ledger.counts["no_subscriber_retries"] += 1
        first = not self.ledger.waiting_subscriber
        self.ledger.waiting_subscriber.add(event_id)
        if now < self._pause_until:
            return  # one more answer from the batch that was in flight: same pause
        self._no_subscriber_streak += 1
        delay = min(
            _NO_SUBSCRIBER_RETRY_MAX_S,
            _NO_SUBSCRIBER_RETRY_MIN_S * 2 ** min(self._no_subscriber_streak - 1, 10),
        )
        self._pause_until = now + delay
        self.ledger.errors["broker"] = (
            f"no subscriber on {self.topic('events')} (MQTT reason 0x10, no matching "
            f"subscribers): events stay in the spool, retrying every {delay:g} s"
        )
        if first:
            log.warning(
                "MQTT: the broker has no subscriber for %s (PUBACK reason 0x10, no matching "
                "subscribers; a broker without persistence forgets the recorder's session when "
                "it restarts): events stay in the spool and are sent again with backoff "
                "(require_subscriber = true)",
                self.topic("events"),
            )

    def _subscriber_back(self) -> None:
        """A PUBACK without 0x10: someone subscribes again; send at full speed."""
        waited = len(self.ledger.waiting_subscriber)
        self.ledger.waiting_subscriber.clear()
        self._no_subscriber_streak = 0
        self._pause_until = 0.0
        log.info(
            "MQTT: a subscriber for %s is back; sending the %d event(s) that waited for it",
            self.topic("events"),
            waited,
        )

    def _note_refusal(self, event_id: str, rc: Any) -> None:
        reason = str(rc)
        self.ledger.errors["broker"] = (
            f"the broker refused events on {self.topic('events')}: {reason} "
            "(counted in events_rejected, not retried)"
        )
        if reason not in self._refusals_logged:
            self._refusals_logged.add(reason)
            hint = ""
            if getattr(rc, "value", None) == _RC_NOT_AUTHORIZED:
                hint = f" (check the broker's ACL for client {self.client_id!r}"
                hint += f" / user {self.cfg.username!r})" if self.cfg.username else ")"
            log.error(
                "MQTT: the broker refused event %s on %s: %s%s; such events are counted in "
                "stats mqtt.events_rejected and not sent again",
                event_id,
                self.topic("events"),
                reason,
                hint,
            )
            return
        self.ledger.note(f"refused by the broker ({reason})", 1, log_first=False)
