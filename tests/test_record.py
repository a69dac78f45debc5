"""emotion-edge-record / -report / -mark without a broker: payload checks, the SQLite store
and its migrations, JSON lines from the daemon's real stdout, the photo-folder path, the report
(real CSV, decoded PNGs, one HTML page)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sqlalchemy", reason="the recorder needs the [record] extra")

from emotion_edge.app import build_pipeline  # noqa: E402
from emotion_edge.config import load_config  # noqa: E402
from emotion_edge.preprocess import FER2013_LABELS  # noqa: E402
from emotion_edge.publish.stdout import StdoutOutput  # noqa: E402
from emotion_edge.tools.payload_schema import validate  # noqa: E402
from emotion_edge.track.events import EmotionEvent, FaceObservation  # noqa: E402
from emotion_edge.track.timeline import timeline_payload  # noqa: E402
from emotion_edge_record.ingest import Pending, Writer  # noqa: E402
from emotion_edge_record.payloads import (  # noqa: E402
    Limits,
    Reject,
    marker_payload,
    parse_message,
    read_schedule,
)
from emotion_edge_record.report import build_spans  # noqa: E402
from emotion_edge_record.store import (  # noqa: E402
    SCHEMA_VERSION,
    StoreError,
    StoreUnavailable,
    open_store,
)

DEV = "lab-1"
BIN = Path(sys.executable).parent


def script(name: str) -> list[str]:
    exe = BIN / name
    if exe.is_file():
        return [str(exe)]
    fn = {"emotion-edge-record": "record_main", "emotion-edge-report": "report_main"}.get(
        name, "mark_main"
    )
    return [
        sys.executable,
        "-c",
        f"import sys; from emotion_edge_record.cli import {fn}; sys.exit({fn}())",
    ]


def run(name: str, *args: str, stdin: str | None = None, timeout: float = 300):
    return subprocess.run(
        [*script(name), *args], input=stdin, capture_output=True, text=True, timeout=timeout
    )


def probs(top: int) -> np.ndarray:
    p = np.full(7, 0.04)
    p[top] = 0.76
    return p


def event(ts: float, face: int = 1, kind: str = "appeared", device: str = DEV) -> dict:
    return EmotionEvent(
        kind=kind,
        device_id=device,
        face_id=face,
        emotion="happy",
        confidence=0.76,
        top=[{"emotion": "happy", "confidence": 0.76}],
        box=(1.0, 2.0, 50.0, 50.0),
        frame_index=3,
        frame_size=(640, 480),
        captured_ts=ts,
        model_version="t",
        duration_s=1.0 if kind == "disappeared" else None,
    ).to_payload(ts)


def sample(ts: float, faces=((1, 3),), device: str = DEV, file_name=None) -> dict:
    obs = [FaceObservation(fid, (1.0, 2.0, 40.0, 40.0), 3, probs(top)) for fid, top in faces]
    return timeline_payload(
        device, "t", FER2013_LABELS, obs, 1, (640, 480), ts, ts, file_name=file_name
    )


# -- payload checks -----------------------------------------------------------------------------


def test_bad_input_is_rejected_by_reason_never_partly():
    now = time.time()
    good = sample(now, faces=((1, 3), (2, 6)))
    assert parse_message(json.dumps(good)).rows["timeline_faces"][1]["p_neutral"] == 0.76
    cases = {
        b"{not json": "malformed",
        b"[1, 2]": "malformed",
        b"\xff\xfe": "malformed",
        json.dumps({"schema": "other/thing"}).encode(): "unknown_schema",
        json.dumps(dict(good, schema="emotion-edge/timeline/9")).encode(): "unknown_version",
        json.dumps(dict(good, device_id="bad id!")).encode(): "bad_field",
        json.dumps(dict(good, captured_ts="soon")).encode(): "bad_field",
        json.dumps(dict(good, captured_ts=now + 3600)).encode(): "clock_skew",
    }
    # one bad face makes the whole sample rejected: no partial row
    bad_face = json.loads(json.dumps(good))
    bad_face["faces"][1]["probs"]["happy"] = 7
    cases[json.dumps(bad_face).encode()] = "bad_field"
    no_label = json.loads(json.dumps(good))
    del no_label["faces"][0]["probs"]["fear"]
    cases[json.dumps(no_label).encode()] = "bad_field"
    for data, reason in cases.items():
        with pytest.raises(Reject) as exc:
            parse_message(data, limits=Limits(), now=now)
        assert exc.value.reason == reason, (data[:60], exc.value)
    with pytest.raises(Reject, match="too_large"):
        parse_message(json.dumps(good).encode(), limits=Limits(max_bytes=100))
    with pytest.raises(Reject, match="unknown_device"):
        parse_message(json.dumps(good), limits=Limits(devices=frozenset({"other"})))
    with pytest.raises(Reject, match="topic_mismatch"):
        parse_message(json.dumps(good), "emotion-edge/lab-1/events")
    with pytest.raises(Reject, match="topic_mismatch"):
        parse_message(json.dumps(good), "emotion-edge/lab-2/timeline")
    with pytest.raises(Reject, match="malformed"):
        parse_message(b"maybe", "emotion-edge/lab-1/availability")
    # state and stats are valid payloads the recorder does not keep
    assert parse_message(json.dumps({"schema": "emotion-edge/stats/1"})) is None
    # a sample stamped in the past (spooled while the broker was away) is fine
    assert parse_message(json.dumps(sample(now - 86400)), now=now).kind == "timeline"
    # markers may be ahead of time (a schedule)
    m = marker_payload(DEV, "stimulus", "start", "clip", now + 3600)
    assert parse_message(json.dumps(m), "emotion-edge/lab-1/markers", now=now).kind == "marker"


def test_marker_payloads_and_schedule(tmp_path):
    m = marker_payload(
        DEV,
        "session",
        "start",
        "P07",
        participant="Ann",
        group="control",
        tags=["pilot"],
        meta={"room": 2},
    )
    validate(m)
    assert m["schema"] == "emotion-edge/marker/1" and m["group"] == "control"
    sched = tmp_path / "s.csv"
    sched.write_text("stimulus,start,end\n# a comment\nclip-A,0,10.5\nclip-B,0:12,1:00\n")
    rows = read_schedule(sched)
    assert [(r.stimulus, r.start_s, r.end_s) for r in rows] == [
        ("clip-A", 0.0, 10.5),
        ("clip-B", 12.0, 60.0),
    ]
    (tmp_path / "bad.csv").write_text("clip,5,2\n")
    with pytest.raises(ValueError, match="bad.csv:1"):
        read_schedule(tmp_path / "bad.csv")
    proc = run(
        "emotion-edge-mark", "--stdout", "--device", DEV, "--schedule", str(sched), "--at", "1000"
    )
    assert proc.returncode == 0, proc.stderr
    marks = [json.loads(x) for x in proc.stdout.splitlines()]
    for x in marks:
        validate(x)
    assert [(x["label"], x["action"], x["ts"]) for x in marks] == [
        ("clip-A", "start", 1000.0),
        ("clip-A", "end", 1010.5),
        ("clip-B", "start", 1012.0),
        ("clip-B", "end", 1060.0),
    ]
    proc = run("emotion-edge-mark", "--stdout", "--device", DEV, "start")
    assert proc.returncode == 2 and "label" in proc.stderr


def test_spans_from_markers():
    class M:
        def __init__(self, kind, action, label, ts, group=None):
            self.device_id, self.kind, self.action, self.label, self.ts = (
                DEV,
                kind,
                action,
                label,
                ts,
            )
            self.participant, self.group_name, self.tags, self.session = None, group, "[]", None

    rows = [
        M("session", "start", "S1", 0, group="g1"),
        M("stimulus", "start", "A", 1),
        M("stimulus", "end", "A", 5),
        M("stimulus", "start", "B", 6),  # left open: ends with its session
        M("session", "end", "S1", 10),
        M("session", "start", "S2", 20),  # open: to the end of the data
    ]
    sessions, stimuli = build_spans(rows[::-1])
    assert [(s.label, s.start, s.end, s.group) for s in sessions[DEV]] == [
        ("S1", 0, 10, "g1"),
        ("S2", 20, float("inf"), None),
    ]
    assert [(s.label, s.start, s.end) for s in stimuli[DEV]] == [("A", 1, 5), ("B", 6, 10)]


# -- store --------------------------------------------------------------------------------------


def test_migrations_versioned_and_idempotent_writes(tmp_path):
    db = tmp_path / "r.sqlite"
    st = open_store(str(db))
    assert st.version() == SCHEMA_VERSION == 2
    p = parse_message(json.dumps(event(time.time())))
    r1 = st.write([p, p])
    r2 = st.write([p])
    assert r1.stored == {"event": 1} and r1.duplicates == {"event": 1}
    assert r2.stored == {"event": 0} and r2.duplicates == {"event": 1}
    st.close()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert [r[0] for r in con.execute("SELECT version FROM schema_version ORDER BY 1")] == [1, 2]
    # a database at version 1 is brought up to date (indexes added)
    con.execute("DELETE FROM schema_version WHERE version = 2")
    con.execute("DROP INDEX ix_events_device_ts")
    con.commit()
    assert open_store(str(db)).version() == 2
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "ix_events_device_ts" in names
    # a newer database than this code is refused, not written to
    con.execute("INSERT INTO schema_version VALUES (99, 'future', 0)")
    con.commit()
    with pytest.raises(StoreError, match="newer"):
        open_store(str(db))


class FlakyStore:
    """The real store behind a database that is away for the first `down` writes."""

    def __init__(self, inner, down: int):
        self.inner, self.down, self.calls = inner, down, 0
        self.url = inner.url

    def write(self, batch):
        self.calls += 1
        if self.calls <= self.down:
            raise StoreUnavailable("connection refused (test)")
        return self.inner.write(batch)


def test_nothing_acknowledged_before_commit_and_retried(tmp_path):
    st = open_store(str(tmp_path / "r.sqlite"))
    flaky = FlakyStore(st, down=3)
    w = Writer(flaky, live=False, retry_min_s=0.05, retry_max_s=0.1)
    acked: list[int] = []
    w.start()
    for i in range(20):
        w.submit(
            Pending(json.dumps(event(time.time(), face=i + 1)), None, lambda i=i: acked.append(i))
        )
    w.submit(Pending(b"garbage", None, lambda: acked.append(-1)))
    assert w.wait_idle(10)
    assert flaky.calls >= 4 and w.stats.retries == 3
    assert sorted(acked) == [-1, *range(20)]  # a bad message is acknowledged too: never good
    assert st.counts()["events"] == 20
    assert w.stats.as_dict()["rejected"] == {"malformed": 1}
    w.finish(5)

    # aborted while the database is away: nothing acknowledged, nothing lost on the broker
    down = FlakyStore(st, down=10**6)
    w2 = Writer(down, live=False, retry_min_s=0.05, retry_max_s=0.1)
    acked2: list[int] = []
    w2.start()
    w2.submit(Pending(json.dumps(event(time.time(), face=99)), None, lambda: acked2.append(1)))
    time.sleep(0.3)
    w2.abort()
    w2.join(5)
    assert acked2 == []


# -- JSON lines from the daemon's real stdout -----------------------------------------------------


@pytest.fixture(scope="module")
def daemon_lines(sample_video, emotion_model, tmp_path_factory) -> Path:
    """The daemon's stdout on the sample video, timeline every 0.1 s, with markers around."""
    cfg = load_config(
        None,
        {
            "device": {"id": DEV},
            "source": {"kind": "video", "uri": str(sample_video), "loop": False},
            "classifier": {"model_path": str(emotion_model), "num_threads": 1},
            "pipeline": {"realtime": False, "adaptive": False},
            "output": {"timeline_interval_s": 0.1},
        },
    )
    buf = io.StringIO()
    t0 = time.time()
    summary = build_pipeline(cfg, output=StdoutOutput(buf)).run()
    t1 = time.time()
    lines = buf.getvalue().splitlines()
    # the switch between the stimuli: the middle of the samples that have faces
    tl = [json.loads(x) for x in lines if '"emotion-edge/timeline/1"' in x]
    ts = [p["captured_ts"] for p in tl if p["faces"]]
    assert len(ts) >= 2, "the sample video gave fewer than two samples with faces"
    mid = (ts[len(ts) // 2 - 1] + ts[len(ts) // 2]) / 2
    marks = [
        marker_payload(DEV, "session", "start", "S1", t0 - 1, participant="P1", group="g1"),
        marker_payload(DEV, "stimulus", "start", "clip-A", t0 - 1, session="S1"),
        marker_payload(DEV, "stimulus", "end", "clip-A", mid),
        marker_payload(DEV, "stimulus", "start", "clip-B", mid),
        marker_payload(DEV, "stimulus", "end", "clip-B", t1 + 1),
        marker_payload(DEV, "session", "end", "S1", t1 + 1),
    ]
    path = tmp_path_factory.mktemp("jsonl") / "daemon.jsonl"
    path.write_text("\n".join([*lines, *(json.dumps(m) for m in marks)]) + "\n")
    path.with_suffix(".summary.json").write_text(json.dumps(summary.event_counts))
    return path


def test_jsonl_from_daemon_stdout_stored_once_and_reported(daemon_lines, tmp_path):
    lines = daemon_lines.read_text().splitlines()
    payloads = [json.loads(x) for x in lines]
    timeline = [p for p in payloads if p["schema"] == "emotion-edge/timeline/1"]
    events = [p for p in payloads if p["schema"] == "emotion-edge/event/1"]
    counts = json.loads(daemon_lines.with_suffix(".summary.json").read_text())
    assert len(events) == sum(counts.values()) > 0
    # every line twice, and bad lines among them
    noisy = tmp_path / "noisy.jsonl"
    noisy.write_text(
        "\n".join([*lines, "{oops", '{"schema": "emotion-edge/event/7"}', *lines, "x" * 300_000])
        + "\n"
    )
    db = tmp_path / "rec.sqlite"
    stats = tmp_path / "stats.json"
    proc = run(
        "emotion-edge-record", "--db", str(db), "--jsonl", str(noisy), "--stats-json", str(stats)
    )
    assert proc.returncode == 0, proc.stderr
    s = json.loads(stats.read_text())
    assert s["record"]["rejected"] == {"malformed": 1, "unknown_version": 1, "too_large": 1}
    assert s["db"]["events"] == len(events) and s["db"]["samples"] == len(timeline)
    assert s["db"]["timeline_faces"] == sum(len(p["faces"]) for p in timeline)
    assert s["db"]["markers"] == 6
    assert s["record"]["duplicates"]["event"] == len(events)

    # the same lines through stdin add nothing
    proc = run("emotion-edge-record", "--db", str(db), "--jsonl", "-", stdin="\n".join(lines))
    assert proc.returncode == 0, proc.stderr
    assert open_store(str(db)).counts()["events"] == len(events)

    out = tmp_path / "report"
    proc = run("emotion-edge-report", str(db), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    with open(out / "timeline.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    want = [(p["sample_id"], face["face_id"]) for p in timeline for face in p["faces"]]
    assert len(rows) == len(want) > 0  # one row per face per sample
    for lab in FER2013_LABELS:
        assert all(0 <= float(r[f"p_{lab}"]) <= 1 for r in rows)
    assert all(r["stimulus"] in ("clip-A", "clip-B") for r in rows)
    assert {r["stimulus"] for r in rows} == {"clip-A", "clip-B"}
    assert all(r["session"] == "S1" and r["group"] == "g1" for r in rows)
    with open(out / "events.csv", newline="") as f:
        ev_rows = list(csv.DictReader(f))
    assert sorted(r["event_id"] for r in ev_rows) == sorted(e["event_id"] for e in events)
    check_report_files(out, expect_stimuli=True, expect_groups=True)

    # filters: a time range before the data gives empty files, not an error
    out2 = tmp_path / "empty"
    proc = run("emotion-edge-report", str(db), "--out", str(out2), "--until", "1000")
    assert proc.returncode == 0, proc.stderr
    assert len((out2 / "timeline.csv").read_text().splitlines()) == 1
    proc = run("emotion-edge-report", str(db), "--out", str(out2), "--device", "nobody")
    assert proc.returncode == 0, proc.stderr


def check_report_files(
    out: Path,
    expect_stimuli: bool,
    expect_groups: bool,
    expect_day: bool = False,
    expect_sessions: bool = True,
) -> None:
    from matplotlib import image

    pngs = sorted(out.glob("*.png"))
    names = {p.name for p in pngs}
    # a session timeline per session, none for photo folders (photos are not a timeline)
    assert any(n.startswith("session_") for n in names) == expect_sessions, names
    # the mood over the day only for a recording longer than an hour (never for photos)
    assert any(n.startswith("device_") for n in names) == expect_day, names
    assert ("stimuli_profile.png" in names) == expect_stimuli
    assert ("groups_profile.png" in names) == expect_groups
    for p in pngs:
        img = image.imread(p)  # decoded, not just present
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100, p
        assert float(img[..., :3].std()) > 0.01, f"{p} is blank"
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(pngs)
    assert 'src="http' not in page and "<script" not in page  # self-contained


# -- in-process sources -------------------------------------------------------------------------


def test_photo_folder_one_row_per_detected_face_per_photo(samples_dir, emotion_model, tmp_path):
    from emotion_edge.config import load_table
    from emotion_edge.detect.detector import detect_photo, make_detector
    from emotion_edge.video.sources import IMAGE_SUFFIXES

    folder = samples_dir / "dlib_faces"
    if not folder.is_dir():
        pytest.skip(f"{folder} missing")
    det = make_detector(load_table("detector", {}))
    import cv2

    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    expect = {}
    for p in photos:
        gray = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        expect[p.name] = len(detect_photo(det, gray))
    assert sum(expect.values()) > len(photos) // 2, expect
    db = tmp_path / "photos.sqlite"
    proc = run(
        "emotion-edge-record",
        "--db",
        str(db),
        "--source",
        f"images:{folder}",
        "--model",
        str(emotion_model),
        "--no-progress",
        "--group",
        "g",
    )
    assert proc.returncode == 0, proc.stderr
    con = sqlite3.connect(db)
    got = dict(con.execute("SELECT file_name, face_count FROM samples"))
    assert got == expect  # every photo, even those without a face, is a sample
    per_file = dict(con.execute("SELECT file_name, COUNT(*) FROM timeline_faces GROUP BY 1"))
    assert per_file == {k: v for k, v in expect.items() if v}
    # no tracking across photos: face ids restart at 1 in each photo
    for name, n in per_file.items():
        ids = [
            r[0]
            for r in con.execute(
                "SELECT face_id FROM timeline_faces WHERE file_name = ? ORDER BY 1", (name,)
            )
        ]
        assert ids == list(range(1, n + 1))
    assert con.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
    out = tmp_path / "rep"
    proc = run("emotion-edge-report", str(db), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    with open(out / "timeline.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(expect.values())
    assert {r["file"] for r in rows} == set(per_file)
    check_report_files(out, expect_stimuli=False, expect_groups=True, expect_sessions=False)


def test_video_in_process_faster_than_real_time(sample_video, emotion_model, tmp_path):
    db = tmp_path / "clip.sqlite"
    sched = tmp_path / "sched.csv"
    sched.write_text("intro,0,4\nmain,4,9.2\n")
    stats = tmp_path / "s.json"
    proc = run(
        "emotion-edge-record",
        "--db",
        str(db),
        "--source",
        f"video:{sample_video}",
        "--model",
        str(emotion_model),
        "--schedule",
        str(sched),
        "--no-progress",
        "--participant",
        "P9",
        "--stats-json",
        str(stats),
        "--start",
        "2026-03-01T10:00:00+00:00",
    )
    assert proc.returncode == 0, proc.stderr
    s = json.loads(stats.read_text())
    src = s["source"]
    assert src["frames"] == 275 and src["samples"] == 275  # every frame a sample
    assert src["source_fps"] == pytest.approx(29.97, abs=0.01)
    assert s["db"]["events"] == sum(src["events"].values())
    assert s["db"]["timeline_faces"] == src["face_rows"] > 0
    con = sqlite3.connect(db)
    lo, hi = con.execute("SELECT MIN(captured_ts), MAX(captured_ts) FROM samples").fetchone()
    start = 1772359200.0  # 2026-03-01T10:00:00Z: clip time, not this machine's speed
    assert lo == pytest.approx(start, abs=1e-3)
    assert hi == pytest.approx(start + 274 / 29.97, abs=2e-3)
    out = tmp_path / "rep"
    assert run("emotion-edge-report", str(db), "--out", str(out), "--utc").returncode == 0
    with open(out / "timeline.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["stimulus"] for r in rows} <= {"intro", "main"} and rows
    for r in rows:
        off = float(r["session_offset_s"])
        assert r["stimulus"] == ("intro" if off < 4 else "main"), r
    assert all(r["participant"] == "P9" for r in rows)


def test_record_user_errors_are_one_line(tmp_path):
    proc = run("emotion-edge-record", "--db", str(tmp_path / "x.sqlite"))
    assert proc.returncode == 2 and "exactly one input" in proc.stderr
    proc = run("emotion-edge-record", "--db", str(tmp_path / "x.sqlite"), "--source", "opencv:0")
    assert proc.returncode == 2 and "video:FILE or images:FOLDER" in proc.stderr
    proc = run("emotion-edge-report", str(tmp_path / "nope.sqlite"), "--out", str(tmp_path))
    assert proc.returncode == 2 and "no such database" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_full_sqlite_database_is_retried_and_nothing_acknowledged(tmp_path, caplog):
    """A real 'database or disk is full' (SQLite's max_page_count at the file's size)."""
    from sqlalchemy import event as sa_event

    st = open_store(str(tmp_path / "full.sqlite"))
    limit = {"pages": None}

    @sa_event.listens_for(st.engine, "checkout")
    def _cap(dbapi_conn, _rec, _proxy):
        cur = dbapi_conn.cursor()
        pages = limit["pages"] or 1_000_000_000
        cur.execute(f"PRAGMA max_page_count = {pages}")
        cur.close()

    with st.engine.connect() as conn:
        from sqlalchemy import text

        limit["pages"] = conn.execute(text("PRAGMA page_count")).scalar()
    st.engine.dispose()
    w = Writer(st, live=False, retry_min_s=0.05, retry_max_s=0.1)
    acked: list[int] = []
    # all 30 queued before the writer starts, so its first batch is too big for the pages the
    # file has (one small event alone could fit in a half-empty page and rightly be stored)
    for i in range(30):
        ev = json.dumps(event(time.time(), face=i + 1))
        w.submit(Pending(ev, None, lambda i=i: acked.append(i)))
    w.start()
    deadline = time.monotonic() + 10
    while w.stats.retries < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert w.stats.retries >= 3 and w.db_down, "a full database was not retried"
    assert "full" in caplog.text, caplog.text
    assert acked == [] and st.counts()["events"] == 0
    limit["pages"] = None  # space again
    assert w.wait_idle(10)
    assert sorted(acked) == list(range(30)) and st.counts()["events"] == 30
    w.finish(5)
