"""MQTT output: availability, events, state and stats under `<prefix>/<device_id>/`.

Topics (docs/mqtt.md):
  availability  retained `online` on every connect, `offline` as Last Will (unclean death),
                `stopped` on a clean shutdown
  events        one JSON object per emotion event, QoS 1 (not retained)
  state         retained snapshot of the faces on screen (latest wins)
  stats         retained runtime figures (latest wins)
  timeline      per-face smoothed probabilities at `timeline_interval_s` (spooled like events)
  homeassistant discovery configs under `ha_prefix` when `ha_discovery` is on
                (`emotion_edge.publish.homeassistant`)

Delivery guarantee for events: **at least once, with ids**. Every event carries a unique
`event_id`; it is written to an on-disk spool (`emotion_edge.publish.spool`) before it is handed to
paho and deleted only when the broker's PUBACK arrives. Events produced while the broker is
unreachable wait in the spool and are sent after reconnect, oldest first; events that were
in flight when the connection dropped are re-sent, so a consumer may see an id twice and
should de-duplicate on `event_id`. The spool survives a daemon restart. It is bounded: past
`spool_max_events` the oldest events are dropped, counted in `stats()["spool_dropped"]` and
logged as a WARNING (the first at once, later ones summarized once a minute).

Storage faults (a full or failing disk) never stop delivery: an event that cannot be written
waits in a bounded memory queue (`memory_queue_events`), is sent from there while the broker
is up, and moves to the spool once it is writable again (retried with backoff); the fault is
one ERROR naming the spool file and the error, and `stats()["storage_error"]`. A spool file
that is not a database is renamed aside (`*.corrupt-<time>`) and a fresh one started. Every
event is accounted for at every moment (`ledger()`):

    created + carried over = delivered + rejected + dropped + queued (spool + memory)

MQTT 5 (the default, `protocol = "5"`): each PUBACK's reason code is checked, so an event the
broker refuses (an ACL that denies the topic, a quota, the payload format) is counted as
rejected with one ERROR naming the topic and the reason, never as delivered; a quota refusal
is retried later. A broker that hands our session to another client with the same client id
(reason 0x8E: two devices with one device id) gets one ERROR with the fix and a long backoff
instead of a reconnect fight. With `protocol = "3.1.1"` brokers acknowledge publishes they
refuse, so such events count as delivered and are lost, and a takeover looks like any other
disconnect.

A PUBACK with reason 0x10 ("no matching subscribers") means the broker took the event and
handed it to nobody: no recorder is subscribed (a broker without persistence that restarted
forgets the recorder's persistent session until the recorder reconnects). By default that
counts as delivered (`acked_no_subscriber` counts them); with `require_subscriber = true` the
event stays in the spool and is sent again, one at a time with a doubling pause, until a
subscriber takes it (`waiting_for_subscriber`). docs/mqtt.md says what the broker's settings
mean for loss.

State and stats are not spooled: only the latest of each matters, and it is re-published on
every (re)connect.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from emotion_edge.config import MqttConfig
from emotion_edge.errors import ConfigError
from emotion_edge.publish.base import safe_id
from emotion_edge.publish.homeassistant import HaDevice, announce
from emotion_edge.publish.spool import (
    STORAGE_ERRORS,
    EventSpool,
    describe,
    is_config_error,
    is_corrupt,
)
from emotion_edge.publish.takeover import (
    SHORT_CONNECTIONS_TAKEOVER,
    Takeover,
    TakeoverDetector,
)
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)

AVAILABILITY_ONLINE = "online"
AVAILABILITY_OFFLINE = "offline"  # Last Will: the daemon died without saying goodbye
AVAILABILITY_STOPPED = "stopped"  # clean shutdown

_TOPIC_PART_RE = re.compile(r"^[^#+\x00]+$")

_paho_log = logging.getLogger(__name__ + ".paho")
# events handed to paho and not yet acknowledged; more wait in the spool, not in paho's memory
_SEND_WINDOW = 100
_RC_QUOTA_EXCEEDED = 0x97  # PUBACK: try again later
_RC_NO_MATCHING_SUBSCRIBERS = 0x10  # PUBACK: accepted, but nobody subscribed to the topic
_QUOTA_PAUSE_S = 5.0
# require_subscriber: first and longest pause before sending again to a topic nobody reads
_NO_SUBSCRIBER_RETRY_MIN_S, _NO_SUBSCRIBER_RETRY_MAX_S = 0.5, 10.0
_STORAGE_RETRY_MIN_S, _STORAGE_RETRY_MAX_S = 1.0, 10.0
_SUMMARY_EVERY_S = 60.0  # drops and refusals after the first: one summary line a minute
# a sender thread that has not passed its loop for this long is stuck (the watchdog is 30 s)
SENDER_STUCK_S = 20.0


@dataclass
class _TimelineSpool:
    """The timeline's own spool and the samples handed to paho, by sample id."""

    spool: EventSpool
    handed: dict[str, paho.MQTTMessageInfo] = field(default_factory=dict)
    logged: float = 0.0  # when the last "sample lost" ERROR was logged


def _json(payload: dict) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


class MqttPublisher:
    """Publishes the daemon's payloads; see the module docstring for topics and guarantees.

    `start()` returns at once; paho connects and reconnects (with backoff) in its own thread,
    and a sender thread moves queued events to the broker whenever it is connected. No method
    raises because the broker is away, refuses us or the disk fails: the error is logged and
    shown in `stats()["last_error"]`. `healthy()` is False once the sender thread died or is
    stuck, so the pipeline stops feeding the systemd watchdog and the daemon is restarted.
    """

    def __init__(self, cfg: MqttConfig, device_id: str, model_version: str = ""):
        if not device_id or not _TOPIC_PART_RE.match(device_id) or "/" in device_id:
            raise ConfigError(f"device.id: {device_id!r} cannot be part of an MQTT topic")
        self.cfg = cfg
        self.device_id = device_id
        self.model_version = model_version
        self.client_id = cfg.client_id or f"emotion-edge-{device_id}"

        self._lock = threading.Condition()  # an RLock inside: reentrant
        self._connected = False
        self._stopping = False
        self._started = False
        self._ever_connected = False
        self._inflight: dict[int, str] = {}  # paho mid -> event_id, until PUBACK
        self._handed: set[str] = set()  # event ids paho holds (it re-sends them itself)
        self._acks: list[tuple[int, Any]] = []  # (mid, reason code) from paho, for the sender
        self._other_mids: dict[int, str] = {}  # mid -> topic name of retained publishes
        self._retained: dict[str, str] = {}  # latest state / stats JSON, re-sent on connect
        # events not on disk: the spool could not be written (insertion order = age)
        self._memq: dict[str, str] = {}
        self._undeleted: set[str] = set()  # delivered, but their spool DELETE failed
        self._orphans: set[str] = set()  # in flight from a spool found damaged and reset
        self._stats = {
            "reconnects": 0,
            "events_published": 0,
            "events_acked": 0,
            "events_created": 0,
            "events_carried_over": 0,
            "events_rejected": 0,
            "events_dropped": 0,
            "takeovers": 0,
            "acked_no_subscriber": 0,
            "no_subscriber_retries": 0,
        }
        # require_subscriber: events the broker answered "no matching subscribers", queued
        # again; while any wait, one event at a time probes for the subscriber (backoff)
        self._waiting_subscriber: set[str] = set()
        self._no_subscriber_streak = 0
        self._errors = {"connection": "", "storage": "", "broker": "", "sender": ""}
        self._refused = False  # the broker answered CONNACK with a failure (reported)
        self._paho_error = ""  # paho's last logged error, the detail of a lost connection
        self._storage_failures = 0  # consecutive, drives the retry backoff
        self._storage_retry_at = 0.0
        self._send_pause_until = 0.0
        self._takeover = TakeoverDetector(cfg.takeover_backoff_s)
        self._restore_reconnect_delay = False
        self._refusals_logged: set[str] = set()
        self._tally: dict[str, int] = {}  # "N dropped (why)" since the last summary line
        self._tally_next = 0.0
        self._beat = time.monotonic()
        self._sender_dead = ""
        self._unhealthy_logged = False
        self._sender: threading.Thread | None = None
        self._timeline: _TimelineSpool | None = None

        spool_path = cfg.resolved_spool_dir() / f"{safe_id(device_id)}.sqlite3"
        self.spool = EventSpool(spool_path, cfg.spool_max_events, connect=False)
        try:
            self.spool.open()
        except STORAGE_ERRORS as exc:
            if is_config_error(exc, spool_path.parent):
                raise ConfigError(
                    f"mqtt.spool_dir: cannot open the event spool {spool_path} ({exc})"
                ) from None
            # a full or failing disk: run with the memory queue, retry the spool later
            self._storage_failed("open", exc)
        else:
            self._stats["events_carried_over"] = self.spool.depth()
        self._client = self._make_client()

    # -- public API ------------------------------------------------------------------------

    broken = False  # a broker that is away is not broken: events wait in the spool
    ha_device: HaDevice | None = None  # what Home Assistant shows (app.py sets it)

    def topic(self, name: str) -> str:
        return f"{self.cfg.topic_prefix}/{self.device_id}/{name}"

    def start(self) -> None:
        """Connect in the background; returns immediately."""
        if self._started:
            return
        self._started = True
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
        self._client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        self._client.loop_start()
        with self._lock:
            self._beat = time.monotonic()
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)
        self._sender.start()

    def publish_event(self, payload: dict, id_key: str = "event_id") -> None:
        """Queue the event (durably when the disk allows) for the sender to deliver with QoS
        `qos_events`. Never raises for a storage fault: the event waits in memory instead.
        `id_key`: the payload's unique id field (markers: marker_id, emotion_edge_study)."""
        event_id = payload.get(id_key)
        if not isinstance(event_id, str) or not event_id:
            raise ValueError(f"payload needs a non-empty string {id_key!r}")
        text = _json(payload)
        with self._lock:
            if event_id in self._memq:
                return
            # while events wait in memory, newer ones queue behind them (order is kept)
            if not self._memq and self.spool.is_open and self._storage_due(time.monotonic()):
                try:
                    added, dropped = self.spool.put_many([(event_id, text)], self._handed)
                except STORAGE_ERRORS as exc:
                    self._storage_failed("write", exc)
                    self._memq_add(event_id, text)
                else:
                    self._stats["events_created"] += len(added)
                    self._note_spool_drops(dropped)
                    self._storage_ok()
            else:
                self._memq_add(event_id, text)
            self._lock.notify_all()

    def publish_state(self, payload: dict) -> None:
        self._publish_retained("state", _json(payload))

    def publish_stats(self, payload: dict) -> None:
        self._publish_retained("stats", _json(payload))

    def publish_timeline(self, payload: dict) -> None:
        """A timeline sample to `<prefix>/<id>/timeline`, QoS 1, spooled like events.

        Kept in its own spool file (`<spool>/<id>.timeline.sqlite3`, bounded by
        spool_max_events, drops counted and logged) until its PUBACK, so samples made while
        the broker is away go out after the reconnect, oldest first, and survive a restart.
        Independent of the event sender: each call hands waiting samples to paho (which
        re-sends its unacknowledged ones after a reconnect) and deletes those paho reports
        delivered; one left unacknowledged at stop is sent again at the next start, with the
        same `sample_id` (consumers de-duplicate). A spool that cannot be written (full or
        failing disk) loses the sample, counted in timeline_lost and logged once a minute.
        Counts: stats() timeline_*.
        """
        tl = self._timeline
        try:
            if tl is None:  # created on first use: no file unless the timeline is on
                path = self.spool.path.with_name(f"{self.spool.path.stem}.timeline.sqlite3")
                tl = self._timeline = _TimelineSpool(EventSpool(path, self.cfg.spool_max_events))
            spool, handed = tl.spool, tl.handed
            dropped = spool.put(str(payload["sample_id"]), _json(payload))
            acked = [sid for sid, info in handed.items() if info.is_published()]
            for sid in [*dropped, *acked]:
                handed.pop(sid, None)
                spool.ack(sid)
        except STORAGE_ERRORS as exc:
            with self._lock:
                self._stats["timeline_lost"] = self._stats.get("timeline_lost", 0) + 1
            if tl is None or time.monotonic() - tl.logged > 60:
                if tl is not None:
                    tl.logged = time.monotonic()
                log.error("MQTT: timeline sample lost, the timeline spool failed: %s", exc)
            return
        with self._lock:
            st = self._stats
            st["timeline_samples"] = st.get("timeline_samples", 0) + 1
            st["timeline_acked"] = st.get("timeline_acked", 0) + len(acked)
            st["timeline_dropped"] = spool.dropped
            send = self._connected and not self._stopping
        if dropped:
            log.warning(
                "MQTT: timeline spool full (%d samples): dropped the %d oldest (%d so far)",
                self.cfg.spool_max_events,
                len(dropped),
                spool.dropped,
            )
        if not send:
            return
        for sample in spool.oldest(_SEND_WINDOW - len(handed), exclude=set(handed)):
            info = self._client.publish(self.topic("timeline"), sample.payload, qos=1)
            if info.rc in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
                handed[sample.event_id] = info

    def stats(self) -> dict:
        """The publisher's figures (stats payload `mqtt`); the ledger terms are consistent
        with each other at every moment (one lock)."""
        with self._lock:
            out: dict[str, Any] = {"connected": self._connected, **self._stats}
            out["last_error"] = self._error_text()
            out["spool_depth"] = self.spool.depth() - len(self._undeleted)
            out["spool_dropped"] = self.spool.dropped
            out["memory_queue"] = len(self._memq) + len(self._orphans)
            out["waiting_for_subscriber"] = len(self._waiting_subscriber)
            out["storage_error"] = self._errors["storage"]
            out["spool_quarantined"] = list(self.spool.quarantined)
            out["protocol"] = self.cfg.protocol
            out["healthy"] = self._health_problem() == ""
        return out

    def ledger(self) -> dict[str, int]:
        """created + carried_over == delivered + rejected + dropped + queued, exactly."""
        with self._lock:
            s = self._stats
            spool = self.spool.depth() - len(self._undeleted)
            memory = len(self._memq) + len(self._orphans)
            return {
                "created": s["events_created"],
                "carried_over": s["events_carried_over"],
                "delivered": s["events_acked"],
                "rejected": s["events_rejected"],
                "dropped": s["events_dropped"],
                "queued": spool + memory,
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
            return self._connected

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
            return self._lock.wait_for(lambda: self._connected, timeout)

    def flush(self, timeout: float) -> bool:
        """Wait until nothing is queued (True) or the broker is away / time is up (False)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._queued() > 0:
                left = deadline - time.monotonic()
                if left <= 0 or not self._connected:
                    return False
                self._lock.wait(min(left, 0.1))
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Flush what the broker takes within `timeout`, publish `stopped`, disconnect cleanly.

        Events still unacknowledged stay in the spool for the next start.
        """
        if self._stopping:
            return
        deadline = time.monotonic() + timeout
        flushed = True
        if self._started:
            flushed = self.flush(timeout * 0.8)
            with self._lock:
                self._stopping = True
                connected = self._connected
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
            # a DISCONNECT packet tells the broker to discard the Last Will
            self._client.disconnect()
            self._client.loop_stop()
            with self._lock:
                acks, self._acks = self._acks, []
            self._process_acks(acks)  # PUBACKs that came after the sender thread ended
        else:
            with self._lock:
                self._stopping = True
        self._final_storage()
        with self._lock:
            self._connected = False
            left = self.spool.depth() - len(self._undeleted)
        self._flush_tally(time.monotonic(), force=True)
        if left:
            log.warning(
                "MQTT: stopped with %d unacknowledged event(s) kept in %s (sent at next start)%s",
                left,
                self.spool.path,
                "" if flushed else "; broker unreachable or too slow",
            )
        self.spool.close()
        if self._timeline is not None:
            self._timeline.spool.close()

    # -- internals: the client -----------------------------------------------------------------

    def _make_client(self) -> paho.Client:
        cfg = self.cfg
        if cfg.protocol == "5":
            c = paho.Client(
                CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv5
            )
        else:
            c = paho.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=paho.MQTTv311,
                clean_session=True,
            )
        # no enable_logger(): paho logs every failed reconnect attempt as an ERROR, and we
        # report those ourselves (once, with context); _on_log passes its lines on at DEBUG
        # a bug in one of our callbacks must not kill paho's network thread (it is logged)
        c.suppress_exceptions = True
        # paho's delays are plain arithmetic: fractional seconds work despite its int hints
        c.reconnect_delay_set(
            min_delay=cfg.reconnect_min_s,  # type: ignore[arg-type]
            max_delay=cfg.reconnect_max_s,  # type: ignore[arg-type]
        )
        c.will_set(self.topic("availability"), AVAILABILITY_OFFLINE, qos=1, retain=True)
        if cfg.username:
            c.username_pw_set(cfg.username, cfg.password())
        if cfg.tls:
            c.tls_set(
                ca_certs=cfg.ca_file or None,
                certfile=cfg.cert_file or None,
                keyfile=cfg.key_file or None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
            if cfg.tls_insecure:
                c.tls_insecure_set(True)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_log = self._on_log
        return c

    def _report(self, kind: str, msg: str, level: int = logging.ERROR) -> None:
        # the same failure repeats at every retry: log it loudly once
        with self._lock:
            repeated = msg == self._errors[kind]
            self._errors[kind] = msg
        log.log(logging.DEBUG if repeated else level, "MQTT: %s", msg)

    def _set_error(self, msg: str) -> None:
        self._report("connection", msg)

    def _error_text(self) -> str:
        return "; ".join(e for e in self._errors.values() if e)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        cfg = self.cfg
        if reason_code.is_failure:
            hint = ""
            if reason_code.value in (0x86, 0x87, 4, 5):  # bad user/password, not authorized
                hint = (
                    f" (check mqtt.username and the password from "
                    f"{cfg.password_file or '$' + cfg.password_env})"
                )
            with self._lock:
                self._refused = True
            self._set_error(
                f"broker {cfg.host}:{cfg.port} refused the connection: {reason_code}{hint}"
            )
            return
        log.info("MQTT: connected to %s:%d", cfg.host, cfg.port)
        if self._restore_reconnect_delay:
            self._restore_reconnect_delay = False
            client.reconnect_delay_set(
                min_delay=cfg.reconnect_min_s,  # type: ignore[arg-type]
                max_delay=cfg.reconnect_max_s,  # type: ignore[arg-type]
            )
        client.publish(self.topic("availability"), AVAILABILITY_ONLINE, qos=1, retain=True)
        if cfg.ha_discovery:
            dev = self.ha_device or HaDevice(self.device_id, model_version=self.model_version)
            announce(client, dev, self.topic, cfg.ha_prefix)  # and again on HA's birth message
        # from here on the sender hands events over (after `online`) and publish_state() goes
        # straight out; the copy re-sends what came while we were away (a rare duplicate of
        # a retained payload is harmless, a gap would not be)
        with self._lock:
            if self._ever_connected:
                self._stats["reconnects"] += 1
            self._ever_connected = True
            self._errors["connection"] = ""
            self._connected = True
            self._takeover.connected()
            retained = dict(self._retained)
            self._lock.notify_all()
        for name, text in retained.items():
            client.publish(self.topic(name), text, qos=1, retain=True)

    def _on_connect_fail(self, client, userdata) -> None:
        exc = sys.exc_info()[1]  # paho calls us from inside its `except OSError`
        detail = f"{type(exc).__name__}: {exc}" if exc else "connection failed"
        self._set_error(
            f"cannot connect to {self.cfg.host}:{self.cfg.port}: {detail}; "
            f"retrying (backoff up to {self.cfg.reconnect_max_s:g} s)"
        )

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._lock:
            was, self._connected = self._connected, False
            stopping, refused, self._refused = self._stopping, self._refused, False
            detail, self._paho_error = self._paho_error or str(reason_code), ""
            d = self._takeover.disconnected()
            lived, short = d.lived_s, d.short_in_a_row
            self._lock.notify_all()
        if stopping or refused:  # a refusal was already reported with its reason
            return
        takeover = self._takeover.judge(getattr(reason_code, "value", None), d)
        if takeover is not None:
            self._taken_over(client, takeover)
            return
        where = f"{self.cfg.host}:{self.cfg.port}"
        if was and short:
            # closed right after CONNACK: a WARNING until it repeats (see _taken_over)
            self._report(
                "connection",
                f"disconnected from {where} {lived:.1f} s after the broker accepted us "
                f"({detail}); reconnecting, events go to the spool",
                logging.WARNING,
            )
        elif was:
            self._set_error(
                f"disconnected from {where} ({detail}); reconnecting, events go to the spool"
            )
        else:  # e.g. TLS 1.3 reports a missing client certificate only after the handshake
            self._set_error(f"connection to {where} closed before the broker accepted it: {detail}")

    def _taken_over(self, client, t: Takeover) -> None:
        """Another client connected with our client id: almost always a second device with
        the same device id (a cloned SD card keeps the host name, the default id). Say so
        once, and wait longer each time instead of taking the session back at once."""
        with self._lock:
            self._stats["takeovers"] = t.count
            self._restore_reconnect_delay = True
        delay = t.delay_s
        client.reconnect_delay_set(min_delay=delay, max_delay=delay)  # type: ignore[arg-type]
        where = f"{self.cfg.host}:{self.cfg.port}"
        if t.certain:
            what = (
                f"the broker {where} handed our session to another client with the same "
                f"client id {self.client_id!r} (MQTT reason 0x8E, session taken over)"
            )
        else:
            what = (
                f"the broker {where} closed our connection right after accepting it, "
                f"{SHORT_CONNECTIONS_TAKEOVER} times in a row: most likely another client "
                f"connects with the same client id {self.client_id!r} and takes our session"
            )
        msg = (
            f"{what}; two devices share device id {self.device_id!r} (a cloned SD card keeps "
            "the host name, the default id): set a different [device] id (or [mqtt] client_id) "
            "on each device. Backing off instead of fighting over the session"
        )
        with self._lock:
            self._errors["connection"] = msg
        log.log(logging.ERROR if t.first else logging.DEBUG, "MQTT: %s", msg)
        log.info("MQTT: session taken over (%d time(s)); reconnecting in %g s", t.count, delay)

    def _on_log(self, client, userdata, level, buf) -> None:
        if buf.startswith("Caught exception"):  # a bug in one of our callbacks
            _paho_log.error("%s", buf)
            return
        if level == paho.MQTT_LOG_ERR:
            with self._lock:
                self._paho_error = buf
        # checked here, so the line is not even formatted unless DEBUG is on
        if _paho_log.isEnabledFor(logging.DEBUG):
            _paho_log.debug("%s", buf)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            self._acks.append((mid, reason_code))
            self._lock.notify_all()

    def _publish_retained(self, name: str, text: str) -> None:
        with self._lock:
            self._retained[name] = text
            connected = self._connected and not self._stopping
        if connected:
            info = self._client.publish(self.topic(name), text, qos=1, retain=True)
            with self._lock:
                if len(self._other_mids) > 1000:  # acks that came before we noted the mid
                    self._other_mids.clear()
                self._other_mids[info.mid] = name

    # -- internals: the sender thread ---------------------------------------------------------

    def _send_loop(self) -> None:
        """Hand queued events to paho, oldest first, at most _SEND_WINDOW unacknowledged.

        Also turns PUBACKs into spool deletions and retries a failing spool. PUBACKs are
        handled in this thread because paho calls on_publish while holding its message mutex,
        which publish() needs too: mapping a mid to its event here, right after publish()
        returns, avoids both a deadlock and a PUBACK that arrives before its mid is known.

        Events already handed to paho are not handed again after a reconnect: paho re-sends
        its unacknowledged messages itself (same mid, so the PUBACK still finds the event).
        After a daemon restart the whole spool goes out afresh. No exception ends the thread
        (a bug is logged and retried after a pause); if it ends anyway, healthy() says so.
        """
        try:
            while True:
                try:
                    if not self._send_pass():
                        return
                except Exception as exc:  # noqa: BLE001 - delivery must go on
                    with self._lock:
                        self._errors["sender"] = f"sender: {type(exc).__name__}: {exc}"
                    log.exception("MQTT: sender pass failed; retrying in 1 s")
                    with self._lock:
                        if self._stopping:
                            return
                        self._lock.wait(1.0)
        except BaseException as exc:
            with self._lock:
                self._sender_dead = f"the mqtt-sender thread died ({type(exc).__name__}: {exc})"
            log.exception("MQTT: the mqtt-sender thread died")
            raise

    def _send_pass(self) -> bool:
        now = time.monotonic()
        with self._lock:
            self._beat = now
            acks, self._acks = self._acks, []
            if self._stopping and not acks:
                return False
        if acks:
            self._process_acks(acks)
            return True
        self._storage_maintenance(now)
        self._flush_tally(now)
        batch = self._next_batch(now)
        handed = self._hand_over(batch) if batch else 0
        if not handed:
            with self._lock:
                if not self._acks and not self._stopping:
                    self._lock.wait(0.5)
        with self._lock:
            self._errors["sender"] = ""
        return True

    def _next_batch(self, now: float) -> list[tuple[str, str]]:
        """Up to the free window of queued events, oldest first (the spool, then memory),
        marked as handed under the same lock so nothing drops them meanwhile."""
        with self._lock:
            if not self._connected or self._stopping or now < self._send_pause_until:
                return []
            window = 1 if self._waiting_subscriber else _SEND_WINDOW
            room = window - len(self._inflight)
            if room <= 0:
                return []
            batch: list[tuple[str, str]] = []
            if self.spool.is_open and self.spool.depth() > len(self._undeleted):
                try:
                    rows = self.spool.oldest(room, exclude=self._handed | self._undeleted)
                except STORAGE_ERRORS as exc:
                    self._storage_failed("read", exc)
                    rows = []
                batch = [(r.event_id, r.payload) for r in rows]
            if len(batch) < room:
                for event_id, text in self._memq.items():
                    if event_id not in self._handed:
                        batch.append((event_id, text))
                        if len(batch) >= room:
                            break
            self._handed.update(e for e, _ in batch)
            return batch

    def _hand_over(self, batch: list[tuple[str, str]]) -> int:
        topic, qos = self.topic("events"), self.cfg.qos_events
        handed = 0
        for i, (event_id, text) in enumerate(batch):
            with self._lock:
                if not self._connected or self._stopping:
                    self._handed.difference_update(e for e, _ in batch[i:])
                    break
            # not under our lock: see _send_loop
            info = self._client.publish(topic, text, qos=qos)
            with self._lock:
                if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
                    # paho did not take it: it stays queued for the next pass
                    self._handed.discard(event_id)
                    err = f"publish failed: {paho.error_string(info.rc)}"
                else:
                    self._inflight[info.mid] = event_id
                    self._stats["events_published"] += 1
                    handed += 1
                    err = ""
            if err:
                self._set_error(err)
        return handed

    def _process_acks(self, acks: list[tuple[int, Any]]) -> None:
        # one critical section, so flush() and stats() never see a half-applied PUBACK
        if not acks:
            return
        with self._lock:
            now = time.monotonic()
            done: list[str] = []
            for mid, rc in acks:
                event_id = self._inflight.pop(mid, None)
                failed = bool(getattr(rc, "is_failure", False))
                if event_id is None:  # availability / state / stats / discovery / timeline
                    name = self._other_mids.pop(mid, None)
                    if failed and name and name not in self._refusals_logged:
                        self._refusals_logged.add(name)
                        log.error(
                            "MQTT: the broker refused the %s payload on %s: %s",
                            name,
                            self.topic(name),
                            rc,
                        )
                    continue
                self._handed.discard(event_id)
                if failed and getattr(rc, "value", None) == _RC_QUOTA_EXCEEDED:
                    # the broker asks us to slow down: keep the event, send again later
                    self._send_pause_until = now + _QUOTA_PAUSE_S
                    self._errors["broker"] = f"broker quota exceeded; pausing {_QUOTA_PAUSE_S:g} s"
                    continue
                no_subscriber = getattr(rc, "value", None) == _RC_NO_MATCHING_SUBSCRIBERS
                if no_subscriber and self.cfg.require_subscriber:
                    self._no_subscriber(event_id, now)
                    continue
                if failed:
                    self._stats["events_rejected"] += 1
                    self._note_refusal(event_id, rc)
                else:
                    self._stats["events_acked"] += 1
                    self._stats["acked_no_subscriber"] += no_subscriber
                    self._errors["broker"] = ""
                    if self._waiting_subscriber:
                        self._subscriber_back()
                if event_id in self._memq:
                    del self._memq[event_id]
                elif event_id in self._orphans:
                    self._orphans.discard(event_id)
                else:
                    done.append(event_id)
            if done and self.spool.is_open:
                try:
                    self.spool.ack_many(done)
                except STORAGE_ERRORS as exc:
                    # delivered all the same: remember them, delete when the disk allows
                    self._undeleted.update(done)
                    self._storage_failed("delete", exc)
            self._lock.notify_all()

    def _no_subscriber(self, event_id: str, now: float) -> None:
        """PUBACK 0x10 with require_subscriber: the event stays queued (it was never handed to
        anyone) and goes out again after a pause that doubles while nobody subscribes."""
        self._stats["no_subscriber_retries"] += 1
        first = not self._waiting_subscriber
        self._waiting_subscriber.add(event_id)
        if now < self._send_pause_until:
            return  # one more answer from the batch that was in flight: same pause
        self._no_subscriber_streak += 1
        delay = min(
            _NO_SUBSCRIBER_RETRY_MAX_S,
            _NO_SUBSCRIBER_RETRY_MIN_S * 2 ** min(self._no_subscriber_streak - 1, 10),
        )
        self._send_pause_until = now + delay
        self._errors["broker"] = (
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
        waited = len(self._waiting_subscriber)
        self._waiting_subscriber.clear()
        self._no_subscriber_streak = 0
        self._send_pause_until = 0.0
        log.info(
            "MQTT: a subscriber for %s is back; sending the %d event(s) that waited for it",
            self.topic("events"),
            waited,
        )

    # -- internals: storage faults -------------------------------------------------------------

    def _queued(self) -> int:
        return self.spool.depth() - len(self._undeleted) + len(self._memq) + len(self._orphans)

    def _storage_due(self, now: float) -> bool:
        return not self._errors["storage"] or now >= self._storage_retry_at

    def _storage_failed(self, op: str, exc: BaseException) -> None:
        """One ERROR per outage naming the file and the error; retry with backoff."""
        with self._lock:
            if is_corrupt(exc) and self.spool.is_open:
                self._reset_corrupt_spool(exc)
                return
            self._storage_failures += 1
            delay = min(
                _STORAGE_RETRY_MAX_S,
                _STORAGE_RETRY_MIN_S * 2 ** min(self._storage_failures - 1, 10),
            )
            self._storage_retry_at = time.monotonic() + delay
            first = not self._errors["storage"]
            msg = (
                f"event spool {self.spool.path}: {op} failed ({describe(exc, self.spool.path)}); "
                f"events wait in memory (up to {self.cfg.memory_queue_events}) and are sent "
                "from there, the spool is retried"
            )
            self._errors["storage"] = msg
        log.log(logging.ERROR if first else logging.DEBUG, "MQTT: %s", msg)

    def _storage_ok(self) -> None:
        """A spool operation succeeded; the outage is over once nothing waits in memory."""
        with self._lock:
            self._storage_retry_at = 0.0
            if not self._errors["storage"] or self._memq or self._undeleted:
                return
            failures, self._storage_failures = self._storage_failures, 0
            self._errors["storage"] = ""
        log.warning(
            "MQTT: event spool %s works again (after %d failed attempt(s))",
            self.spool.path,
            failures,
        )

    def _storage_maintenance(self, now: float, force: bool = False) -> None:
        """Retry what a storage fault left undone: open the spool, delete delivered events,
        move the events waiting in memory to disk (one transaction)."""
        with self._lock:
            if not (self._memq or self._undeleted or not self.spool.is_open):
                return
            if not force and now < self._storage_retry_at:
                return
            op = "open"
            try:
                if not self.spool.is_open:
                    self.spool.open()
                    self._stats["events_carried_over"] += self.spool.depth()
                if self._undeleted:
                    op = "delete"
                    self.spool.ack_many(list(self._undeleted))
                    self._undeleted.clear()
                if self._memq:
                    op = "write"
                    moved = list(self._memq.items())
                    added, dropped = self.spool.put_many(moved, self._handed)
                    self._memq.clear()
                    self._note_spool_drops(dropped)
                    log.info("MQTT: moved %d event(s) from memory to the spool", len(added))
            except STORAGE_ERRORS as exc:
                self._storage_failed(op, exc)
            else:
                self._storage_ok()

    def _reset_corrupt_spool(self, exc: BaseException) -> None:
        """The spool turned out damaged while running: quarantine it, start a fresh one. Its
        events are lost, except those paho holds (they may still be acknowledged)."""
        with self._lock:
            from_spool = self._handed - self._memq.keys()
            try:
                rows = self.spool.reset_corrupt(exc)
            except STORAGE_ERRORS as exc2:
                log.error("MQTT: cannot start a fresh spool %s: %s", self.spool.path, exc2)
                rows = self.spool.depth()
            lost = max(0, rows - len(self._undeleted) - len(from_spool))
            self._undeleted.clear()
            self._orphans |= from_spool
            self._stats["events_dropped"] += lost
            self._errors["storage"] = f"event spool {self.spool.path} was damaged ({exc})"
            if lost:
                self._note("lost with the damaged spool", lost, log_first=True)

    def _memq_add(self, event_id: str, text: str) -> None:
        """Hold an event in memory; past the bound drop the oldest not in flight (counted)."""
        self._memq[event_id] = text
        self._stats["events_created"] += 1
        limit = self.cfg.memory_queue_events
        excess = len(self._memq) - limit
        if excess <= 0:
            return
        victims = [e for e in self._memq if e not in self._handed][:excess]
        for e in victims:
            del self._memq[e]
            self._waiting_subscriber.discard(e)
        if victims:
            self._stats["events_dropped"] += len(victims)
            self._note(
                f"dropped (spool not writable, memory queue full at {limit} events)",
                len(victims),
                example=victims[0],
            )

    def _note_spool_drops(self, dropped: list[str]) -> None:
        if not dropped:
            return
        self._waiting_subscriber.difference_update(dropped)
        self._stats["events_dropped"] += len(dropped)
        self._note(
            f"dropped (event spool full at {self.cfg.spool_max_events} events)",
            len(dropped),
            example=dropped[0],
            first=(
                f"event spool full ({self.cfg.spool_max_events} events): dropped the "
                f"{len(dropped)} oldest event(s) ({self._stats['events_dropped']} dropped so "
                f"far), e.g. {dropped[0]}"
            ),
        )

    def _note_refusal(self, event_id: str, rc: Any) -> None:
        reason = str(rc)
        self._errors["broker"] = (
            f"the broker refused events on {self.topic('events')}: {reason} "
            "(counted in events_rejected, not retried)"
        )
        if reason not in self._refusals_logged:
            self._refusals_logged.add(reason)
            hint = ""
            if getattr(rc, "value", None) == 0x87:
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
        self._note(f"refused by the broker ({reason})", 1, log_first=False)

    def _note(
        self,
        what: str,
        n: int,
        example: str = "",
        first: str = "",
        log_first: bool = True,
    ) -> None:
        """Log the first of a burst in full, then one summary line a minute (`_flush_tally`)."""
        now = time.monotonic()
        if log_first and not self._tally and now >= self._tally_next:
            self._tally_next = now + _SUMMARY_EVERY_S
            text = first or f"{n} event(s) {what}, e.g. {example}"
            log.warning("MQTT: %s; more are summarized once a minute", text)
            return
        self._tally[what] = self._tally.get(what, 0) + n
        if not self._tally_next:
            self._tally_next = now + _SUMMARY_EVERY_S

    def _flush_tally(self, now: float, force: bool = False) -> None:
        with self._lock:
            if not self._tally or (now < self._tally_next and not force):
                return
            parts = ", ".join(f"{n} event(s) {what}" for what, n in self._tally.items())
            self._tally = {}
            self._tally_next = now + _SUMMARY_EVERY_S
            s = self._stats
            totals = (s["events_dropped"], s["events_rejected"])
        log.warning(
            "MQTT: since the last report: %s (so far %d dropped, %d refused by the broker)",
            parts,
            *totals,
        )

    def _final_storage(self) -> None:
        """At stop: what still waits in memory goes to the spool if the disk takes it, else
        it is lost and counted; delivered events that could not be deleted are sent again at
        the next start (duplicates, never gaps)."""
        with self._lock:
            if self._memq or self._undeleted:
                self._storage_maintenance(time.monotonic(), force=True)
            if self._memq:
                lost = len(self._memq)
                self._memq.clear()
                self._stats["events_dropped"] += lost
                log.error(
                    "MQTT: %d event(s) could not be written to the spool %s (%s) and are lost",
                    lost,
                    self.spool.path,
                    self._errors["storage"] or "not writable",
                )
            if self._orphans:
                self._stats["events_dropped"] += len(self._orphans)
                self._orphans.clear()
            if self._undeleted:
                log.warning(
                    "MQTT: %d delivered event(s) could not be deleted from %s; they are sent "
                    "again at the next start (consumers de-duplicate on event_id)",
                    len(self._undeleted),
                    self.spool.path,
                )

    def _health_problem(self) -> str:
        if not self._started or self._stopping:
            return ""
        if self._sender_dead:
            return self._sender_dead
        if self._sender is not None and not self._sender.is_alive():
            return "the mqtt-sender thread ended"
        stuck = time.monotonic() - self._beat
        if stuck > SENDER_STUCK_S:
            return f"the mqtt-sender thread is stuck (no pass for {stuck:.0f} s)"
        return ""
