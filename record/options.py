"""The recorder's command lines checked before anything opens (a database, a broker, a file).

`check_record`, `check_mark` and `check_report` raise `OptionError` (a ValueError: one logged
line, exit code 2) for the first option that cannot work: ports outside 1-65535, NaN or
infinite numbers, negative counts and durations, MQTT topic characters (`+ # /`) in device ids
and share groups, an in-memory SQLite "database" (each connection would get its own, empty one
and everything is gone at exit), a file that is not SQLite, a schedule that is not UTF-8 (named),
times that are not times. `discard_if_empty` removes a database file that a refused run created
and left without a single row, so a refusal leaves nothing behind.
"""

from __future__ import annotations

import argparse
import math
import os
import sqlite3
from pathlib import Path

SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
TEXT_MAX = 200  # a marker's session, participant, group, label and tags
TAGS_MAX = 64
SESSION_EXPIRY_MAX = 2**32 - 1  # MQTT 5: a four-byte interval
RECEIVE_MAX_MAX = 65535


class OptionError(ValueError):
    """An option that cannot work; the message names it."""


# -- one value ----------------------------------------------------------------------------------


def port(value: int, flag: str) -> None:
    if not 1 <= value <= 65535:
        raise OptionError(f"{flag}: a TCP port is 1-65535, got {value}")


def number(
    value: float | None,
    flag: str,
    *,
    lo: float | None = None,
    above: float | None = None,
    hi: float | None = None,
) -> None:
    """A finite number within bounds (`lo` inclusive, `above` exclusive); None passes."""
    if value is None:
        return
    if not math.isfinite(value):
        raise OptionError(f"{flag}: must be a finite number, got {value}")
    if lo is not None and value < lo:
        raise OptionError(f"{flag}: must be >= {lo:g}, got {value:g}")
    if above is not None and value <= above:
        raise OptionError(f"{flag}: must be > {above:g}, got {value:g}")
    if hi is not None and value > hi:
        raise OptionError(f"{flag}: must be <= {hi:g}, got {value:g}")


def device_id(value: str, flag: str) -> None:
    from emotion_edge_record.payloads import Limits, Reject, check_device

    try:
        check_device(value, Limits(), flag)
    except Reject:
        raise OptionError(
            f"{flag} {value!r}: a device id is 1-64 of A-Z a-z 0-9 _ . - (no MQTT wildcard "
            "'+' or '#', no '/'); leave --device out to record every device"
        ) from None


def topic_level(value: str, flag: str) -> None:
    """One level of an MQTT topic filter, such as a share group's name."""
    bad = sorted({c for c in value if c in "/+#\x00"})
    if not value or bad:
        raise OptionError(
            f"{flag} {value!r}: must be a non-empty name without {', '.join(map(repr, bad))}"
            if bad
            else f"{flag}: must not be empty"
        )


def topic_prefix(value: str, flag: str) -> None:
    if not value or any(c in value for c in "+#\x00") or value[0] == "/" or value[-1] == "/":
        raise OptionError(
            f"{flag} {value!r}: must be a non-empty topic without '+', '#' or a leading or "
            "trailing '/' (the daemon's [mqtt] topic_prefix)"
        )


def text(value: str | None, flag: str, max_len: int = TEXT_MAX) -> None:
    if value is not None and not 0 < len(value) <= max_len:
        raise OptionError(f"{flag}: 1-{max_len} characters, got {len(value)}")


def when(value: str | None, flag: str) -> float | None:
    """Epoch seconds of an ISO 8601 time or a finite epoch number."""
    from emotion_edge_record.payloads import parse_time

    if value is None:
        return None
    try:
        ts = parse_time(value)
    except ValueError as exc:
        raise OptionError(f"{flag}: {exc}") from None
    if not math.isfinite(ts):
        raise OptionError(f"{flag}: {value!r} is not a time")
    return ts


def schedule(path: str | None, flag: str = "--schedule") -> None:
    """The whole schedule read now, so a bad file is refused before anything opens."""
    from emotion_edge_record.payloads import read_schedule

    if path is None:
        return
    try:
        read_schedule(path)
    except UnicodeDecodeError as exc:
        raise OptionError(
            f"{flag} {path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); save the CSV as UTF-8"
        ) from None
    except OSError as exc:
        raise OptionError(f"{flag} {path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise OptionError(f"{flag}: {exc}") from None


def readable_file(path: str | None, flag: str) -> None:
    if path is None:
        return
    p = Path(path).expanduser()
    if not p.exists():
        raise OptionError(f"{flag} {path}: no such file")
    if p.is_dir():
        raise OptionError(f"{flag} {path}: a folder, not a file")
    if not os.access(p, os.R_OK):
        raise OptionError(f"{flag} {path}: not readable")


def writable_parent(path: str | None, flag: str) -> None:
    if path is None:
        return
    parent = Path(path).expanduser().absolute().parent
    if not parent.is_dir():
        raise OptionError(f"{flag} {path}: folder {parent} does not exist")
    if Path(path).expanduser().is_dir():
        raise OptionError(f"{flag} {path}: a folder, not a file")


# -- databases ----------------------------------------------------------------------------------


def sqlite_file(target: str) -> Path | None:
    """The file an SQLite --db names (None for PostgreSQL and for in-memory targets)."""
    t = str(target)
    if "://" not in t:
        return Path(t).expanduser()
    scheme, rest = t.split("://", 1)
    if scheme.split("+")[0] != "sqlite" or not rest.startswith("/"):
        return None
    path = rest[1:].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def database(target: str, flag: str = "--db", must_exist: bool = False) -> None:
    """An SQLite file (new, or a SQLite database) or a postgresql:// URL with a valid port."""
    t = str(target)
    if "://" in t:
        scheme = t.split("://", 1)[0].split("+")[0].lower()
        if scheme == "sqlite":
            if sqlite_file(t) is None or "mode=memory" in t:
                raise OptionError(
                    f"{flag} {t}: an in-memory SQLite database is empty for each connection and "
                    "gone at exit; give a file (a path, or sqlite:////abs/path.sqlite)"
                )
        elif scheme in ("postgresql", "postgres"):
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError

            try:
                url = make_url(t)
            except (ArgumentError, ValueError) as exc:
                raise OptionError(f"{flag}: not a valid database URL ({exc})") from None
            if url.port is not None:
                port(url.port, f"{flag} port")
            return
        else:
            raise OptionError(
                f"{flag} {scheme}://...: only SQLite files and postgresql:// URLs are supported"
            )
    path = sqlite_file(t)
    assert path is not None
    if path.is_dir():
        raise OptionError(f"{flag} {path}: a folder, not a database file")
    if path.exists():
        if path.stat().st_size and _head(path) != SQLITE_MAGIC:
            raise OptionError(f"{flag} {path}: not a SQLite database (an existing other file)")
        return
    if must_exist:
        raise OptionError(f"{flag} {path}: no such database file")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OptionError(f"{flag} {path}: cannot create it (folder {parent} is not writable)")


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(16)
    except OSError as exc:
        raise OptionError(f"{path}: cannot read ({exc.strerror or exc})") from None


def new_database_file(target: str) -> Path | None:
    """The SQLite file this run would create (None: it exists already, or not SQLite)."""
    path = sqlite_file(target)
    return path if path is not None and not path.exists() else None


def discard_if_empty(path: Path | None) -> bool:
    """Remove a database file this run created when it holds no row at all (a refused run
    must not leave an empty database behind); True when removed."""
    if path is None or not path.is_file():
        return False
    tables = ("events", "samples", "timeline_faces", "markers", "availability")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            names = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
            rows = sum(
                con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # noqa: S608 - fixed names
                for t in tables
                if t in names
            )
        finally:
            con.close()
    except sqlite3.DatabaseError:
        rows = 0 if path.stat().st_size == 0 else 1  # keep what is not ours to judge
    if rows:
        return False
    for p in (path, *(path.with_name(path.name + s) for s in SQLITE_SIDE_FILES)):
        p.unlink(missing_ok=True)
    return True


# -- whole command lines ------------------------------------------------------------------------


def _mqtt(args: argparse.Namespace) -> None:
    port(args.mqtt_port, "--mqtt-port")
    topic_prefix(args.prefix, "--prefix")


def _marker_texts(args: argparse.Namespace) -> None:
    for flag in ("session", "participant", "group"):
        text(getattr(args, flag, None), f"--{flag}")
    if len(args.tag) > TAGS_MAX:
        raise OptionError(f"--tag: at most {TAGS_MAX} tags, got {len(args.tag)}")
    for tag in args.tag:
        text(tag, "--tag")


def _source(args: argparse.Namespace) -> None:
    """A video file or a folder of images that exists, and a config that loads."""
    from emotion_edge.cli import parse_source_spec
    from emotion_edge.errors import EmotionEdgeError

    try:
        kind, uri = parse_source_spec(args.source)
    except EmotionEdgeError:
        return  # other kinds are the in-process recorder's to refuse
    if kind not in ("video", "images") or not uri:
        return
    path = Path(uri).expanduser()
    if kind == "video" and not path.is_file():
        raise OptionError(
            f"--source {args.source}: {'a folder' if path.is_dir() else 'no such file'}"
        )
    if kind == "images" and not path.is_dir():
        raise OptionError(f"--source {args.source}: no such folder")
    readable_file(args.config, "--config")
    from emotion_edge_record.offline import default_device_id, offline_config

    dev = args.device_id or default_device_id(uri)
    offline_config(kind, uri, dev, args.config, args.model, args.detector)  # ConfigError: exit 2


def check_record(args: argparse.Namespace) -> None:
    """emotion-edge-record, before the database opens."""
    database(args.db, must_exist=getattr(args, "delete_participant", None) is not None)
    _mqtt(args)
    for dev in [*args.device, *args.allow_device]:
        device_id(dev, "--device" if dev in args.device else "--allow-device")
    if args.device_id is not None:
        device_id(args.device_id, "--device-id")
    if args.share_group is not None:
        topic_level(args.share_group, "--share-group")
    if args.client_id is not None and (not args.client_id or "\x00" in args.client_id):
        raise OptionError("--client-id: must be non-empty, without NUL")
    number(args.session_expiry, "--session-expiry", lo=0, hi=SESSION_EXPIRY_MAX)
    number(args.receive_max, "--receive-max", lo=1, hi=RECEIVE_MAX_MAX)
    number(args.duration, "--duration", above=0)
    number(args.interval, "--interval", lo=0)
    number(args.max_skew_s, "--max-skew-s")
    number(args.max_payload_bytes, "--max-payload-bytes", lo=1)
    number(args.max_frames, "--max-frames", lo=1)
    when(args.start, "--start")
    _marker_texts(args)
    schedule(args.schedule)
    writable_parent(args.stats_json, "--stats-json")
    writable_parent(args.ready_file, "--ready-file")
    if args.jsonl is not None and args.jsonl != "-":
        readable_file(args.jsonl, "--jsonl")
    if args.source:
        _source(args)


def check_mark(args: argparse.Namespace) -> None:
    """emotion-edge-mark, before the broker is contacted."""
    _mqtt(args)
    device_id(args.device, "--device")
    number(args.timeout, "--timeout", above=0, hi=3600)
    when(args.at, "--at")
    text(args.label, "label")
    _marker_texts(args)
    schedule(args.schedule)


def check_report(args: argparse.Namespace) -> None:
    """emotion-edge-report, before the database opens."""
    database(args.db, "DB", must_exist=True)
    since, until = when(args.since, "--since"), when(args.until, "--until")
    if since is not None and until is not None and since >= until:
        raise OptionError(f"--since {args.since} is not before --until {args.until}")
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise OptionError(f"--out {args.out}: a file, not a folder")
