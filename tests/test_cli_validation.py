"""Issue 42 (5): every command line refuses bad input before it opens anything, in one line
with exit code 2, and a refused run leaves no new database file behind.

The table holds the cases of the issue's CLI fuzz pass (before: paho's thread killed and exit 0,
retrying for ever, tracebacks with exit 1, silently accepted values, a schedule error that did
not name its file, 25 refused runs leaving an empty database) and their neighbours. Each runs
the CLI's main() in process (the same function the console script calls) with stderr captured;
a few run the installed console scripts to show the same from outside.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from mqtt_broker import free_port
from test_image_limits import photo, png_bomb


@dataclass(frozen=True)
class Case:
    prog: str  # daemon | record | mark | report
    args: Callable[[Path], list[str]]  # built in the case's own folder
    says: str  # in the one error line
    # refused only once the run has begun (the folder's images are read after the database
    # opened): progress lines come first, the error is still one line, the new file still goes
    after_open: bool = False


def _jsonl(d: Path) -> str:
    from emotion_edge_record.payloads import marker_payload

    p = d / "in.jsonl"
    p.write_text(json.dumps(marker_payload("d1", "session", "start", "s1")) + "\n")
    return str(p)


def _photos(d: Path) -> str:
    import cv2

    folder = d / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), photo())
    return str(folder)


def _file(d: Path, name: str, data: bytes) -> str:
    (d / name).write_bytes(data)
    return str(d / name)


def _bomb_only(d: Path) -> Path:
    folder = d / "bomb"
    folder.mkdir()
    (folder / "bomb.png").write_bytes(png_bomb())
    return folder


def _db(d: Path) -> str:
    return str(d / "rec.sqlite")


def _recording(d: Path) -> str:
    """A real recording for the report (made by the recorder from one JSON line)."""
    from emotion_edge_record.cli import record_main

    db = d / "made.sqlite"
    assert record_main(["--db", str(db), "--jsonl", _jsonl(d), "--log-level", "ERROR"]) == 0
    return str(db)


MQTT = ["--mqtt-host", "127.0.0.1", "--duration", "1"]
NON_UTF8_SCHEDULE = b"stimulus,start,end\nclip-\xff,0,5\n"


def rec(*extra: str | Callable[[Path], str], db: bool = True):
    """emotion-edge-record arguments: --db in the case folder, then `extra` (callables get the
    folder)."""

    def build(d: Path) -> list[str]:
        head = ["--db", _db(d)] if db else []
        return head + [x(d) if callable(x) else x for x in extra]

    return build


def args(*items: str | Callable[[Path], str]):
    return lambda d: [x(d) if callable(x) else x for x in items]


CASES: dict[str, Case] = {
    # -- emotion-edge-record: topics and ids
    "record_device_slash_hash": Case("record", rec(*MQTT, "--device", "a/#"), "--device 'a/#'"),
    "record_device_hash": Case("record", rec(*MQTT, "--device", "#"), "no MQTT wildcard"),
    "record_device_plus": Case("record", rec(*MQTT, "--device", "+"), "--device '+'"),
    "record_allow_device_hash": Case(
        "record", rec("--jsonl", _jsonl, "--allow-device", "x#"), "--allow-device 'x#'"
    ),
    "record_device_id_slash": Case(
        "record",
        rec("--source", lambda d: f"images:{_photos(d)}", "--device-id", "a/b"),
        "--device-id 'a/b'",
    ),
    "record_share_group_slash_plus": Case(
        "record", rec(*MQTT, "--share-group", "g/+"), "--share-group 'g/+'"
    ),
    "record_share_group_empty": Case("record", rec(*MQTT, "--share-group", ""), "--share-group"),
    "record_prefix_hash": Case("record", rec(*MQTT, "--prefix", "a/#"), "--prefix 'a/#'"),
    # -- emotion-edge-record: databases
    "record_db_sqlite_empty_url": Case(
        "record", rec("--db", "sqlite://", "--jsonl", _jsonl, db=False), "in-memory SQLite"
    ),
    "record_db_sqlite_memory": Case(
        "record", rec("--db", "sqlite:///:memory:", "--jsonl", _jsonl, db=False), "in-memory"
    ),
    "record_db_text_file": Case(
        "record",
        rec(
            "--db",
            lambda d: _file(d, "notes.txt", b"not a database\n"),
            "--jsonl",
            _jsonl,
            db=False,
        ),
        "not a SQLite database",
    ),
    "record_db_folder": Case(
        "record", rec("--db", lambda d: str(d), "--jsonl", _jsonl, db=False), "a folder"
    ),
    "record_db_mysql": Case(
        "record", rec("--db", "mysql://u@h/db", "--jsonl", _jsonl, db=False), "postgresql://"
    ),
    "record_db_postgres_port_99999": Case(
        "record",
        rec("--db", "postgresql://u@127.0.0.1:99999/db", "--jsonl", _jsonl, db=False),
        "1-65535, got 99999",
    ),
    "record_db_postgres_port_abc": Case(
        "record",
        rec("--db", "postgresql://u@127.0.0.1:abc/db", "--jsonl", _jsonl, db=False),
        "not a valid database URL",
    ),
    "record_db_postgres_refused": Case(
        "record",
        rec(
            "--db",
            lambda d: f"postgresql://u@127.0.0.1:{free_port()}/db",
            "--jsonl",
            _jsonl,
            db=False,
        ),
        "cannot open database",
    ),
    # -- emotion-edge-record: numbers
    "record_mqtt_port_70000": Case(
        "record", rec("--mqtt-host", "127.0.0.1", "--mqtt-port", "70000"), "1-65535, got 70000"
    ),
    "record_receive_max_0": Case("record", rec(*MQTT, "--receive-max", "0"), "--receive-max"),
    "record_receive_max_70000": Case(
        "record", rec(*MQTT, "--receive-max", "70000"), "--receive-max"
    ),
    "record_session_expiry_negative": Case(
        "record", rec(*MQTT, "--session-expiry", "-1"), "--session-expiry"
    ),
    "record_duration_negative": Case(
        "record", rec("--mqtt-host", "127.0.0.1", "--duration", "-5"), "--duration: must be > 0"
    ),
    "record_duration_nan": Case(
        "record", rec("--mqtt-host", "127.0.0.1", "--duration", "nan"), "finite"
    ),
    "record_interval_nan": Case(
        "record",
        rec("--source", lambda d: f"images:{_photos(d)}", "--interval", "nan"),
        "--interval: must be a finite number",
    ),
    "record_interval_negative": Case(
        "record",
        rec("--source", lambda d: f"images:{_photos(d)}", "--interval", "-1"),
        "--interval: must be >= 0",
    ),
    "record_max_frames_negative": Case(
        "record",
        rec("--source", lambda d: f"images:{_photos(d)}", "--max-frames", "-1"),
        "--max-frames: must be >= 1",
    ),
    "record_max_frames_0": Case(
        "record",
        rec("--source", lambda d: f"images:{_photos(d)}", "--max-frames", "0"),
        "--max-frames",
    ),
    "record_max_skew_nan": Case(
        "record", rec("--jsonl", _jsonl, "--max-skew-s", "nan"), "--max-skew-s"
    ),
    "record_max_payload_0": Case(
        "record", rec("--jsonl", _jsonl, "--max-payload-bytes", "0"), "--max-payload-bytes"
    ),
    "record_start_nan": Case(
        "record",
        rec("--source", lambda d: f"images:{_photos(d)}", "--start", "nan"),
        "--start: 'nan' is not a time",
    ),
    "record_start_garbage": Case(
        "record",
        rec("--source", lambda d: f"images:{_photos(d)}", "--start", "yesterday"),
        "--start",
    ),
    # -- emotion-edge-record: files
    "record_schedule_not_utf8": Case(
        "record",
        rec(
            "--source",
            lambda d: f"images:{_photos(d)}",
            "--schedule",
            lambda d: _file(d, "stimuli.csv", NON_UTF8_SCHEDULE),
        ),
        "stimuli.csv: not UTF-8",
    ),
    "record_schedule_missing": Case(
        "record",
        rec("--source", lambda d: f"images:{_photos(d)}", "--schedule", "/nonexistent/s.csv"),
        "/nonexistent/s.csv",
    ),
    "record_jsonl_missing": Case(
        "record", rec("--jsonl", "/nonexistent/in.jsonl"), "--jsonl /nonexistent/in.jsonl"
    ),
    "record_source_video_missing": Case(
        "record", rec("--source", "video:/nonexistent/clip.mp4"), "no such file"
    ),
    "record_source_folder_missing": Case(
        "record", rec("--source", "images:/nonexistent/photos"), "no such folder"
    ),
    "record_source_only_a_bomb": Case(
        "record",
        rec("--source", lambda d: f"images:{_bomb_only(d)}"),
        "none of the 1 images",
        after_open=True,
    ),
    "record_config_missing": Case(
        "record",
        rec("--source", lambda d: f"images:{_photos(d)}", "--config", "/nonexistent/c.toml"),
        "--config /nonexistent/c.toml",
    ),
    "record_detector_unknown": Case(
        "record",
        rec("--source", lambda d: f"images:{_photos(d)}", "--detector", "dlib"),
        "detector.kind",
    ),
    "record_participant_too_long": Case(
        "record",
        rec("--source", lambda d: f"images:{_photos(d)}", "--participant", "p" * 201),
        "--participant: 1-200 characters",
    ),
    "record_stats_json_no_folder": Case(
        "record",
        rec("--jsonl", _jsonl, "--stats-json", "/nonexistent/s.json"),
        "does not exist",
    ),
    "record_bad_int_argparse": Case(
        "record", rec("--jsonl", _jsonl, "--mqtt-port", "x"), "invalid int value"
    ),
    # -- emotion-edge-mark
    "mark_schedule_not_utf8": Case(
        "mark",
        args(
            "--stdout",
            "--device",
            "d1",
            "--schedule",
            lambda d: _file(d, "stimuli.csv", NON_UTF8_SCHEDULE),
        ),
        "stimuli.csv: not UTF-8",
    ),
    "mark_at_nan": Case(
        "mark", args("--stdout", "--device", "d1", "--at", "nan", "start", "clip"), "--at"
    ),
    "mark_timeout_nan": Case(
        "mark",
        args("--mqtt-host", "127.0.0.1", "--device", "d1", "--timeout", "nan", "start", "clip"),
        "--timeout",
    ),
    "mark_timeout_0": Case(
        "mark",
        args("--mqtt-host", "127.0.0.1", "--device", "d1", "--timeout", "0", "start", "clip"),
        "--timeout",
    ),
    "mark_device_hash": Case("mark", args("--stdout", "--device", "#", "start", "c"), "'#'"),
    "mark_mqtt_port_70000": Case(
        "mark",
        args("--mqtt-host", "h", "--mqtt-port", "70000", "--device", "d1", "start", "c"),
        "1-65535",
    ),
    "mark_label_too_long": Case(
        "mark", args("--stdout", "--device", "d1", "start", "x" * 201), "label: 1-200"
    ),
    # -- emotion-edge-report
    "report_until_nan": Case(
        "report",
        args(_recording, "--out", lambda d: str(d / "out"), "--until", "nan"),
        "--until: 'nan' is not a time",
    ),
    "report_since_after_until": Case(
        "report",
        args(_recording, "--out", lambda d: str(d / "out"), "--since", "2000", "--until", "1000"),
        "is not before --until",
    ),
    "report_db_text_file": Case(
        "report",
        args(lambda d: _file(d, "notes.txt", b"text\n"), "--out", lambda d: str(d / "o")),
        "not a SQLite database",
    ),
    "report_db_missing": Case(
        "report",
        args("/nonexistent/r.sqlite", "--out", lambda d: str(d / "o")),
        "no such database file",
    ),
    "report_db_memory": Case(
        "report", args("sqlite://", "--out", lambda d: str(d / "o")), "in-memory"
    ),
    "report_out_is_a_file": Case(
        "report",
        args(_recording, "--out", lambda d: _file(d, "out.txt", b"x")),
        "a file, not a folder",
    ),
    # -- emotion-edge (the daemon)
    "daemon_mqtt_port_70000_dry_run": Case(
        "daemon", args("--dry-run", "--mqtt-port", "70000"), "--mqtt-port"
    ),
    "daemon_duration_nan": Case("daemon", args("--duration", "nan"), "--duration"),
    "daemon_duration_inf": Case("daemon", args("--duration", "inf"), "--duration"),
    "daemon_duration_negative": Case("daemon", args("--duration", "-5"), "--duration"),
    "daemon_max_frames_negative": Case("daemon", args("--max-frames", "-1"), "--max-frames"),
    "daemon_device_id_hash": Case("daemon", args("--device-id", "a/#"), "device.id"),
    "daemon_budget_nan": Case("daemon", args("--budget-ms", "nan"), "budget_ms"),
    "daemon_bad_int_argparse": Case("daemon", args("--max-frames", "ten"), "invalid int value"),
}


def _main(prog: str):
    if prog == "daemon":
        from emotion_edge.cli import main
    else:
        from emotion_edge_record import cli

        main = {"record": cli.record_main, "mark": cli.mark_main, "report": cli.report_main}[prog]
    return main


def _files(d: Path) -> set[Path]:
    return {p for p in d.rglob("*") if p.is_file()}


def _flush_logs() -> None:
    """Flush every log handler into the captured output. Not logging.shutdown(): that closes
    handlers, and absl's (TensorFlow, imported by the training tests) closes the real stderr
    with it, which kills the pytest process."""
    for ref in list(logging._handlerList):
        handler = ref()
        if handler is not None:
            handler.flush()


@pytest.mark.parametrize("name", list(CASES))
def test_user_error_is_one_line_exit_2_and_leaves_no_database(name, tmp_path, capfd):
    case = CASES[name]
    argv = case.args(tmp_path)
    before = _files(tmp_path)
    capfd.readouterr()
    try:
        rc = _main(case.prog)(argv)
    except SystemExit as exc:  # argparse's refusals
        rc = exc.code
    _flush_logs()
    out, err = capfd.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    if case.after_open:
        lines = [line for line in lines if " ERROR " in line]
    assert rc == 2, (rc, err[-2000:])
    assert len(lines) == 1, err[-2000:]
    assert case.says in lines[0], lines[0]
    assert "Traceback" not in err and "unexpected error" not in err
    assert _files(tmp_path) == before, "a refused run left files behind"


def _script(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    assert path.is_file(), f"{name} is not installed in the venv"
    return str(path)


@pytest.mark.parametrize(
    ("script", "argv", "says"),
    [
        ("emotion-edge-record", ["--mqtt-host", "127.0.0.1", "--device", "a/#"], "--device"),
        ("emotion-edge-record", ["--db=sqlite:///:memory:", "--jsonl", "-"], "in-memory"),
        ("emotion-edge-mark", ["--stdout", "--device", "d1", "--at", "nan", "end", "c"], "--at"),
        ("emotion-edge-report", ["sqlite://", "--out", "o"], "in-memory"),
        ("emotion-edge", ["--duration", "nan"], "--duration"),
    ],
    ids=["record", "record_memory", "mark", "report", "daemon"],
)
def test_console_scripts_refuse_the_same_way(script, argv, says, tmp_path):
    if script == "emotion-edge-record" and "--db=sqlite:///:memory:" not in argv:
        argv = ["--db", str(tmp_path / "r.sqlite"), *argv]
    p = subprocess.run(
        [_script(script), *argv], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2 and len(lines) == 1 and says in lines[0], p.stderr
    assert not list(tmp_path.iterdir()), "a refused run left files behind"


def test_a_refused_run_keeps_an_existing_recording(tmp_path):
    """Only a file the refused run itself created goes: an existing recording stays whole."""
    from emotion_edge_record.cli import record_main

    db = _recording(tmp_path)
    size = Path(db).stat().st_size
    assert record_main(["--db", db, "--source", f"images:{_bomb_only(tmp_path)}"]) == 2
    assert Path(db).is_file() and Path(db).stat().st_size >= size


def test_a_successful_run_keeps_its_new_database_even_when_empty(tmp_path):
    from emotion_edge_record.cli import record_main

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    db = tmp_path / "new.sqlite"
    assert record_main(["--db", str(db), "--jsonl", str(empty)]) == 0
    assert db.is_file()  # a valid, empty recording: not the refusal cleanup's to remove
