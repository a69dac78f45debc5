"""`MqttPublisher`: what the pipeline calls (the `Output` protocol), wired from the parts of
this package, and the sender thread that runs `SpoolSender` passes. The guarantees are in the
package docstring."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any

import paho.mqtt.client as paho
from emotion_edge.config import MqttConfig
from emotion_edge.errors import ConfigError
from emotion_edge.publish.base import safe_id
from emotion_edge.publish.homeassistant import HaDevice, announce
from emotion_edge.publish.mqtt.client import (
    AVAILABILITY_ONLINE,
    AVAILABILITY_STOPPED,
    LinkState,
    PahoConnection,
)
from emotion_edge.publish.mqtt.ledger import DeliveryLedger
from emotion_edge.publish.mqtt.sender import SpoolSender
from emotion_edge.publish.mqtt.storage import SpoolStorage
from emotion_edge.publish.mqtt.timeline import TimelineSender

log = logging.getLogger(__name__)

_TOPIC_PART_RE = re.compile(r"^[^#+\x00]+$")
# a sender thread that has not passed its loop for this long is stuck (the watchdog is 30 s)
SENDER_STUCK_S = 20.0


def _json(payload: dict) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


class MqttPublisher:
    """Publishes the daemon's payloads; see the package docstring for topics and guarantees.

    `start()` returns at once; paho connects and reconnects (with backoff) in its own thread,
    and a sender thread moves queued events to the broker whenever it is connected. No method
    raises because the broker is away, refuses us or the disk fails: the error is logged and
    shown in `stats()["last_error"]`. `healthy()` is False once the sender thread died or is
    stuck, so the pipeline stops feeding the systemd watchdog and the daemon is restarted.
    """

    broken = False  # a broker that is away is not broken: events wait in the spool

    def __init__(self, cfg: MqttConfig, device_id: str, model_version: str = ""):
        if not device_id or not _TOPIC_PART_RE.match(device_id) or "/" in device_id:
            raise ConfigError(f"device.id: {device_id!r} cannot be part of an MQTT topic")
        self.cfg = cfg
        self.device_id = device_id
        self.model_version = model_version
        self.client_id = cfg.client_id or f"emotion-edge-{device_id}"
        # what Home Assistant discovery shows (app.py sets it from the whole config)
        self.ha_device = HaDevice(device_id, model_version=model_version)

        self._lock = threading.Condition()  # an RLock inside: reentrant; shared by the parts
        self._link = LinkState()
        self._ledger = DeliveryLedger(self._lock)
        self._retained: dict[str, str] = {}  # latest state / stats JSON, re-sent on connect
        self._beat = time.monotonic()
        self._sender_dead = ""
        self._unhealthy_logged = False
        self._sender: threading.Thread | None = None
        handed: set[str] = set()  # event ids paho holds (it re-sends them itself)
        spool_path = cfg.resolved_spool_dir() / f"{safe_id(device_id)}.sqlite3"
        self._storage = SpoolStorage(cfg, spool_path, self._ledger, handed)
        self.spool = self._storage.spool
        self._storage.open()
        self._conn = PahoConnection(
            cfg,
            self.client_id,
            device_id,
            self.topic("availability"),
            self._ledger,
            self._link,
            self,
        )
        self._client = self._conn.client
        self._out = SpoolSender(
            cfg, self._conn, self._ledger, self._storage, self._link, handed, self.topic
        )
        self._timeline = TimelineSender(
            cfg,
            spool_path.with_name(f"{spool_path.stem}.timeline.sqlite3"),
            self._client,
            self._ledger,
            self._link,
            self.topic("timeline"),
        )

    # -- public API ------------------------------------------------------------------------

    def topic(self, name: str) -> str:
        return f"{self.cfg.topic_prefix}/{self.device_id}/{name}"

    def start(self) -> None:
        """Connect in the background; returns immediately."""
        if self._link.started:
            return
        self._link.started = True
        cfg = self.cfg
        log.info(
            "MQTT: connecting to %s:%d as %s (MQTT %s, tls=%s), topics %s/#, %d spooled event(s)",
            cfg.host,
            cfg.port,
            self.client_id,
            cfg.protocol,
            cfg.tls,
            self.topic("").rstrip("/"),
            self.spool.depth(),
        )
        self._conn.start()
        with self._lock:
            self._beat = time.monotonic()
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)
        self._sender.start()

    def publish_event(self, payload: dict, id_key: str = "event_id") -> None:
        """Queue the event (durably when the disk allows) for the sender to deliver with QoS
        `qos_events`. Never raises for a storage fault: the event waits in memory instead.
        `id_key`: the payload's unique id field (emotion_edge_study's markers: marker_id)."""
        event_id = payload.get(id_key)
        if not isinstance(event_id, str) or not event_id:
            raise ValueError(f"payload needs a non-empty string {id_key!r}")
        with self._lock:
            self._storage.add(event_id, _json(payload))
            self._lock.notify_all()

    def publish_state(self, payload: dict) -> None:
        self._publish_retained("state", _json(payload))

    def publish_stats(self, payload: dict) -> None:
        self._publish_retained("stats", _json(payload))

    def publish_timeline(self, payload: dict) -> None:
        """A timeline sample to `<prefix>/<id>/timeline`, QoS 1, spooled like events
        (`emotion_edge.publish.mqtt.timeline`). Counts: stats() timeline_*."""
        self._timeline.publish(str(payload["sample_id"]), _json(payload))

    def stats(self) -> dict:
        """The publisher's figures (stats payload `mqtt`); the ledger terms are consistent
        with each other at every moment (one lock)."""
        with self._lock:
            out: dict[str, Any] = {"connected": self._link.connected, **self._ledger.counts}
            out["last_error"] = self._ledger.error_text()
            out["spool_depth"] = self._storage.spool_depth()
            out["spool_dropped"] = self.spool.dropped
            out["memory_queue"] = self._storage.in_memory()
            out["waiting_for_subscriber"] = len(self._ledger.waiting_subscriber)
            out["storage_error"] = self._ledger.errors["storage"]
            out["spool_quarantined"] = list(self.spool.quarantined)
            out["protocol"] = self.cfg.protocol
            out["healthy"] = self._health_problem() == ""
        return out

    def ledger(self) -> dict[str, int]:
        """created + carried_over == delivered + rejected + dropped + queued, exactly."""
        with self._lock:
            c = self._ledger.counts
            memory = self._storage.in_memory()
            return {
                "created": c["events_created"],
                "carried_over": c["events_carried_over"],
                "delivered": c["events_acked"],
                "rejected": c["events_rejected"],
                "dropped": c["events_dropped"],
                "queued": self._storage.spool_depth() + memory,
                "in_memory": memory,
            }

    def ledger_text(self) -> str:
        g = self.ledger()
        return (
            f"{g['created']} created + {g['carried_over']} from an earlier run = "
            f"{g['delivered']} delivered + {g['rejected']} rejected by the broker + "
            f"{g['dropped']} dropped + {g['queued']} queued ({g['in_memory']} in memory)"
        )

    def delivery_summary(self) -> str:
        return f"MQTT events: {self.ledger_text()}"

    def connected(self) -> bool:
        with self._lock:
            return self._link.connected

    def healthy(self) -> bool:
        """False when the sender thread died or is stuck: delivery would stop for good, so the
        pipeline stops pinging the systemd watchdog and the daemon gets restarted."""
        with self._lock:
            problem = self._health_problem()
            if problem and not self._unhealthy_logged:
                self._unhealthy_logged = True
                log.error("MQTT: %s; events are no longer delivered", problem)
            elif not problem:
                self._unhealthy_logged = False
        return not problem

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected (True) or `timeout` seconds pass (False)."""
        with self._lock:
            return self._lock.wait_for(lambda: self._link.connected, timeout)

    def flush(self, timeout: float) -> bool:
        """Wait until nothing is queued (True) or the broker is away / time is up (False)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._storage.queued() > 0:
                left = deadline - time.monotonic()
                if left <= 0 or not self._link.connected:
                    return False
                self._lock.wait(min(left, 0.1))
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Flush what the broker takes within `timeout`, publish `stopped`, disconnect cleanly.

        Events still unacknowledged stay in the spool for the next start.
        """
        if self._link.stopping:
            return
        deadline = time.monotonic() + timeout
        flushed = True
        if self._link.started:
            flushed = self.flush(timeout * 0.8)
            with self._lock:
                self._link.stopping = True
                connected = self._link.connected
                self._lock.notify_all()
            if self._sender is not None:
                self._sender.join(max(0.1, deadline - time.monotonic()))
            if connected:
                info = self._client.publish(
                    self.topic("availability"), AVAILABILITY_STOPPED, qos=1, retain=True
                )
                try:
                    info.wait_for_publish(max(0.1, deadline - time.monotonic()))
                except (RuntimeError, ValueError) as exc:
                    log.warning("MQTT: could not publish 'stopped': %s", exc)
            self._conn.stop()
            # PUBACKs that came after the sender thread ended
            self._out.process_acks(self._out.take_acks())
        else:
            with self._lock:
                self._link.stopping = True
        self._storage.final()
        with self._lock:
            self._link.connected = False
            left = self._storage.spool_depth()
        self._ledger.flush_tally(time.monotonic(), force=True)
        if left:
            log.warning(
                "MQTT: stopped with %d unacknowledged event(s) kept in %s (sent at next start)%s",
                left,
                self.spool.path,
                "" if flushed else "; broker unreachable or too slow",
            )
        self.spool.close()
        self._timeline.close()

    # -- ConnectionListener: what the connection tells us ------------------------------------

    def on_accepted(self, client: paho.Client) -> None:
        client.publish(self.topic("availability"), AVAILABILITY_ONLINE, qos=1, retain=True)
        if self.cfg.ha_discovery:
            announce(client, self.ha_device, self.topic, self.cfg.ha_prefix)

    def on_ready(self, client: paho.Client) -> None:
        # re-send what came while we were away (a rare duplicate of a retained payload is
        # harmless, a gap would not be)
        with self._lock:
            retained = dict(self._retained)
        for name, text in retained.items():
            client.publish(self.topic(name), text, qos=1, retain=True)

    def on_puback(self, mid: int, reason_code: Any) -> None:
        self._timeline.on_puback(mid, reason_code)
        self._out.on_puback(mid, reason_code)

    # -- internals -----------------------------------------------------------------------------

    def _publish_retained(self, name: str, text: str) -> None:
        with self._lock:
            self._retained[name] = text
            connected = self._link.connected and not self._link.stopping
        if connected:
            info = self._client.publish(self.topic(name), text, qos=1, retain=True)
            self._out.note_other(info.mid, name)

    def _send_loop(self) -> None:
        """The sender thread: `_send_pass()` until stopped (emotion_edge.publish.mqtt.sender).
        No exception ends the thread (a bug is logged and retried after a pause); if it ends
        anyway, healthy() says so."""
        try:
            while True:
                try:
                    if not self._send_pass():
                        return
                except Exception as exc:  # noqa: BLE001 - delivery must go on
                    with self._lock:
                        self._ledger.errors["sender"] = f"sender: {type(exc).__name__}: {exc}"
                    log.exception("MQTT: sender pass failed; retrying in 1 s")
                    with self._lock:
                        if self._link.stopping:
                            return
                        self._lock.wait(1.0)
        except BaseException as exc:
            with self._lock:
                self._sender_dead = f"the mqtt-sender thread died ({type(exc).__name__}: {exc})"
            log.exception("MQTT: the mqtt-sender thread died")
            raise

    def _send_pass(self) -> bool:
        with self._lock:
            self._beat = time.monotonic()
        return self._out.send_pass()

    def _health_problem(self) -> str:
        if not self._link.started or self._link.stopping:
            return ""
        if self._sender_dead:
            return self._sender_dead
        if self._sender is not None and not self._sender.is_alive():
            return "the mqtt-sender thread ended"
        stuck = time.monotonic() - self._beat
        if stuck > SENDER_STUCK_S:
            return f"the mqtt-sender thread is stuck (no pass for {stuck:.0f} s)"
        return ""
