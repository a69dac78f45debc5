"""MQTT output: availability, events, state and stats under `<prefix>/<device_id>/`.

Topics (see README "MQTT"):
  availability  retained `online` on every connect, `offline` as Last Will (unclean death),
                `stopped` on a clean shutdown
  events        one JSON object per emotion event, QoS 1 (not retained)
  state         retained snapshot of the faces on screen (latest wins)
  stats         retained runtime figures (latest wins)

Delivery guarantee for events: **at least once, with ids**. Every event carries a unique
`event_id`; it is written to an on-disk spool (`emotion_edge.publish.spool`) before it is handed to
paho and deleted only when the broker's PUBACK arrives. Events produced while the broker is
unreachable wait in the spool and are sent after reconnect, oldest first; events that were
in flight when the connection dropped are re-sent, so a consumer may see an id twice and
should de-duplicate on `event_id`. The spool survives a daemon restart. It is bounded: past
`spool_max_events` the oldest events are dropped, counted in `stats()["spool_dropped"]` and
logged as a WARNING.

State and stats are not spooled: only the latest of each matters, and it is re-published on
every (re)connect.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import ssl
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as paho
from emotion_edge.config import MqttConfig
from emotion_edge.errors import ConfigError
from emotion_edge.publish.spool import EventSpool
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)

AVAILABILITY_ONLINE = "online"
AVAILABILITY_OFFLINE = "offline"  # Last Will: the daemon died without saying goodbye
AVAILABILITY_STOPPED = "stopped"  # clean shutdown

_TOPIC_PART_RE = re.compile(r"^[^#+\x00]+$")
_HA_ID_RE = re.compile(r"[^A-Za-z0-9_-]")


class _PahoToDebug(logging.Filter):
    """paho logs every failed reconnect attempt as an ERROR; we report those ourselves (once,
    with context, see `_set_error`), so its own lines go to DEBUG, except a crashed callback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING and not str(record.msg).startswith("Caught exc"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_paho_log = logging.getLogger(__name__ + ".paho")
_paho_log.addFilter(_PahoToDebug())
# events handed to paho and not yet acknowledged; more wait in the spool, not in paho's memory
_SEND_WINDOW = 100


def _json(payload: dict) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


class MqttPublisher:
    """Publishes the daemon's payloads; see the module docstring for topics and guarantees.

    `start()` returns at once; paho connects and reconnects (with backoff) in its own thread,
    and a sender thread moves spooled events to the broker whenever it is connected. No method
    raises because the broker is away or refuses us: the error is logged and shown in
    `stats()["last_error"]`.
    """

    def __init__(self, cfg: MqttConfig, device_id: str, model_version: str = ""):
        if not device_id or not _TOPIC_PART_RE.match(device_id) or "/" in device_id:
            raise ConfigError(f"device.id: {device_id!r} cannot be part of an MQTT topic")
        self.cfg = cfg
        self.device_id = device_id
        self.model_version = model_version
        self.client_id = cfg.client_id or f"emotion-edge-{device_id}"
        spool_path = cfg.resolved_spool_dir() / f"{_HA_ID_RE.sub('_', device_id)}.sqlite3"
        try:
            self.spool = EventSpool(spool_path, cfg.spool_max_events)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"mqtt.spool_dir: cannot open the event spool {spool_path} ({exc})"
            ) from None

        self._lock = threading.Condition()
        self._connected = False
        self._stopping = False
        self._started = False
        self._ever_connected = False
        self._inflight: dict[int, str] = {}  # paho mid -> event_id, until PUBACK
        self._handed: set[str] = set()  # event ids paho holds (it re-sends them itself)
        self._acks: list[int] = []  # mids paho reported acknowledged, for the sender thread
        self._retained: dict[str, str] = {}  # latest state / stats JSON, re-sent on connect
        self._stats = {"reconnects": 0, "events_published": 0, "events_acked": 0}
        self._last_error = ""
        self._refused = False  # the broker answered CONNACK with a failure (reported)
        self._paho_error = ""  # paho's last logged error, the detail of a lost connection
        self._sender: threading.Thread | None = None
        self._client = self._make_client()

    # -- public API ------------------------------------------------------------------------

    broken = False  # a broker that is away is not broken: events wait in the spool----

    def topic(self, name: str) -> str:
        return f"{self.cfg.topic_prefix}/{self.device_id}/{name}"

    def start(self) -> None:
        """Connect in the background; returns immediately."""
        if self._started:
            return
        self._started = True
        cfg = self.cfg
        log.info(
            "MQTT: connecting to %s:%d as %s (tls=%s), topics %s/#, %d spooled event(s)",
            cfg.host,
            cfg.port,
            self.client_id,
            cfg.tls,
            self.topic("").rstrip("/"),
            self.spool.depth(),
        )
        self._client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        self._client.loop_start()
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)
        self._sender.start()

    def publish_event(self, payload: dict) -> None:
        """Spool the event (durably) and let the sender deliver it with QoS `qos_events`."""
        event_id = payload.get("event_id")
        if not isinstance(event_id, str) or not event_id:
            raise ValueError("event payload needs a non-empty string 'event_id'")
        dropped = self.spool.put(event_id, _json(payload))
        if dropped:
            with self._lock:
                self._handed.difference_update(dropped)
            log.warning(
                "MQTT: event spool full (%d events): dropped the %d oldest event(s) "
                "(%d dropped so far), e.g. %s",
                self.cfg.spool_max_events,
                len(dropped),
                self.spool.dropped,
                dropped[0],
            )
        with self._lock:
            self._lock.notify_all()

    def publish_state(self, payload: dict) -> None:
        self._publish_retained("state", _json(payload))

    def publish_stats(self, payload: dict) -> None:
        self._publish_retained("stats", _json(payload))

    def stats(self) -> dict:
        with self._lock:
            out: dict[str, Any] = {"connected": self._connected, **self._stats}
            out["last_error"] = self._last_error
        out["spool_depth"] = self.spool.depth()
        out["spool_dropped"] = self.spool.dropped
        return out

    def connected(self) -> bool:
        with self._lock:
            return self._connected

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected (True) or `timeout` seconds pass (False)."""
        with self._lock:
            return self._lock.wait_for(lambda: self._connected, timeout)

    def flush(self, timeout: float) -> bool:
        """Wait until the spool is empty (True) or the broker is away / time is up (False)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.spool.depth() > 0:
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
            self._process_acks()  # PUBACKs that came after the sender thread ended
            left = self.spool.depth()
            if left:
                log.warning(
                    "MQTT: stopped with %d unacknowledged event(s) kept in %s "
                    "(sent at next start)%s",
                    left,
                    self.spool.path,
                    "" if flushed else "; broker unreachable or too slow",
                )
        else:
            self._stopping = True
        with self._lock:
            self._connected = False
        self.spool.close()

    # -- internals -----------------------------------------------------------------------------

    def _make_client(self) -> paho.Client:
        cfg = self.cfg
        c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        c.enable_logger(_paho_log)
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

    def _set_error(self, msg: str) -> None:
        # the same failure repeats at every reconnect attempt: log it loudly once
        with self._lock:
            repeated = msg == self._last_error
            self._last_error = msg
        log.log(logging.DEBUG if repeated else logging.ERROR, "MQTT: %s", msg)

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
        client.publish(self.topic("availability"), AVAILABILITY_ONLINE, qos=1, retain=True)
        if cfg.ha_discovery:
            for topic, config in self._ha_discovery_configs().items():
                client.publish(topic, _json(config), qos=1, retain=True)
        # from here on the sender hands events over (after `online`) and publish_state() goes
        # straight out; the copy re-sends what came while we were away (a rare duplicate of
        # a retained payload is harmless, a gap would not be)
        with self._lock:
            if self._ever_connected:
                self._stats["reconnects"] += 1
            self._ever_connected = True
            self._last_error = ""
            self._connected = True
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
            self._lock.notify_all()
        if stopping or refused:  # a refusal was already reported with its reason
            return
        where = f"{self.cfg.host}:{self.cfg.port}"
        if was:
            self._set_error(
                f"disconnected from {where} ({detail}); reconnecting, events go to the spool"
            )
        else:  # e.g. TLS 1.3 reports a missing client certificate only after the handshake
            self._set_error(f"connection to {where} closed before the broker accepted it: {detail}")

    def _on_log(self, client, userdata, level, buf) -> None:
        if level == paho.MQTT_LOG_ERR:
            with self._lock:
                self._paho_error = buf

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            self._acks.append(mid)
            self._lock.notify_all()

    def _publish_retained(self, name: str, text: str) -> None:
        with self._lock:
            self._retained[name] = text
            connected = self._connected and not self._stopping
        if connected:
            self._client.publish(self.topic(name), text, qos=1, retain=True)

    def _send_loop(self) -> None:
        """Hand spooled events to paho, oldest first, at most _SEND_WINDOW unacknowledged.

        Also turns PUBACKs into spool deletions. Both happen in this thread because paho calls
        on_publish while holding its message mutex, which publish() needs too: mapping a mid
        to its event here, right after publish() returns, avoids both a deadlock and a PUBACK
        that arrives before its mid is known.

        Events already handed to paho are not handed again after a reconnect: paho re-sends
        its unacknowledged messages itself (same mid, so the PUBACK still finds the event).
        After a daemon restart the whole spool goes out afresh.
        """
        topic, qos = self.topic("events"), self.cfg.qos_events
        while True:
            batch: list = []
            with self._lock:
                while True:
                    if self._acks:
                        break
                    if self._stopping:
                        return
                    room = _SEND_WINDOW - len(self._inflight)
                    if self._connected and room > 0:
                        batch = self.spool.oldest(room, exclude=set(self._handed))
                        if batch:
                            break
                    self._lock.wait(0.5)
            if self._process_acks():
                continue
            for ev in batch:
                with self._lock:
                    if not self._connected or self._stopping:
                        break
                    self._handed.add(ev.event_id)
                # not under our lock: see the docstring
                info = self._client.publish(topic, ev.payload, qos=qos)
                with self._lock:
                    if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
                        # paho did not take it: it stays in the spool for the next pass
                        self._handed.discard(ev.event_id)
                        err = f"publish failed: {paho.error_string(info.rc)}"
                    else:
                        self._inflight[info.mid] = ev.event_id
                        self._stats["events_published"] += 1
                        err = ""
                if err:
                    self._set_error(err)

    def _process_acks(self) -> int:
        # one critical section, so flush() never sees the spool emptied but the count stale
        with self._lock:
            acks, self._acks = self._acks, []
            for mid in acks:
                event_id = self._inflight.pop(mid, None)
                if event_id is not None:  # None: availability / state / stats / discovery
                    self._handed.discard(event_id)
                    # False: dropped from a full spool meanwhile
                    self._stats["events_acked"] += self.spool.ack(event_id)
            self._lock.notify_all()
        return len(acks)

    def _ha_discovery_configs(self) -> dict[str, dict]:
        """Home Assistant discovery: dominant emotion and face count, read from `state`."""
        node = _HA_ID_RE.sub("_", f"emotion_edge_{self.device_id}")
        device = {
            "identifiers": [node],
            "name": f"emotion-edge {self.device_id}",
            "manufacturer": "emotion-edge",
            "model": "emotion-edge daemon",
        }
        if self.model_version:
            device["sw_version"] = f"model {self.model_version}"
        availability = [
            {
                "topic": self.topic("availability"),
                # `stopped` and `offline` both mean unavailable to Home Assistant
                "value_template": "{{ 'online' if value == 'online' else 'offline' }}",
            }
        ]
        common = {
            "state_topic": self.topic("state"),
            "availability": availability,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
        }
        sensors = {
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
        out = {}
        for obj, conf in sensors.items():
            out[f"{self.cfg.ha_prefix}/sensor/{node}/{obj}/config"] = {
                **conf,
                "unique_id": f"{node}_{obj}",
                **common,
            }
        return out
