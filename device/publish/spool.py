"""A bounded, crash-safe, on-disk FIFO of events that the broker has not acknowledged yet.

Every event is written here before it is handed to the MQTT client and deleted only when its
PUBACK arrives, so a broker outage, a network cut or a daemon restart loses nothing: the next
connection re-sends what is left, oldest first. sqlite3 (stdlib) in WAL mode with
`synchronous=FULL` makes each put/ack durable on its own (events are rare, a few per second at
most, so one fsync each is affordable even on an SD card). When more than `max_events` are
waiting, the oldest are dropped and counted, never silently.

Storage faults are the caller's to handle: every method raises the sqlite3/OS error as it is
(a full disk is `sqlite3.OperationalError: database or disk is full`), and the counters only
change after a COMMIT succeeded, so `depth()` is exact whatever failed. A file that is not a
database (power loss on an SD card) is renamed aside to `<name>.corrupt-<time>` when it is
opened, and a fresh spool is started in its place (`quarantined` lists the moved files).

Thread-safe: the daemon's loop adds events, the sender thread acknowledges them.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# what a failing disk raises from sqlite3 and from the file system
STORAGE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, OSError)

_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26
# errors of the spool folder that a restart cannot fix: a wrong path or permissions
_CONFIG_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP}


@dataclass(frozen=True)
class SpooledEvent:
    seq: int  # insertion order: oldest first
    event_id: str
    payload: str  # the JSON text exactly as it goes on the wire


def is_corrupt(exc: BaseException) -> bool:
    """The sqlite file is damaged (not a database, malformed), not merely unwritable."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return True
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text


def is_config_error(exc: BaseException, folder: Path) -> bool:
    """True when the spool cannot work until the config or the file permissions change
    (exit 2); False for a fault of the storage (full, failing, read-only) that may pass."""
    if isinstance(exc, OSError):
        return exc.errno in _CONFIG_ERRNOS
    if isinstance(exc, sqlite3.OperationalError) and "unable to open" in str(exc).lower():
        return folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK)
    return False


def describe(exc: BaseException, path: Path | None = None) -> str:
    """The error as one line: sqlite's name for it and, on a full disk, the free space."""
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        text = f"{name}: {exc.strerror or exc}"
    else:
        name = getattr(exc, "sqlite_errorname", "") or type(exc).__name__
        text = f"{name}: {exc}"
    full = getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL" or (
        isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    )
    if full and path is not None:
        try:
            free = shutil.disk_usage(path.parent).free
            text += f" ({free} bytes free in {path.parent})"
        except OSError:
            pass
    return text


class EventSpool:
    """FIFO of (event_id, JSON payload) rows in one sqlite file; see the module docstring.

    `connect=False` makes the object without touching the disk; `open()` then connects (and
    can be retried after a storage fault).
    """

    def __init__(self, path: str | Path, max_events: int = 10000, *, connect: bool = True):
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        self.path = Path(path)
        self.max_events = max_events
        self.dropped = 0  # dropped by this process because the spool was full
        self.quarantined: list[str] = []  # corrupt files moved aside by this process
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._closed = False
        self._depth = 0
        if connect:
            self.open()

    # -- opening -------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._db is not None

    def open(self) -> None:
        """Connect (no-op when open). A damaged file is quarantined and replaced; storage and
        permission errors are raised as they are."""
        with self._lock:
            if self._db is not None:
                return
            if self._closed:
                raise RuntimeError(f"event spool {self.path} is closed")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._db, self._depth = self._connect()
            except sqlite3.DatabaseError as exc:
                if not is_corrupt(exc):
                    raise
                self._quarantine(exc)
                self._db, self._depth = self._connect()

    def _connect(self) -> tuple[sqlite3.Connection, int]:
        # autocommit mode: each statement is its own transaction unless we open one
        db = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=10.0
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS events ("
                " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " event_id TEXT NOT NULL UNIQUE,"
                " payload TEXT NOT NULL,"
                " created_ts REAL NOT NULL)"
            )
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed ({check})")
            depth = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        except BaseException:
            db.close()
            raise
        return db, depth

    def _quarantine(self, exc: BaseException) -> str:
        """Move the damaged file (and its -wal/-shm) aside; the caller starts a fresh one."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        os.replace(self.path, target)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                os.replace(side, target.with_name(target.name + suffix))
        self.quarantined.append(str(target))
        log.error(
            "event spool %s is damaged (%s): moved it aside to %s and started a fresh spool; "
            "the events in the old file are not sent (inspect it with sqlite3)",
            self.path,
            exc,
            target,
        )
        return str(target)

    def reset_corrupt(self, exc: BaseException) -> int:
        """Quarantine a spool found damaged while running and start afresh; returns how many
        rows the old file was counted to hold (they are lost to this process)."""
        with self._lock:
            lost, self._depth = self._depth, 0
            if self._db is not None:
                try:
                    self._db.close()
                except sqlite3.Error:
                    pass
                self._db = None
            if self.path.exists():
                self._quarantine(exc)
            self._db, self._depth = self._connect()
        return lost

    # -- rows -------------------------------------------------------------------------------

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            if self._closed:
                raise RuntimeError(f"event spool {self.path} is closed")
            raise sqlite3.OperationalError(f"event spool {self.path} is not open")
        return self._db

    def _rollback(self, db: sqlite3.Connection) -> None:
        # sqlite rolls a transaction back by itself on some errors (a full disk during COMMIT):
        # a second ROLLBACK would raise "no transaction is active" and hide the real error
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error as exc:
                log.debug("event spool %s: rollback failed: %s", self.path, exc)

    def _recount(self, db: sqlite3.Connection) -> None:
        try:
            self._depth = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        except sqlite3.Error:
            pass  # unreadable as well: keep the last known count, nothing was committed

    def put_many(
        self, items: Iterable[tuple[str, str]], protect: Iterable[str] = ()
    ) -> tuple[list[str], list[str]]:
        """Store events in one transaction (one fsync); returns (ids added, ids dropped).

        An id already waiting is kept as it is (the same event handed in twice is sent once).
        Past `max_events` the oldest rows are dropped, except those in `protect` (events the
        broker may be acknowledging right now). Nothing changes unless the COMMIT succeeds.
        """
        items = list(items)
        with self._lock:
            db = self._require()
            try:
                db.execute("BEGIN IMMEDIATE")
                added: list[str] = []
                now = time.time()
                for event_id, payload in items:
                    cur = db.execute(
                        "INSERT OR IGNORE INTO events (event_id, payload, created_ts) "
                        "VALUES (?,?,?)",
                        (event_id, payload, now),
                    )
                    if cur.rowcount > 0:
                        added.append(event_id)
                depth = self._depth + len(added)
                dropped: list[str] = []
                excess = depth - self.max_events
                if excess > 0:
                    keep = set(protect)
                    rows = db.execute(
                        "SELECT seq, event_id FROM events ORDER BY seq LIMIT ?",
                        (excess + len(keep),),
                    ).fetchall()
                    rows = [r for r in rows if r[1] not in keep][:excess]
                    db.executemany("DELETE FROM events WHERE seq = ?", [(r[0],) for r in rows])
                    dropped = [r[1] for r in rows]
                db.execute("COMMIT")
            except BaseException:
                self._rollback(db)
                self._recount(db)
                raise
            self._depth = depth - len(dropped)
            self.dropped += len(dropped)
        return added, dropped

    def put(self, event_id: str, payload: str) -> list[str]:
        """Store one event; returns the ids of the oldest events dropped to stay bounded."""
        return self.put_many([(event_id, payload)])[1]

    def ack_many(self, event_ids: Iterable[str]) -> list[str]:
        """Delete events in one transaction; returns the ids that were here. Raises on a
        storage fault, with nothing deleted."""
        ids = list(event_ids)
        if not ids:
            return []
        with self._lock:
            db = self._require()
            try:
                db.execute("BEGIN IMMEDIATE")
                gone = []
                for event_id in ids:
                    cur = db.execute("DELETE FROM events WHERE event_id = ?", (event_id,))
                    if cur.rowcount > 0:
                        gone.append(event_id)
                db.execute("COMMIT")
            except BaseException:
                self._rollback(db)
                self._recount(db)
                raise
            self._depth -= len(gone)
        return gone

    def ack(self, event_id: str) -> bool:
        """Delete an event the broker acknowledged; False if it was not (or no longer) here."""
        with self._lock:
            if self._db is None and self._closed:
                return False
        return bool(self.ack_many([event_id]))

    def oldest(
        self, limit: int, exclude: set[str] | frozenset[str] = frozenset()
    ) -> list[SpooledEvent]:
        """Up to `limit` waiting events, oldest first, skipping the ids in `exclude`."""
        if limit <= 0:
            return []
        with self._lock:
            if self._db is None:
                if self._closed:
                    return []
                self._require()
            rows = self._db.execute(
                "SELECT seq, event_id, payload FROM events ORDER BY seq LIMIT ?",
                (limit + len(exclude),),
            ).fetchall()
        out = [SpooledEvent(*r) for r in rows if r[1] not in exclude]
        return out[:limit]

    def depth(self) -> int:
        """Rows in the spool, exact: counted after each COMMIT."""
        with self._lock:
            return self._depth

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._db is not None:
                try:
                    self._db.close()
                except sqlite3.Error as exc:
                    log.debug("event spool %s: close failed: %s", self.path, exc)
                self._db = None
