"""`emotion-edge-record --delete-participant CODE`: the right to withdraw.

A real SQLite file and a real PostgreSQL database with several participants' sessions
(markers as emotion-edge-study sends them, timeline samples and events as the daemon sends
them, through the recorder's Writer); deleting one removes every row of theirs and nothing of
the others'.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from emotion_edge_record.ingest import Pending, Writer
from emotion_edge_record.payloads import marker_payload
from emotion_edge_record.store import open_store
from pg_cluster import PgCluster
from sqlalchemy import select
from test_record_mqtt import make_event, make_sample

BIN = Path(sys.executable).parent
T0 = 1_790_000_000.0


@pytest.fixture(scope="module")
def pg_cluster():
    c = PgCluster.create()  # skips where PostgreSQL is absent
    yield c
    c.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "rec.sqlite")
    return request.getfixturevalue("pg_cluster").new_database()


def record(db: str, payloads: list[dict]) -> None:
    store = open_store(db)
    w = Writer(store, live=False)
    w.start()
    for p in payloads:
        w.submit(Pending(json.dumps(p), None, None, T0 + 3600))
    assert w.finish(30)
    store.close()


def session(dev: str, code: str, group: str, t: float, n: int, end: bool = True) -> list[dict]:
    """A session of `code` from t to t + 10 with one clip, n samples and n events inside."""
    sid = f"films-{code}-{int(t)}"
    who = {"participant": code, "group": group, "source": "emotion-edge-study"}
    out = [marker_payload(dev, "session", "start", sid, t, session=sid, **who)]
    out += [
        marker_payload(dev, "stimulus", "start", "clip-a", t + 1, session=sid, **who),
        marker_payload(dev, "stimulus", "end", "clip-a", t + 5, session=sid, **who),
        # sent without session or participant (e.g. emotion-edge-mark): in the session by time
        marker_payload(dev, "stimulus", "start", "note", t + 6),
    ]
    if end:
        out.append(marker_payload(dev, "session", "end", sid, t + 10, session=sid, **who))
    for i in range(n):
        ts = t + 0.5 + i * (9.0 / n)
        frame = int((ts - T0) * 10)
        out.append(make_sample(dev, frame, ts))
        out.append(make_event(dev, frame, ts))
    return out


def rows(db: str) -> dict[str, int]:
    store = open_store(db, migrate=False)
    try:
        return {k: v for k, v in store.counts().items() if k != "availability"}
    finally:
        store.close()


def participants(db: str) -> set[str]:
    from emotion_edge_record.store import markers

    store = open_store(db, migrate=False)
    try:
        with store.engine.connect() as conn:
            return set(conn.execute(select(markers.c.participant).distinct()).scalars()) - {None}
    finally:
        store.close()


def delete(db: str, code: str, tmp: Path) -> tuple[subprocess.CompletedProcess, dict]:
    stats = tmp / f"withdraw-{code}.json"
    r = subprocess.run(
        [str(BIN / "emotion-edge-record"), "--db", db, "--delete-participant", code,
         "--stats-json", str(stats)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return r, (json.loads(stats.read_text()) if stats.exists() else {})


def test_delete_participant_removes_every_row_of_theirs_and_nothing_else(db, tmp_path):
    p1 = session("lab-1", "P-AAAAAA", "control", T0, 12)
    p1b = session("lab-1", "P-AAAAAA", "control", T0 + 100, 5, end=False)  # aborted, no end
    p2 = session("lab-1", "P-BBBBBB", "treatment", T0 + 20, 8)
    other_dev = session("lab-2", "P-CCCCCC", "control", T0, 7)  # same time, another camera
    record(db, p1 + p2 + other_dev + p1b + session("lab-1", "P-DDDDDD", "control", T0 + 200, 3))
    before = rows(db)

    r, out = delete(db, "P-AAAAAA", tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(out["sessions"]) == 2
    after = rows(db)
    # P-AAAAAA: 2 sessions, 4 + 5 markers, 12 + 5 samples (2 faces each), 12 + 5 events
    assert before["markers"] - after["markers"] == 5 + 4
    assert before["samples"] - after["samples"] == 12 + 5
    assert before["timeline_faces"] - after["timeline_faces"] == 2 * (12 + 5)
    assert before["events"] - after["events"] == 12 + 5
    assert participants(db) == {"P-BBBBBB", "P-CCCCCC", "P-DDDDDD"}

    # again: nothing left to delete, still exit 0, and a warning says so
    r, out = delete(db, "P-AAAAAA", tmp_path)
    assert r.returncode == 0 and out["markers"] == 0 and "no rows" in r.stderr
    assert rows(db) == after


def test_delete_participant_user_errors_exit_2(tmp_path):
    r, _ = delete(str(tmp_path / "nothing-here.sqlite"), "P-AAAAAA", tmp_path)
    assert r.returncode == 2 and "no such database file" in r.stderr
    assert not (tmp_path / "nothing-here.sqlite").exists()
    db = str(tmp_path / "rec.sqlite")
    record(db, session("lab-1", "P-AAAAAA", "control", T0, 2))
    r = subprocess.run(
        [str(BIN / "emotion-edge-record"), "--db", db, "--delete-participant", "P-AAAAAA",
         "--jsonl", "-"],
        capture_output=True, text=True, timeout=60, input="",
    )  # fmt: skip
    assert r.returncode == 2 and "takes no input" in r.stderr
