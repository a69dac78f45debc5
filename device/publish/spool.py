"""A bounded, crash-safe, on-disk FIFO of events that the broker has not acknowledged yet.

Every event is written here before it is handed to the MQTT client and deleted only when its
PUBACK arrives, so a broker outage, a network cut or a daemon restart loses nothing: the next
connection re-sends what is left, oldest first. sqlite3 (stdlib) in WAL mode with
`synchronous=FULL` makes each put/ack durable on its own (events are rare, a few per second at
most, so one fsync each is affordable even on an SD card). When more than `max_events` are
waiting, the oldest are dropped and counted, never silently.

Thread-safe: the daemon's loop adds events, paho's network thread acknowledges them.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpooledEvent:
    seq: int  # insertion order: oldest first
    event_id: str
    payload: str  # the JSON text exactly as it goes on the wire


class EventSpool:
    """FIFO of (event_id, JSON payload) rows in one sqlite file; see the module docstring."""

    def __init__(self, path: str | Path, max_events: int = 10000):
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        self.path = Path(path)
        self.max_events = max_events
        self.dropped = 0  # dropped by this process because the spool was full
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit mode: each statement is its own transaction unless we open one
        self._db = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=10.0
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS events ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " event_id TEXT NOT NULL UNIQUE,"
            " payload TEXT NOT NULL,"
            " created_ts REAL NOT NULL)"
        )
        self._depth = self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def put(self, event_id: str, payload: str) -> list[str]:
        """Store one event; returns the ids of the oldest events dropped to stay bounded.

        An id already waiting is kept as it is (the same event handed in twice is sent once).
        """
        with self._lock:
            db = self._db
            if db is None:
                raise RuntimeError(f"event spool {self.path} is closed")
            db.execute("BEGIN IMMEDIATE")
            try:
                cur = db.execute(
                    "INSERT OR IGNORE INTO events (event_id, payload, created_ts) VALUES (?,?,?)",
                    (event_id, payload, time.time()),
                )
                self._depth += cur.rowcount
                dropped: list[str] = []
                excess = self._depth - self.max_events
                if excess > 0:
                    rows = db.execute(
                        "SELECT seq, event_id FROM events ORDER BY seq LIMIT ?", (excess,)
                    ).fetchall()
                    db.execute("DELETE FROM events WHERE seq <= ?", (rows[-1][0],))
                    dropped = [r[1] for r in rows]
                    self._depth -= len(rows)
                    self.dropped += len(rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return dropped

    def ack(self, event_id: str) -> bool:
        """Delete an event the broker acknowledged; False if it was not (or no longer) here."""
        with self._lock:
            if self._db is None:
                return False
            cur = self._db.execute("DELETE FROM events WHERE event_id = ?", (event_id,))
            self._depth -= cur.rowcount
            return cur.rowcount > 0

    def oldest(
        self, limit: int, exclude: set[str] | frozenset[str] = frozenset()
    ) -> list[SpooledEvent]:
        """Up to `limit` waiting events, oldest first, skipping the ids in `exclude`."""
        if limit <= 0:
            return []
        with self._lock:
            if self._db is None:
                return []
            rows = self._db.execute(
                "SELECT seq, event_id, payload FROM events ORDER BY seq LIMIT ?",
                (limit + len(exclude),),
            ).fetchall()
        out = [SpooledEvent(*r) for r in rows if r[1] not in exclude]
        return out[:limit]

    def depth(self) -> int:
        with self._lock:
            return self._depth

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None  # type: ignore[assignment]
