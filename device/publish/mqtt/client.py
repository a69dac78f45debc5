"""The paho client and the connection: connect and reconnect with backoff, the Last Will,
credentials and TLS, each failure reported once (with the key to check), and a session taken
over by another client with our id told apart from an ordinary disconnect
(`emotion_edge.publish.takeover`).

What happens on the connection is passed on through `ConnectionListener`: the publisher
announces itself when the broker accepts us and gets every PUBACK.
"""

from __future__ import annotations

import logging
import ssl
import sys
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as paho
from emotion_edge.config import MqttConfig
from emotion_edge.publish.mqtt.ledger import DeliveryLedger
from emotion_edge.publish.takeover import (
    SHORT_CONNECTIONS_TAKEOVER,
    Takeover,
    TakeoverDetector,
)
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)
_paho_log = logging.getLogger("emotion_edge.publish.mqtt.paho")

AVAILABILITY_ONLINE = "online"
AVAILABILITY_OFFLINE = "offline"  # Last Will: the daemon died without saying goodbye
AVAILABILITY_STOPPED = "stopped"  # clean shutdown


@dataclass
class LinkState:
    """Whether we are connected / stopping; read by every part under the ledger's lock."""

    connected: bool = False
    stopping: bool = False
    started: bool = False
    ever_connected: bool = False


class ConnectionListener(Protocol):
    def on_accepted(self, client: paho.Client) -> None:
        """The broker accepted us; called before events flow (publish `online` here)."""

    def on_ready(self, client: paho.Client) -> None:
        """Connected, events flow again (re-send what must follow a reconnect)."""

    def on_puback(self, mid: int, reason_code: Any) -> None:
        """paho's PUBACK for message `mid` (called in paho's thread, with its mutex held)."""


class PahoConnection:
    """One paho client for `client_id`; see the module docstring."""

    def __init__(
        self,
        cfg: MqttConfig,
        client_id: str,
        device_id: str,
        will_topic: str,
        ledger: DeliveryLedger,
        link: LinkState,
        listener: ConnectionListener,
    ):
        self.cfg = cfg
        self.client_id = client_id
        self.device_id = device_id
        self.ledger = ledger
        self.lock: threading.Condition = ledger.lock
        self.link = link
        self.listener = listener
        self.takeover = TakeoverDetector(cfg.takeover_backoff_s)
        self._refused = False  # the broker answered CONNACK with a failure (reported)
        self._paho_error = ""  # paho's last logged error, the detail of a lost connection
        self._restore_reconnect_delay = False
        self.client = self._make_client(will_topic)

    def _make_client(self, will_topic: str) -> paho.Client:
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
        c.will_set(will_topic, AVAILABILITY_OFFLINE, qos=1, retain=True)
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

    def start(self) -> None:
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()

    def stop(self) -> None:
        # a DISCONNECT packet tells the broker to discard the Last Will
        self.client.disconnect()
        self.client.loop_stop()

    # -- errors ---------------------------------------------------------------------------------

    def report(self, kind: str, msg: str, level: int = logging.ERROR) -> None:
        # the same failure repeats at every retry: log it loudly once
        with self.lock:
            repeated = msg == self.ledger.errors[kind]
            self.ledger.errors[kind] = msg
        log.log(logging.DEBUG if repeated else level, "MQTT: %s", msg)

    def set_error(self, msg: str) -> None:
        self.report("connection", msg)

    # -- paho callbacks -------------------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        cfg = self.cfg
        if reason_code.is_failure:
            hint = ""
            if reason_code.value in (0x86, 0x87, 4, 5):  # bad user/password, not authorized
                hint = (
                    f" (check mqtt.username and the password from "
                    f"{cfg.password_file or '$' + cfg.password_env})"
                )
            with self.lock:
                self._refused = True
            self.set_error(
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
        self.listener.on_accepted(client)
        # from here on the sender hands events over (after `online`) and publish_state() goes
        # straight out
        with self.lock:
            if self.link.ever_connected:
                self.ledger.counts["reconnects"] += 1
            self.link.ever_connected = True
            self.ledger.errors["connection"] = ""
            self.link.connected = True
            self.takeover.connected()
            self.lock.notify_all()
        self.listener.on_ready(client)

    def _on_connect_fail(self, client, userdata) -> None:
        exc = sys.exc_info()[1]  # paho calls us from inside its `except OSError`
        detail = f"{type(exc).__name__}: {exc}" if exc else "connection failed"
        self.set_error(
            f"cannot connect to {self.cfg.host}:{self.cfg.port}: {detail}; "
            f"retrying (backoff up to {self.cfg.reconnect_max_s:g} s)"
        )

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self.lock:
            was, self.link.connected = self.link.connected, False
            stopping, refused, self._refused = self.link.stopping, self._refused, False
            detail, self._paho_error = self._paho_error or str(reason_code), ""
            d = self.takeover.disconnected()
            lived, short = d.lived_s, d.short_in_a_row
            self.lock.notify_all()
        if stopping or refused:  # a refusal was already reported with its reason
            return
        takeover = self.takeover.judge(getattr(reason_code, "value", None), d)
        if takeover is not None:
            self._taken_over(client, takeover)
            return
        where = f"{self.cfg.host}:{self.cfg.port}"
        if was and short:
            # closed right after CONNACK: a WARNING until it repeats (see _taken_over)
            self.report(
                "connection",
                f"disconnected from {where} {lived:.1f} s after the broker accepted us "
                f"({detail}); reconnecting, events go to the spool",
                logging.WARNING,
            )
        elif was:
            self.set_error(
                f"disconnected from {where} ({detail}); reconnecting, events go to the spool"
            )
        else:  # e.g. TLS 1.3 reports a missing client certificate only after the handshake
            self.set_error(f"connection to {where} closed before the broker accepted it: {detail}")

    def _taken_over(self, client, t: Takeover) -> None:
        """Another client connected with our client id: almost always a second device with
        the same device id (a cloned SD card keeps the host name, the default id). Say so
        once, and wait longer each time instead of taking the session back at once."""
        with self.lock:
            self.ledger.counts["takeovers"] = t.count
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
        with self.lock:
            self.ledger.errors["connection"] = msg
        log.log(logging.ERROR if t.first else logging.DEBUG, "MQTT: %s", msg)
        log.info("MQTT: session taken over (%d time(s)); reconnecting in %g s", t.count, delay)

    def _on_log(self, client, userdata, level, buf) -> None:
        if buf.startswith("Caught exception"):  # a bug in one of our callbacks
            _paho_log.error("%s", buf)
            return
        if level == paho.MQTT_LOG_ERR:
            with self.lock:
                self._paho_error = buf
        # checked here, so the line is not even formatted unless DEBUG is on
        if _paho_log.isEnabledFor(logging.DEBUG):
            _paho_log.debug("%s", buf)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self.listener.on_puback(mid, reason_code)
