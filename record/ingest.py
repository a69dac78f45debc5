"""Getting messages into the store: the batch writer, MQTT, JSON lines.

`Writer` is the one thread that writes. Messages are queued with an acknowledgement callback;
the writer parses them (payloads.parse_message), commits a batch in one transaction and only
then calls the callbacks, so nothing is acknowledged before it is committed. When the database
is away or full it retries the same batch with backoff, acknowledging nothing, and the broker
keeps the rest (QoS 1, persistent session). Bad messages are counted by reason, logged at
most once per reason every `LOG_EVERY_S` seconds, and acknowledged (they will never become
good); a refused message never blocks the others.

`MqttIngest` subscribes (MQTT 5) with a persistent session (clean_start false and a session
expiry), QoS 1, manual acknowledgements, optionally through a shared subscription
($share/GROUP/...) so several recorders split one fleet's stream. `read_jsonl` feeds JSON
lines (the daemon's stdout) from a file or stdin.

The client id names the broker's session, so it must be the same at every restart (what the
broker kept for us is handed back) and different for every recorder (two clients with one id
take the session from each other). `default_client_id` makes it from the host name and the
database. Should two recorders share one all the same, the broker closes one as soon as the
other connects: `MqttIngest` notices (the daemon's `TakeoverDetector`), says once which id is
shared and what to do, and waits longer each time instead of taking the session back at once.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO

from emotion_edge.publish.takeover import SHORT_CONNECTIONS_TAKEOVER, Takeover, TakeoverDetector
from emotion_edge_record.payloads import Limits, Parsed, Reject, parse_message
from emotion_edge_record.store import Store, StoreUnavailable

log = logging.getLogger(__name__)
LOG_EVERY_S = 10.0
TOPIC_NAMES = ("events", "timeline", "markers", "availability")


class RateLimitedLog:
    """One WARNING per key every `every_s` seconds, with how many were not logged."""

    def __init__(self, every_s: float = LOG_EVERY_S, logger: logging.Logger = log):
        self.every_s = every_s
        self.logger = logger
        self._last: dict[str, float] = {}
        self._held: Counter = Counter()
        self._lock = threading.Lock()

    def warn(self, key: str, msg: str, *args) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.every_s:
                self._held[key] += 1
                return
            self._last[key] = now
            held, self._held[key] = self._held[key], 0
        suffix = f" (+{held} more like it in the last {self.every_s:g} s)" if held else ""
        self.logger.warning(msg + suffix, *args)


@dataclass
class Pending:
    data: bytes | str
    topic: str | None = None
    ack: Callable[[], None] | None = None
    received_ts: float = 0.0


class Stats:
    """What the recorder did, by kind and by rejection reason (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received = 0
        self.stored: Counter = Counter()
        self.duplicates: Counter = Counter()
        self.rejected: Counter = Counter()
        self.ignored = 0  # state / stats payloads: valid, not recorded
        self.batches = 0
        self.retries = 0
        self.acked = 0
        self.mqtt_reconnects = 0
        self.mqtt_takeovers = 0  # another client took our session (same client id)
        self.started = time.monotonic()

    def as_dict(self) -> dict:
        with self._lock:
            return {
                "received": self.received,
                "stored": dict(self.stored),
                "duplicates": dict(self.duplicates),
                "rejected": dict(self.rejected),
                "ignored": self.ignored,
                "batches": self.batches,
                "db_retries": self.retries,
                "acked": self.acked,
                "mqtt_reconnects": self.mqtt_reconnects,
                "mqtt_takeovers": self.mqtt_takeovers,
                "elapsed_s": round(time.monotonic() - self.started, 3),
            }


class Writer(threading.Thread):
    """The single writing thread; see the module docstring."""

    def __init__(
        self,
        store: Store,
        limits: Limits | None = None,
        *,
        live: bool = True,
        max_batch: int = 1000,
        max_queue: int = 100_000,
        retry_min_s: float = 0.2,
        retry_max_s: float = 10.0,
    ):
        super().__init__(name="record-writer", daemon=True)
        self.store = store
        limits = limits or Limits()
        # the clock-skew check only makes sense for messages arriving now
        self.limits = limits if live else Limits(limits.max_bytes, None, limits.devices)
        self.max_batch = max_batch
        self.retry_min_s, self.retry_max_s = retry_min_s, retry_max_s
        self.queue: queue.Queue[Pending | None] = queue.Queue(max_queue)
        self.stats = Stats()
        self.rlog = RateLimitedLog()
        self._stop_now = threading.Event()
        self._idle = threading.Condition()
        self._busy = 0
        self.db_down = False
        self.error: BaseException | None = None

    def submit(self, item: Pending) -> None:
        with self._idle:
            self._busy += 1
        with self.stats._lock:
            self.stats.received += 1
        self.queue.put(item)

    def finish(self, timeout: float | None = None) -> bool:
        """Write everything queued, then end the thread; False if it did not end in time."""
        self.queue.put(None)
        self.join(timeout)
        return not self.is_alive()

    def abort(self) -> None:
        """Stop now, even in the middle of retrying an unreachable database (nothing queued is
        acknowledged: the broker sends it again)."""
        self._stop_now.set()
        self.queue.put(None)

    def wait_idle(self, timeout: float) -> bool:
        """Block until everything submitted so far is committed (or refused)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - reported by the CLI
            self.error = exc
            log.exception("recorder writer failed")

    def _loop(self) -> None:
        done = False
        while not done:
            item = self.queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    nxt = self.queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    done = True
                    break
                batch.append(nxt)
            if not self._commit(batch):
                return  # aborted while the database was away: nothing acknowledged

    def _parse(self, batch: list[Pending]) -> tuple[list[Parsed], list[Pending]]:
        parsed, owners = [], []
        for item in batch:
            try:
                p = parse_message(item.data, item.topic, limits=self.limits, now=item.received_ts)
            except Reject as rej:
                with self.stats._lock:
                    self.stats.rejected[rej.reason] += 1
                where = f" on {item.topic}" if item.topic else ""
                self.rlog.warn(rej.reason, "rejected a message%s: %s", where, rej)
                continue
            if p is None:
                with self.stats._lock:
                    self.stats.ignored += 1
                continue
            parsed.append(p)
            owners.append(item)
        return parsed, owners

    def _commit(self, batch: list[Pending]) -> bool:
        parsed, _ = self._parse(batch)
        delay = self.retry_min_s
        while True:
            if self._stop_now.is_set():
                return False
            try:
                result = self.store.write(parsed) if parsed else None
                break
            except StoreUnavailable as exc:
                with self.stats._lock:
                    self.stats.retries += 1
                if not self.db_down:
                    log.error(
                        "database %s unavailable (%s): retrying, nothing acknowledged "
                        "meanwhile (the broker keeps the messages)",
                        self.store.url,
                        exc,
                    )
                self.db_down = True
                self._stop_now.wait(delay)
                delay = min(self.retry_max_s, delay * 2)
        if self.db_down:
            log.warning("database %s reachable again", self.store.url)
            self.db_down = False
        with self.stats._lock:
            self.stats.batches += 1
            if result is not None:
                self.stats.stored.update(result.stored)
                self.stats.duplicates.update(result.duplicates)
                if result.refused:
                    self.stats.rejected["db_refused"] += len(result.refused)
        if result is not None:
            for item, why in result.refused:
                self.rlog.warn(
                    "db_refused",
                    "database refused a %s from %s: %s",
                    item.kind,
                    item.device_id,
                    why,
                )
        acked = 0
        for item in batch:
            if item.ack is not None:
                try:
                    item.ack()
                    acked += 1
                except Exception as exc:  # noqa: BLE001 - a lost connection: the broker resends
                    self.rlog.warn("ack", "acknowledgement not sent: %s", exc)
        with self.stats._lock:
            self.stats.acked += acked
        with self._idle:
            self._busy -= len(batch)
            self._idle.notify_all()
        return True


# -- JSON lines ---------------------------------------------------------------------------------


def read_jsonl(stream: IO, writer: Writer) -> int:
    """Queue every line of `stream` (the daemon's stdout, a file); returns the line count."""
    n = 0
    for line in stream:
        if isinstance(line, bytes):
            line = line.strip()
        else:
            line = line.strip()
        if not line:
            continue
        n += 1
        writer.submit(Pending(line, None, None, time.time()))
    return n


def open_jsonl(path: str) -> IO:
    if path == "-":
        return sys.stdin.buffer
    return open(path, "rb")  # noqa: SIM115 - closed by the caller


# -- MQTT ---------------------------------------------------------------------------------------


def subscription_topics(
    prefix: str, devices: Iterable[str] | None, share_group: str | None = None
) -> list[str]:
    """The recorder's subscriptions: each device's topics, or the whole fleet (`+`)."""
    devs = list(devices or []) or ["+"]
    topics = [f"{prefix}/{d}/{name}" for d in devs for name in TOPIC_NAMES]
    if share_group:
        topics = [f"$share/{share_group}/{t}" for t in topics]
    return topics


def default_client_id(db_url: str, host: str | None = None) -> str:
    """`emotion-edge-record-<host>-<8 hex digits of the database>`: stable across restarts,
    different for each database (an SQLite file by its absolute path, PostgreSQL by its URL
    without the password) and each host; at most 64 characters."""
    digest = hashlib.sha256(db_url.encode()).hexdigest()[:8]
    host = (host or socket.gethostname() or "host")[:34]
    return f"emotion-edge-record-{host}-{digest}"


class MqttIngest:
    """An MQTT 5 subscriber feeding the writer; see the module docstring."""

    def __init__(
        self,
        writer: Writer,
        host: str,
        port: int,
        topics: list[str],
        client_id: str,
        *,
        session_expiry_s: int = 7 * 24 * 3600,
        receive_max: int = 1000,
        keepalive_s: int = 30,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        ca_file: str | None = None,
        takeover_backoff_s: float = 60.0,
        reconnect_min_s: float = 0.2,
        reconnect_max_s: float = 5.0,
    ):
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.paho = paho
        self.writer = writer
        self.host, self.port = host, port
        self.topics = topics
        self.client_id = client_id
        self.keepalive_s = keepalive_s
        self.subscribed = threading.Event()
        self.connected = threading.Event()
        self.accepting = True  # False while stopping: new messages wait in the session
        self._epoch = 0  # connection number: acks only go to the connection a message came on
        self._epoch_lock = threading.Lock()
        self.reconnects = 0
        self._error = ""
        self.takeover = TakeoverDetector(takeover_backoff_s)
        self._reconnect = (reconnect_min_s, reconnect_max_s)
        self._restore_reconnect = False
        self._stopping = False
        c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
            manual_ack=True,
        )
        c.reconnect_delay_set(*self._reconnect)  # type: ignore[arg-type]
        c.max_inflight_messages_set(100)
        if username:
            c.username_pw_set(username, password)
        if tls:
            c.tls_set(ca_certs=ca_file or None)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = int(session_expiry_s)
        props.ReceiveMaximum = int(receive_max)
        self._connect_props = props
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self.client = c

    def start(self) -> None:
        self.client.connect_async(
            self.host,
            self.port,
            keepalive=self.keepalive_s,
            clean_start=False,
            properties=self._connect_props,
        )
        self.client.loop_start()

    def stop(self, timeout: float = 0.5) -> bool:
        """DISCONNECT and end paho's thread; False if it did not end within `timeout` (it is
        a daemon thread: the process may exit all the same)."""
        # a DISCONNECT keeps the session (its expiry is set): what is not acknowledged yet
        # is sent again to the next recorder with this client id
        self._stopping = True
        try:
            self.client.disconnect()
        finally:
            # paho's thread may sit in a reconnect wait (1 s steps, longer after a
            # takeover): do not let it hold the exit past the SIGTERM deadline
            t = threading.Thread(target=self.client.loop_stop, name="mqtt-stop", daemon=True)
            t.start()
            t.join(timeout)
        return not t.is_alive()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._set_error(f"broker {self.host}:{self.port} refused: {reason_code}")
            return
        with self._epoch_lock:
            self._epoch += 1
            if self._epoch > 1:
                self.reconnects += 1
                with self.writer.stats._lock:
                    self.writer.stats.mqtt_reconnects = self.reconnects
        self.takeover.connected()
        if self._restore_reconnect:
            self._restore_reconnect = False
            client.reconnect_delay_set(*self._reconnect)  # type: ignore[arg-type]
        log.info(
            "MQTT: connected to %s:%d as %s (session present: %s)",
            self.host,
            self.port,
            self.client_id,
            flags.session_present,
        )
        self._error = ""
        self.connected.set()
        from paho.mqtt.subscribeoptions import SubscribeOptions

        client.subscribe([(t, SubscribeOptions(qos=1)) for t in self.topics])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        bad = [str(rc) for rc in reason_codes if rc.is_failure]
        if bad:
            self._set_error(f"subscription refused: {', '.join(bad)}")
            return
        if not self.subscribed.is_set():
            log.info("recording: subscribed to %s", ", ".join(self.topics))
        self.subscribed.set()

    def _on_connect_fail(self, client, userdata) -> None:
        self._set_error(f"cannot connect to {self.host}:{self.port}; retrying")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        d = self.takeover.disconnected()
        if self._stopping:
            return
        t = self.takeover.judge(getattr(reason_code, "value", None), d)
        if t is not None:
            self._taken_over(client, t)
        elif reason_code.value != 0:
            # closed soon after the broker accepted us: a WARNING until it repeats (takeover)
            level = logging.WARNING if d.short_in_a_row else logging.ERROR
            msg = f"disconnected from {self.host}:{self.port} ({reason_code}); retrying"
            self._set_error(msg, level)

    def _taken_over(self, client, t: Takeover) -> None:
        """Another client took our session: the same client id twice. Say which, once, and
        back off (doubling) so the other recorder keeps the session meanwhile."""
        self._restore_reconnect = True
        with self.writer.stats._lock:
            self.writer.stats.mqtt_takeovers = t.count
        client.reconnect_delay_set(t.delay_s, t.delay_s)  # type: ignore[arg-type]
        where = f"{self.host}:{self.port}"
        if t.certain:
            what = f"the broker {where} handed our session to another client (MQTT reason 0x8E)"
        else:
            what = (
                f"the broker {where} closed our connection right after accepting it "
                f"{SHORT_CONNECTIONS_TAKEOVER} times in a row: another client connects"
            )
        msg = (
            f"session taken over: {what} with the same client id {self.client_id!r}. Two "
            "recorders share it (the default id is made from the host name and the database: "
            "two recorders on this host write one database); give each its own --client-id or "
            "stop the other. Backing off instead of fighting over the session"
        )
        if t.first:
            log.error("MQTT: %s", msg)
        self._error = msg
        log.log(
            logging.WARNING if t.first else logging.INFO,
            "MQTT: session taken over (%d time(s)); reconnecting in %g s",
            t.count,
            t.delay_s,
        )

    def _set_error(self, msg: str, level: int = logging.ERROR) -> None:
        if msg != self._error:
            log.log(level, "MQTT: %s", msg)
        self._error = msg

    def _on_message(self, client, userdata, msg) -> None:
        if not self.accepting:
            return  # not acknowledged: the broker sends it again to the next session
        with self._epoch_lock:
            epoch = self._epoch
        mid, qos = msg.mid, msg.qos

        def ack() -> None:
            if qos == 0:
                return
            with self._epoch_lock:
                if epoch != self._epoch:
                    return  # that connection is gone; the broker re-sends it, stored once
            client.ack(mid, qos)

        self.writer.submit(Pending(bytes(msg.payload), msg.topic, ack, time.time()))
