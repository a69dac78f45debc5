"""Where queued events wait: the on-disk spool, or memory while the disk fails.

Storage faults (a full or failing disk) never stop delivery: an event that cannot be written
waits in a bounded memory queue (`memory_queue_events`), is sent from there while the broker
is up, and moves to the spool once it is writable again (retried with backoff); the fault is
one ERROR naming the spool file and the error. A spool found damaged while running is
quarantined and a fresh one started; events paho still holds from it stay accounted for
("orphans"). Delivered events whose DELETE failed are remembered ("undeleted") and deleted
when the disk allows, so they are neither sent again nor counted twice.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from emotion_edge.config import MqttConfig
from emotion_edge.errors import ConfigError
from emotion_edge.publish.mqtt.ledger import DeliveryLedger
from emotion_edge.publish.spool import (
    STORAGE_ERRORS,
    EventSpool,
    describe,
    is_config_error,
    is_corrupt,
)

log = logging.getLogger(__name__)

_STORAGE_RETRY_MIN_S, _STORAGE_RETRY_MAX_S = 1.0, 10.0


class SpoolStorage:
    """The queue of events not yet delivered; see the module docstring.

    `handed` is the sender's set of event ids paho holds: they are never dropped to make room
    and never handed twice. All methods run under the ledger's lock (reentrant).
    """

    def __init__(self, cfg: MqttConfig, path: Path, ledger: DeliveryLedger, handed: set[str]):
        self.cfg = cfg
        self.ledger = ledger
        self.lock = ledger.lock
        self.handed = handed
        self.spool = EventSpool(path, cfg.spool_max_events, connect=False)
        # events not on disk: the spool could not be written (insertion order = age)
        self.memq: dict[str, str] = {}
        self.undeleted: set[str] = set()  # delivered, but their spool DELETE failed
        self.orphans: set[str] = set()  # in flight from a spool found damaged and reset
        self._failures = 0  # consecutive, drives the retry backoff
        self._retry_at = 0.0

    def open(self) -> None:
        """Open the spool; a wrong folder is a ConfigError, a failing disk is retried later."""
        try:
            self.spool.open()
        except STORAGE_ERRORS as exc:
            if is_config_error(exc, self.spool.path.parent):
                raise ConfigError(
                    f"mqtt.spool_dir: cannot open the event spool {self.spool.path} ({exc})"
                ) from None
            # a full or failing disk: run with the memory queue, retry the spool later
            self.failed("open", exc)
        else:
            self.ledger.counts["events_carried_over"] = self.spool.depth()

    # -- the queue ------------------------------------------------------------------------------

    def add(self, event_id: str, text: str) -> None:
        """Queue an event, durably when the disk allows, else in memory."""
        with self.lock:
            if event_id in self.memq:
                return
            # while events wait in memory, newer ones queue behind them (order is kept)
            if not self.memq and self.spool.is_open and self.due(time.monotonic()):
                try:
                    added, dropped = self.spool.put_many([(event_id, text)], self.handed)
                except STORAGE_ERRORS as exc:
                    self.failed("write", exc)
                    self.memq_add(event_id, text)
                else:
                    self.ledger.counts["events_created"] += len(added)
                    self.note_spool_drops(dropped)
                    self.ok()
            else:
                self.memq_add(event_id, text)

    def oldest(self, room: int) -> list[tuple[str, str]]:
        """Up to `room` queued events not handed yet, oldest first (the spool, then memory)."""
        with self.lock:
            batch: list[tuple[str, str]] = []
            if self.spool.is_open and self.spool.depth() > len(self.undeleted):
                try:
                    rows = self.spool.oldest(room, exclude=self.handed | self.undeleted)
                except STORAGE_ERRORS as exc:
                    self.failed("read", exc)
                    rows = []
                batch = [(r.event_id, r.payload) for r in rows]
            if len(batch) < room:
                for event_id, text in self.memq.items():
                    if event_id not in self.handed:
                        batch.append((event_id, text))
                        if len(batch) >= room:
                            break
            return batch

    def settled(self, event_ids: list[str]) -> None:
        """Events the broker answered for good (delivered or refused): out of the queue."""
        with self.lock:
            done: list[str] = []
            for event_id in event_ids:
                if event_id in self.memq:
                    del self.memq[event_id]
                elif event_id in self.orphans:
                    self.orphans.discard(event_id)
                else:
                    done.append(event_id)
            if done and self.spool.is_open:
                try:
                    self.spool.ack_many(done)
                except STORAGE_ERRORS as exc:
                    # delivered all the same: remember them, delete when the disk allows
                    self.undeleted.update(done)
                    self.failed("delete", exc)

    def spool_depth(self) -> int:
        return self.spool.depth() - len(self.undeleted)

    def in_memory(self) -> int:
        return len(self.memq) + len(self.orphans)

    def queued(self) -> int:
        return self.spool_depth() + self.in_memory()

    # -- faults ---------------------------------------------------------------------------------

    def due(self, now: float) -> bool:
        return not self.ledger.errors["storage"] or now >= self._retry_at

    def failed(self, op: str, exc: BaseException) -> None:
        """One ERROR per outage naming the file and the error; retry with backoff."""
        with self.lock:
            if is_corrupt(exc) and self.spool.is_open:
                self.reset_corrupt(exc)
                return
            self._failures += 1
            delay = min(
                _STORAGE_RETRY_MAX_S,
                _STORAGE_RETRY_MIN_S * 2 ** min(self._failures - 1, 10),
            )
            self._retry_at = time.monotonic() + delay
            first = not self.ledger.errors["storage"]
            msg = (
                f"event spool {self.spool.path}: {op} failed ({describe(exc, self.spool.path)}); "
                f"events wait in memory (up to {self.cfg.memory_queue_events}) and are sent "
                "from there, the spool is retried"
            )
            self.ledger.errors["storage"] = msg
        log.log(logging.ERROR if first else logging.DEBUG, "MQTT: %s", msg)

    def ok(self) -> None:
        """A spool operation succeeded; the outage is over once nothing waits in memory."""
        with self.lock:
            self._retry_at = 0.0
            if not self.ledger.errors["storage"] or self.memq or self.undeleted:
                return
            failures, self._failures = self._failures, 0
            self.ledger.errors["storage"] = ""
        log.warning(
            "MQTT: event spool %s works again (after %d failed attempt(s))",
            self.spool.path,
            failures,
        )

    def maintenance(self, now: float, force: bool = False) -> None:
        """Retry what a storage fault left undone: open the spool, delete delivered events,
        move the events waiting in memory to disk (one transaction)."""
        with self.lock:
            if not (self.memq or self.undeleted or not self.spool.is_open):
                return
            if not force and now < self._retry_at:
                return
            op = "open"
            try:
                if not self.spool.is_open:
                    self.spool.open()
                    self.ledger.counts["events_carried_over"] += self.spool.depth()
                if self.undeleted:
                    op = "delete"
                    self.spool.ack_many(list(self.undeleted))
                    self.undeleted.clear()
                if self.memq:
                    op = "write"
                    moved = list(self.memq.items())
                    added, dropped = self.spool.put_many(moved, self.handed)
                    self.memq.clear()
                    self.note_spool_drops(dropped)
                    log.info("MQTT: moved %d event(s) from memory to the spool", len(added))
            except STORAGE_ERRORS as exc:
                self.failed(op, exc)
            else:
                self.ok()

    def reset_corrupt(self, exc: BaseException) -> None:
        """The spool turned out damaged while running: quarantine it, start a fresh one. Its
        events are lost, except those paho holds (they may still be acknowledged)."""
        with self.lock:
            from_spool = self.handed - self.memq.keys()
            try:
                rows = self.spool.reset_corrupt(exc)
            except STORAGE_ERRORS as exc2:
                log.error("MQTT: cannot start a fresh spool %s: %s", self.spool.path, exc2)
                rows = self.spool.depth()
            lost = max(0, rows - len(self.undeleted) - len(from_spool))
            self.undeleted.clear()
            self.orphans |= from_spool
            self.ledger.counts["events_dropped"] += lost
            self.ledger.errors["storage"] = f"event spool {self.spool.path} was damaged ({exc})"
            if lost:
                self.ledger.note("lost with the damaged spool", lost, log_first=True)

    def memq_add(self, event_id: str, text: str) -> None:
        """Hold an event in memory; past the bound drop the oldest not in flight (counted)."""
        self.memq[event_id] = text
        self.ledger.counts["events_created"] += 1
        limit = self.cfg.memory_queue_events
        excess = len(self.memq) - limit
        if excess <= 0:
            return
        victims = [e for e in self.memq if e not in self.handed][:excess]
        for e in victims:
            del self.memq[e]
        if victims:
            self.ledger.dropped(
                victims, f"dropped (spool not writable, memory queue full at {limit} events)"
            )

    def note_spool_drops(self, dropped: list[str]) -> None:
        if not dropped:
            return
        n_max = self.cfg.spool_max_events
        so_far = self.ledger.counts["events_dropped"] + len(dropped)
        self.ledger.dropped(
            dropped,
            f"dropped (event spool full at {n_max} events)",
            first=(
                f"event spool full ({n_max} events): dropped the {len(dropped)} oldest "
                f"event(s) ({so_far} dropped so far), e.g. {dropped[0]}"
            ),
        )

    def final(self) -> None:
        """At stop: what still waits in memory goes to the spool if the disk takes it, else
        it is lost and counted; delivered events that could not be deleted are sent again at
        the next start (duplicates, never gaps)."""
        with self.lock:
            if self.memq or self.undeleted:
                self.maintenance(time.monotonic(), force=True)
            if self.memq:
                lost = len(self.memq)
                self.memq.clear()
                self.ledger.counts["events_dropped"] += lost
                log.error(
                    "MQTT: %d event(s) could not be written to the spool %s (%s) and are lost",
                    lost,
                    self.spool.path,
                    self.ledger.errors["storage"] or "not writable",
                )
            if self.orphans:
                self.ledger.counts["events_dropped"] += len(self.orphans)
                self.orphans.clear()
            if self.undeleted:
                log.warning(
                    "MQTT: %d delivered event(s) could not be deleted from %s; they are sent "
                    "again at the next start (consumers de-duplicate on event_id)",
                    len(self.undeleted),
                    self.spool.path,
                )
