"""Telling "another client took our session" from an ordinary lost connection.

An MQTT broker keeps one session per client id: a second client that connects with the same id
takes the session and the broker closes the first connection. Two clients with one id (two
devices cloned from one SD card, two recorders writing one database) then take it from each
other every few hundred milliseconds, for ever, unless one of them backs off. MQTT 5 brokers
may say so (DISCONNECT reason 0x8E, session taken over); mosquitto 2.0.11 and every MQTT 3.1.1
broker just close the socket, so a run of connections that close soon after the broker
accepted them counts as a takeover too.

`TakeoverDetector` holds that judgement and the backoff; it is shared by the daemon's
publisher and the recorder, which each say in their own words what to do about it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

RC_SESSION_TAKEN_OVER = 0x8E  # DISCONNECT: another client connected with our client id
# accepted and closed again within this many seconds, this many times in a row: taken over
SHORT_CONNECTION_S, SHORT_CONNECTIONS_TAKEOVER = 5.0, 3


@dataclass(frozen=True)
class Takeover:
    certain: bool  # the broker said 0x8E (else: inferred from short connections)
    delay_s: float  # wait this long before connecting again
    count: int  # takeovers so far
    first: bool  # the first one: log it loudly, later ones quietly


@dataclass(frozen=True)
class Disconnect:
    lived_s: float | None  # how long the connection lasted (None: it never was accepted)
    short_in_a_row: int  # connections in a row closed soon after the broker accepted them


class TakeoverDetector:
    """Counts short connections and takeovers; the delay doubles on repeats up to 10x
    `backoff_s` and starts again when the last takeover is long past. Thread-safe."""

    def __init__(self, backoff_s: float):
        self.backoff_s = backoff_s
        self.takeovers = 0
        self._since: float | None = None
        self._short = 0
        self._streak = 0
        self._logged = False
        self._lock = threading.Lock()

    def connected(self, now: float | None = None) -> None:
        with self._lock:
            self._since = time.monotonic() if now is None else now

    def disconnected(self, now: float | None = None) -> Disconnect:
        """Note the end of a connection (call it for every disconnect)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            lived = None if self._since is None else now - self._since
            self._since = None
            if lived is not None:
                self._short = self._short + 1 if lived < SHORT_CONNECTION_S else 0
            return Disconnect(lived, self._short)

    def judge(self, reason_value: int | None, d: Disconnect) -> Takeover | None:
        """A takeover (with its backoff) or None for an ordinary disconnect."""
        certain = reason_value == RC_SESSION_TAKEN_OVER
        if not certain and d.short_in_a_row < SHORT_CONNECTIONS_TAKEOVER:
            return None
        base = self.backoff_s
        with self._lock:
            if d.lived_s is not None and d.lived_s > 10 * base:
                self._streak = 0  # the last takeover is long past: start again
            self._streak += 1
            self.takeovers += 1
            delay = min(base * 2 ** min(self._streak - 1, 10), base * 10)
            first, self._logged = not self._logged, True
            return Takeover(certain, delay, self.takeovers, first)
