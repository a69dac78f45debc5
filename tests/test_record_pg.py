"""The recorder on a real PostgreSQL (tests/pg_cluster.py: initdb + pg_ctl, a throwaway
cluster): the same rows and the same report as SQLite, two recorders splitting one fleet
through an MQTT 5 shared subscription into one database (every event stored once), and a
database that goes away mid-run (the recorder retries, the broker keeps the messages)."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

pytest.importorskip("sqlalchemy", reason="the recorder needs the [record] extra")

from emotion_edge_record.payloads import marker_payload  # noqa: E402
from emotion_edge_record.store import open_store  # noqa: E402
from pg_cluster import PgCluster  # noqa: E402
from test_record_mqtt import (  # noqa: E402
    PREFIX,
    Publisher,
    RecorderProc,
    exe,
    make_event,
    make_sample,
    wait_until,
)


@pytest.fixture(scope="module")
def pg_cluster():
    """One throwaway cluster for this module (skipped where PostgreSQL is absent)."""
    c = PgCluster.create()
    yield c
    c.destroy()


@pytest.fixture
def pg_url(pg_cluster) -> str:
    """A fresh, empty database in it."""
    return pg_cluster.new_database()


def pg_ids(url: str, table: str, key: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        try:
            return [r[0] for r in conn.execute(f"SELECT {key} FROM {table}")]
        except psycopg.errors.UndefinedTable:
            return []


def run(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*exe(name), *args], capture_output=True, text=True, timeout=timeout)


def synthetic_jsonl(path, t0: float) -> dict:
    """Two devices, sessions in two groups, two stimuli; returns what it holds."""
    lines, n_faces = [], 0
    for d, dev in enumerate(("pg-a", "pg-b")):
        for s in range(2):
            start = t0 + s * 100 + d * 7
            group = "control" if s == 0 else "test"
            lines.append(marker_payload(dev, "session", "start", f"{dev}-S{s}", start, group=group))
            lines.append(marker_payload(dev, "stimulus", "start", "clip-1", start))
            lines.append(marker_payload(dev, "stimulus", "end", "clip-1", start + 20))
            lines.append(marker_payload(dev, "stimulus", "start", "clip-2", start + 20))
            lines.append(marker_payload(dev, "stimulus", "end", "clip-2", start + 40))
            lines.append(marker_payload(dev, "session", "end", f"{dev}-S{s}", start + 40))
            for i in range(80):
                faces = 1 + (i % 3 == 0)
                lines.append(make_sample(dev, i, start + i * 0.5, faces=faces))
                n_faces += faces
                if i % 20 == 0:
                    lines.append(make_event(dev, i, start + i * 0.5))
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return {"faces": n_faces, "events": sum(1 for x in lines if "event_id" in x)}


def test_postgres_stores_and_reports_like_sqlite(pg_url, tmp_path):
    st = open_store(pg_url)
    assert st.version() == 2 and st.dialect == "postgresql"
    st.close()
    src = tmp_path / "in.jsonl"
    want = synthetic_jsonl(src, time.time() - 3600)
    sqlite_db = tmp_path / "r.sqlite"
    for db in (str(sqlite_db), pg_url):
        for _ in range(2):  # twice: stored once
            p = run("emotion-edge-record", "--db", db, "--jsonl", str(src))
            assert p.returncode == 0, p.stderr
    counts = open_store(pg_url).counts()
    assert counts == open_store(str(sqlite_db)).counts()
    assert counts["timeline_faces"] == want["faces"] and counts["events"] == want["events"]
    outs = {}
    for name, db in (("sqlite", str(sqlite_db)), ("pg", pg_url)):
        outs[name] = tmp_path / f"rep-{name}"
        p = run(
            "emotion-edge-report",
            db,
            "--out",
            str(outs[name]),
            "--utc",
            "--device",
            "pg-a",
            "--device",
            "pg-b",
        )
        assert p.returncode == 0, p.stderr
    for f in ("timeline.csv", "events.csv"):
        a = (outs["sqlite"] / f).read_text().splitlines()
        b = (outs["pg"] / f).read_text().splitlines()
        assert a == b, f
    assert len((outs["pg"] / "timeline.csv").read_text().splitlines()) == want["faces"] + 1
    pngs = sorted(p.name for p in outs["pg"].glob("*.png"))
    assert pngs == sorted(p.name for p in outs["sqlite"].glob("*.png"))
    assert "groups_profile.png" in pngs and "stimuli_profile.png" in pngs
    assert sum(n.startswith("session_") for n in pngs) == 4
    # a session filter on PostgreSQL
    out = tmp_path / "one"
    assert (
        run("emotion-edge-report", pg_url, "--out", str(out), "--session", "pg-a-S1").returncode
        == 0
    )
    rows = (out / "timeline.csv").read_text().splitlines()[1:]
    assert rows and all(",pg-a-S1," in r for r in rows)


def test_two_recorders_share_one_fleet_into_postgres(mqtt_broker, pg_url, tmp_path):
    open_store(pg_url).close()  # migrate once up front (two recorders racing is also fine)
    recs = [
        RecorderProc(tmp_path, mqtt_broker, pg_url, "--share-group", "fleet", client_id=cid)
        for cid in ("rec-a", "rec-b")
    ]
    for r in recs:
        r.start()
    pub = Publisher(mqtt_broker)
    events, samples = set(), set()
    t = time.time()
    for i in range(60):
        for d in range(10):
            dev = f"kiosk-{d}"
            e, s = make_event(dev, i, t + i * 0.1), make_sample(dev, i, t + i * 0.1)
            events.add(e["event_id"])
            samples.add(s["sample_id"])
            pub.pub(f"{PREFIX}/{dev}/events", e)
            pub.pub(f"{PREFIX}/{dev}/timeline", s)
            if i % 7 == 0:  # re-sent: may reach the other recorder this time
                pub.pub(f"{PREFIX}/{dev}/events", e)
    pub.flush()
    wait_until(
        lambda: (
            set(pg_ids(pg_url, "events", "event_id")) == events
            and len(pg_ids(pg_url, "samples", "sample_id")) == len(samples)
        ),
        60,
        "both recorders to store the fleet",
    )
    stats = [r.stop() for r in recs]
    pub.close()
    ids = pg_ids(pg_url, "events", "event_id")
    assert len(ids) == len(set(ids)) == len(events)  # every event stored once
    stored = [s["record"]["stored"].get("event", 0) for s in stats]
    assert all(n > 0 for n in stored), stored  # the stream was split between them
    assert sum(stored) == len(events)
    assert sorted(pg_ids(pg_url, "samples", "sample_id")) == sorted(samples)


def test_database_gone_recorder_retries_and_broker_keeps(mqtt_broker, pg_cluster, tmp_path):
    url = pg_cluster.new_database()
    rec = RecorderProc(tmp_path, mqtt_broker, url, client_id="rec-pg").start()
    pub = Publisher(mqtt_broker)
    events = set()
    t = time.time()

    def send(n: int, start: int) -> None:
        for i in range(start, start + n):
            e = make_event("kiosk-x", i, t + i * 0.01)
            events.add(e["event_id"])
            pub.pub(f"{PREFIX}/kiosk-x/events", e)
        pub.flush()

    send(50, 0)
    wait_until(lambda: len(pg_ids(url, "events", "event_id")) == 50, 30, "the first events")
    pg_cluster.stop("immediate")  # the database is gone
    try:
        send(150, 50)
        wait_until(lambda: "unavailable" in rec.log_text(), 30, "the recorder to notice")
        time.sleep(1.0)
        assert rec.proc.poll() is None, "the recorder must not exit"
    finally:
        pg_cluster.start()
    wait_until(lambda: set(pg_ids(url, "events", "event_id")) == events, 60, "the rest")
    s = rec.stop()
    pub.close()
    assert s["record"]["db_retries"] >= 1
    ids = pg_ids(url, "events", "event_id")
    assert len(ids) == len(set(ids)) == 200
    assert "reachable again" in rec.log_text() and "Traceback" not in rec.log_text()
