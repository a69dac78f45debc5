"""The recorder's database: SQLAlchemy Core tables, versioned migrations, idempotent writes.

One schema for SQLite (a single file in WAL mode, the default) and PostgreSQL (a URL, for
fleets and several recorders at once, through psycopg 3). Rows are keyed by the ids the
daemon gives them (event_id, sample_id, marker_id), and every insert is
`ON CONFLICT DO NOTHING`, so a message delivered twice (MQTT QoS 1 is at least once, and
several recorders may write into one database) is stored once.

Migrations: `schema_version` holds one row per applied migration; `open_store` applies the
missing ones in order, in one transaction each (on PostgreSQL under an advisory lock, so two
recorders starting together do not race), and refuses a database newer than this code.

`Store.write(batch)` commits a batch in one transaction. A database that is gone, locked or
full raises `StoreUnavailable` (the caller retries and acknowledges nothing meanwhile); a
batch the database refuses for its data is retried message by message and the refused ones
are returned, so one bad message never blocks the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from emotion_edge_record.payloads import LABELS, Parsed
from sqlalchemy import (
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", String(200), nullable=False),
    Column("applied_ts", Float, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("event_id", String(32), primary_key=True),
    Column("device_id", String(64), nullable=False),
    Column("face_id", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("emotion", String(16), nullable=False),
    Column("confidence", Float, nullable=False),
    Column("previous_emotion", String(16)),
    Column("top", Text, nullable=False),
    Column("box_x", Float, nullable=False),
    Column("box_y", Float, nullable=False),
    Column("box_w", Float, nullable=False),
    Column("box_h", Float, nullable=False),
    Column("frame_index", Integer, nullable=False),
    Column("frame_width", Integer, nullable=False),
    Column("frame_height", Integer, nullable=False),
    Column("captured_ts", Float, nullable=False),
    Column("published_ts", Float, nullable=False),
    Column("duration_s", Float),
    Column("model_version", String(200), nullable=False),
    Column("received_ts", Float, nullable=False),
)

samples = Table(
    "samples",
    metadata,
    Column("sample_id", String(32), primary_key=True),
    Column("device_id", String(64), nullable=False),
    Column("captured_ts", Float, nullable=False),
    Column("published_ts", Float, nullable=False),
    Column("frame_index", Integer, nullable=False),
    Column("frame_width", Integer, nullable=False),
    Column("frame_height", Integer, nullable=False),
    Column("file_name", String(1000)),
    Column("face_count", Integer, nullable=False),
    Column("model_version", String(200), nullable=False),
    Column("received_ts", Float, nullable=False),
)

timeline_faces = Table(
    "timeline_faces",
    metadata,
    Column("sample_id", String(32), primary_key=True),
    Column("face_id", Integer, primary_key=True, autoincrement=False),
    Column("device_id", String(64), nullable=False),
    Column("captured_ts", Float, nullable=False),
    Column("file_name", String(1000)),
    Column("box_x", Float, nullable=False),
    Column("box_y", Float, nullable=False),
    Column("box_w", Float, nullable=False),
    Column("box_h", Float, nullable=False),
    *[Column(f"p_{lab}", Float, nullable=False) for lab in LABELS],
    Column("emotion", String(16), nullable=False),
    Column("confidence", Float, nullable=False),
)

markers = Table(
    "markers",
    metadata,
    Column("marker_id", String(32), primary_key=True),
    Column("device_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("action", String(8), nullable=False),
    Column("label", String(200), nullable=False),
    Column("ts", Float, nullable=False),
    Column("session", String(200)),
    Column("participant", String(200)),
    Column("group_name", String(200)),
    Column("tags", Text, nullable=False),
    Column("meta", Text, nullable=False),
    Column("source", String(200)),
    Column("received_ts", Float, nullable=False),
)

availability = Table(
    "availability",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("received_ts", Float, nullable=False),
)

INDEXES = (
    Index("ix_events_device_ts", events.c.device_id, events.c.captured_ts),
    Index("ix_samples_device_ts", samples.c.device_id, samples.c.captured_ts),
    Index("ix_timeline_faces_device_ts", timeline_faces.c.device_id, timeline_faces.c.captured_ts),
    Index("ix_markers_device_ts", markers.c.device_id, markers.c.ts),
    Index("ix_availability_device", availability.c.device_id, availability.c.id),
)

# table name -> (table, key column for idempotency and counting)
KEYED = {
    "events": (events, "event_id"),
    "samples": (samples, "sample_id"),
    "markers": (markers, "marker_id"),
}


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def _m1_tables(conn: Connection) -> None:
    for t in (events, samples, timeline_faces, markers, availability):
        t.create(conn, checkfirst=True)


def _m2_indexes(conn: Connection) -> None:
    for ix in INDEXES:
        ix.create(conn, checkfirst=True)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "events, timeline samples and faces, markers, availability", _m1_tables),
    Migration(2, "indexes by device and time for reports", _m2_indexes),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


class StoreError(Exception):
    """The database cannot be used (bad URL, newer schema): a user error."""


class StoreUnavailable(Exception):
    """The database is away, locked or full right now: retry later."""


def db_url(target: str) -> str:
    """A SQLAlchemy URL from a file path, sqlite:///..., or postgresql://... (psycopg 3)."""
    t = str(target)
    if t.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + t.split("://", 1)[1]
    if "://" in t:
        return t
    return f"sqlite:///{Path(t).expanduser().resolve()}"


def redact(url: str) -> str:
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}"
    return url


def make_engine(target: str) -> Engine:
    url = db_url(target)
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # every pooled connection
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed batch survives a power cut; nothing is acknowledged earlier
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    if url.startswith("postgresql"):
        return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2)
    raise StoreError(f"--db {redact(url)}: only SQLite files and postgresql:// URLs are supported")


def _insert(dialect: str, table: Table):
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing()


@dataclass
class WriteResult:
    stored: dict[str, int] = field(default_factory=dict)  # kind -> new rows
    duplicates: dict[str, int] = field(default_factory=dict)  # kind -> already there
    refused: list[tuple[Parsed, str]] = field(default_factory=list)  # data the DB refused


_KIND_TABLE = {"event": "events", "timeline": "samples", "marker": "markers"}


class Store:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.dialect = engine.dialect.name
        self._last_status: dict[str, str] = {}
        self._status_loaded = False

    @property
    def url(self) -> str:
        return redact(self.engine.url.render_as_string(hide_password=True))

    # -- migrations ---------------------------------------------------------------------------

    def migrate(self) -> int:
        """Apply missing migrations; returns the schema version now in the database."""
        try:
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(190019)"))
                schema_version.create(conn, checkfirst=True)
                have = conn.execute(select(func.max(schema_version.c.version))).scalar() or 0
                if have > SCHEMA_VERSION:
                    raise StoreError(
                        f"database {self.url} has schema version {have}, newer than this "
                        f"recorder's {SCHEMA_VERSION}: upgrade emotion-edge"
                    )
                for m in MIGRATIONS:
                    if m.version <= have:
                        continue
                    m.apply(conn)
                    conn.execute(
                        schema_version.insert().values(
                            version=m.version, description=m.description, applied_ts=time.time()
                        )
                    )
                    log.info("database %s: migration %d (%s)", self.url, m.version, m.description)
            return self.version()
        except sa_exc.OperationalError as exc:
            raise StoreError(f"cannot open database {self.url}: {_short(exc)}") from None

    def version(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.max(schema_version.c.version))).scalar() or 0

    # -- writing ------------------------------------------------------------------------------

    def write(self, batch: Sequence[Parsed]) -> WriteResult:
        """Commit `batch` in one transaction (see the module docstring)."""
        try:
            try:
                return self._write(batch)
            except (sa_exc.IntegrityError, sa_exc.DataError, sa_exc.ProgrammingError):
                if len(batch) == 1:
                    raise
            # one message's data is refused: write them one by one to find it
            result = WriteResult()
            for item in batch:
                try:
                    r = self._write([item])
                except (sa_exc.IntegrityError, sa_exc.DataError, sa_exc.ProgrammingError) as exc:
                    result.refused.append((item, _short(exc)))
                    continue
                for k, v in r.stored.items():
                    result.stored[k] = result.stored.get(k, 0) + v
                for k, v in r.duplicates.items():
                    result.duplicates[k] = result.duplicates.get(k, 0) + v
            return result
        except (sa_exc.IntegrityError, sa_exc.DataError, sa_exc.ProgrammingError) as exc:
            return WriteResult(refused=[(batch[0], _short(exc))])
        except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DBAPIError) as exc:
            raise StoreUnavailable(_short(exc)) from None

    def _write(self, batch: Sequence[Parsed]) -> WriteResult:
        result = WriteResult()
        by_table: dict[str, dict[str, dict]] = {name: {} for name in KEYED}
        faces: dict[str, list[dict]] = {}
        status: list[dict] = []
        for item in batch:
            for name, rows in item.rows.items():
                if name in KEYED:
                    key = KEYED[name][1]
                    for r in rows:
                        if r[key] in by_table[name]:
                            result.duplicates[item.kind] = result.duplicates.get(item.kind, 0) + 1
                        by_table[name].setdefault(r[key], r)
                elif name == "timeline_faces":
                    faces.setdefault(item.key, []).extend(rows)
                elif name == "availability":
                    status.extend(rows)
        kinds = {v: k for k, v in _KIND_TABLE.items()}
        new_status = None
        with self.engine.begin() as conn:
            for name, rows_by_key in by_table.items():
                if not rows_by_key:
                    continue
                table, key = KEYED[name]
                stmt = _insert(self.dialect, table).returning(table.c[key])
                new = set(conn.execute(stmt, list(rows_by_key.values())).scalars())
                kind = kinds[name]
                result.stored[kind] = result.stored.get(kind, 0) + len(new)
                dup = len(rows_by_key) - len(new)
                if dup:
                    result.duplicates[kind] = result.duplicates.get(kind, 0) + dup
                if name == "samples":
                    face_rows = [r for sid in new for r in faces.get(sid, ())]
                    if face_rows:
                        conn.execute(_insert(self.dialect, timeline_faces), face_rows)
            if status:
                new_status = self._write_status(conn, status, result)
        if new_status is not None:  # committed: the cache is the database's state now
            self._last_status = new_status
        return result

    def _write_status(self, conn: Connection, rows: list[dict], result: WriteResult) -> dict:
        """Availability changes only: a retained `online` seen again on every reconnect is
        not a new row."""
        if not self._status_loaded:
            last = (
                select(availability.c.device_id, func.max(availability.c.id).label("id"))
                .group_by(availability.c.device_id)
                .subquery()
            )
            q = select(availability.c.device_id, availability.c.status).join(
                last, availability.c.id == last.c.id
            )
            self._last_status = {d: s for d, s in conn.execute(q)}
            self._status_loaded = True
        new = []
        last = dict(self._last_status)
        for r in rows:
            if last.get(r["device_id"]) != r["status"]:
                last[r["device_id"]] = r["status"]
                new.append(r)
        if new:
            conn.execute(availability.insert(), new)
        result.stored["availability"] = result.stored.get("availability", 0) + len(new)
        dup = len(rows) - len(new)
        if dup:
            result.duplicates["availability"] = result.duplicates.get("availability", 0) + dup
        return last

    def counts(self) -> dict[str, int]:
        """Rows per table (tests, benchmarks, the recorder's summary)."""
        with self.engine.connect() as conn:
            return {
                t.name: conn.execute(select(func.count()).select_from(t)).scalar() or 0
                for t in (events, samples, timeline_faces, markers, availability)
            }

    def close(self) -> None:
        self.engine.dispose()


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    msg = str(orig if orig is not None else exc).strip().splitlines()
    return (msg[0] if msg else type(exc).__name__)[:300]


def open_store(target: str, migrate: bool = True) -> Store:
    """The Store at a path or URL, migrated to the current schema (StoreError if it cannot)."""
    try:
        store = Store(make_engine(target))
    except (sa_exc.ArgumentError, ImportError) as exc:
        raise StoreError(f"--db {target!r}: {exc}") from None
    if migrate:
        store.migrate()
    return store


# -- reading a recording (the report) -----------------------------------------------------------

SQLITE_MAGIC = b"SQLite format 3\x00"
REQUIRED_TABLES = ("schema_version", "samples", "timeline_faces", "markers", "events")


def open_readonly(target: str) -> Store:
    """A recording opened to be read, never written: a SQLite file read-only (`mode=ro`, or
    `immutable=1` on a read-only mount where SQLite cannot make its WAL index), PostgreSQL in
    read-only transactions. An empty, foreign, corrupt or newer-schema database raises
    StoreError with one line."""
    url = db_url(target)
    if url.startswith("sqlite"):
        path = Path(url.split(":///", 1)[1])
        engine = _readonly_sqlite_engine(path)
    elif url.startswith("postgresql"):
        engine = create_engine(
            url,
            pool_pre_ping=True,
            pool_size=2,
            max_overflow=2,
            connect_args={"options": "-c default_transaction_read_only=on"},
        )
    else:
        raise StoreError(f"{redact(url)}: only SQLite files and postgresql:// URLs are supported")
    store = Store(engine)
    where = str(path) if url.startswith("sqlite") else redact(url)
    try:
        check_recording(store, where)
    except BaseException:
        store.close()
        raise
    return store


def _readonly_sqlite_engine(path: Path) -> Engine:
    import sqlite3
    from urllib.parse import quote

    if not path.is_file():
        raise StoreError(f"{path}: no such database file")
    size = path.stat().st_size
    if size == 0:
        raise StoreError(f"{path}: empty file (0 bytes), not an emotion-edge recording")
    with open(path, "rb") as f:
        if f.read(16) != SQLITE_MAGIC:
            raise StoreError(f"{path}: not a SQLite database (not an emotion-edge recording)")
    base = f"file:{quote(str(path))}?mode=ro"
    wal = path.with_name(path.name + "-wal")
    mode = base
    try:
        con = sqlite3.connect(base, uri=True, timeout=30)
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            con.close()
    except sqlite3.OperationalError as exc:
        # a WAL database on a read-only mount: SQLite cannot create its -shm index; with no
        # pending -wal content the file alone is the whole database and may be read as is
        if wal.exists() and wal.stat().st_size > 0:
            raise StoreError(
                f"{path}: cannot open read-only ({exc}) and it has an unmerged {wal.name}: "
                "copy the folder somewhere writable first"
            ) from None
        mode = f"file:{quote(str(path))}?immutable=1"
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: damaged or not a database ({exc})") from None

    def connect():
        return sqlite3.connect(mode, uri=True, timeout=30, check_same_thread=False)

    engine = create_engine("sqlite://", creator=connect)

    @event.listens_for(engine, "connect")
    def _ro(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA query_only=ON")
        cur.close()

    return engine


def check_recording(store: Store, where: str | None = None, quick_check: bool = True) -> int:
    """The schema version of an emotion-edge recording; StoreError (one line) for an empty,
    foreign, corrupt or newer one. SQLite runs `PRAGMA quick_check` (every page read once)."""
    where = where or store.url
    try:
        with store.engine.connect() as conn:
            if store.dialect == "sqlite" and quick_check:
                res = [r[0] for r in conn.exec_driver_sql("PRAGMA quick_check(5)")]
                if res != ["ok"]:
                    said = " ".join(" ".join(str(x).split()) for x in res)[:200]
                    raise StoreError(f"{where}: the database is damaged ({said})")
            names = set(inspect_tables(conn))
            if not names:
                raise StoreError(f"{where}: an empty database (no tables): not a recording")
            missing = [t for t in REQUIRED_TABLES if t not in names]
            if missing:
                raise StoreError(
                    f"{where}: not an emotion-edge recording (no {', '.join(missing)} table)"
                )
            have = conn.execute(select(func.max(schema_version.c.version))).scalar() or 0
    except sa_exc.DBAPIError as exc:
        raise StoreError(f"{where}: cannot read the database: {_short(exc)}") from None
    if have > SCHEMA_VERSION:
        raise StoreError(
            f"{where}: schema version {have} is newer than this emotion-edge's "
            f"{SCHEMA_VERSION}: upgrade emotion-edge to report it"
        )
    if have < 1:
        raise StoreError(f"{where}: no schema version recorded: not an emotion-edge recording")
    return have


def inspect_tables(conn: Connection) -> list[str]:
    from sqlalchemy import inspect

    return inspect(conn).get_table_names()
