"""Offline recordings that cannot be misattributed, and a folder of videos in parallel: real
OpenCV clips cut from the sample video, the real detector and classifier, real SQLite."""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess

import pytest

pytest.importorskip("sqlalchemy", reason="the recorder needs the [record] extra")
cv2 = pytest.importorskip("cv2")

from test_record_mqtt import exe  # noqa: E402

NO_CLOCK = 946684800.0  # 2000-01-01T00:00:00Z (record/timebase.py)


def run(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*exe(name), *args], capture_output=True, text=True, timeout=600)


def cut(src, dst, start: int, n: int, width: int = 320) -> int:
    """n frames of `src` from frame `start`, scaled to `width`, as an MP4 (OpenCV's mp4v)."""
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    out = None
    written = 0
    while written < n:
        ok, img = cap.read()
        if not ok:
            break
        h = round(img.shape[0] * width / img.shape[1]) // 2 * 2
        img = cv2.resize(img, (width, h))
        if out is None:
            out = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, h))
        out.write(img)
        written += 1
    cap.release()
    out.release()
    return written


@pytest.fixture(scope="module")
def clips(sample_video, tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    folder = d / "videos"
    folder.mkdir()
    frames = {}
    for i, name in enumerate(("p01_a", "p02_b", "p03_c")):
        frames[name] = cut(sample_video, folder / f"{name}.mp4", 60 * i, 24)
    assert all(n == 24 for n in frames.values()), frames
    return folder


def db_rows(db, sql, *args):
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def test_two_offline_participants_on_one_device_never_mix(clips, emotion_model, tmp_path):
    """The issue's case: one file recorded for P11 and then for P12 under one device id."""
    clip = clips / "p01_a.mp4"
    db = str(tmp_path / "two.sqlite")
    common = ["--db", db, "--source", f"video:{clip}", "--model", str(emotion_model)]
    common += ["--device-id", "kiosk", "--no-progress"]
    p = run("emotion-edge-record", *common, "--participant", "P11", "--session", "S11")
    assert p.returncode == 0, p.stderr
    # the media's own time (no creation time in this file: the fixed epoch), not "now"
    lo, hi = db_rows(db, "SELECT MIN(captured_ts), MAX(captured_ts) FROM samples")[0]
    assert lo == pytest.approx(NO_CLOCK) and hi < NO_CLOCK + 1
    # P12 on the same device and the same (file) time: refused in one line, nothing written
    p = run("emotion-edge-record", *common, "--participant", "P12", "--session", "S12")
    assert p.returncode == 2, p.stderr
    err = [line for line in p.stderr.splitlines() if " ERROR " in line]
    assert len(err) == 1 and "already holds session S11" in err[0], p.stderr
    assert "Traceback" not in p.stderr
    assert db_rows(db, "SELECT COUNT(*) FROM samples")[0][0] == 24
    # the same run again: already recorded, skipped, nothing doubled
    p = run("emotion-edge-record", *common, "--participant", "P11", "--session", "S11")
    assert p.returncode == 0 and "already recorded" in p.stderr, p.stderr
    assert db_rows(db, "SELECT COUNT(*) FROM samples")[0][0] == 24
    # P12 given its own --start: recorded, and the report gives each participant its frames
    p = run(
        "emotion-edge-record", *common, "--participant", "P12", "--session", "S12",
        "--start", "2026-03-02T09:00:00Z", "--meta", "social_media_h=4",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    out = tmp_path / "rep"
    p = run("emotion-edge-report", db, "--out", str(out), "--no-plots")
    assert p.returncode == 0, p.stderr
    with open(out / "timeline.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["main_face"] == "1"]
    per = {}
    for r in rows:
        per[r["participant"]] = per.get(r["participant"], 0) + 1
    faces = {
        s: n
        for s, n in db_rows(
            db,
            "SELECT s.captured_ts < 1.0e9, COUNT(DISTINCT s.sample_id) FROM samples s "
            "JOIN timeline_faces f ON f.sample_id = s.sample_id GROUP BY 1",
        )
    }
    assert per == {"P11": faces[1], "P12": faces[0]} and per["P11"] == per["P12"] > 0
    with open(out / "sessions.csv", newline="") as f:
        sess = {r["session"]: r for r in csv.DictReader(f)}
    assert sess["S12"]["social_media_h"] == "4" and sess["S11"]["social_media_h"] == ""
    assert sess["S11"]["time_source"].startswith("no clock")
    assert sess["S12"]["time_source"] == "--start"
    assert sess["S11"]["overlaps"] == "" and sess["S12"]["overlaps"] == ""


def test_overlapping_live_sessions_are_reported(tmp_path):
    """Two sessions on one device whose marker spans overlap (e.g. two operators): the report
    says so, in its log, its page and sessions.csv."""
    from emotion_edge_record.payloads import marker_payload
    from test_record_mqtt import make_sample

    t0 = 1_780_000_000.0
    lines = [
        marker_payload("kiosk", "session", "start", "A", t0, participant="P1"),
        marker_payload("kiosk", "session", "start", "B", t0 + 5, participant="P2"),
        marker_payload("kiosk", "session", "end", "A", t0 + 10),
        marker_payload("kiosk", "session", "end", "B", t0 + 15),
        *[make_sample("kiosk", i, t0 + i, faces=1) for i in range(15)],
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    db = str(tmp_path / "o.sqlite")
    assert run("emotion-edge-record", "--db", db, "--jsonl", str(src)).returncode == 0
    out = tmp_path / "rep"
    p = run("emotion-edge-report", db, "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert "sessions 'A' and 'B' overlap by 5.000 s" in p.stderr
    assert "overlap by 5.000 s" in (out / "report.html").read_text()
    with open(out / "sessions.csv", newline="") as f:
        sess = {r["session"]: r for r in csv.DictReader(f)}
    assert sess["A"]["overlaps"] == "B (5.000 s)" and sess["B"]["overlaps"] == "A (5.000 s)"


def test_folder_of_videos_in_two_workers_resumable(clips, emotion_model, tmp_path):
    mapping = tmp_path / "participants.csv"
    mapping.write_text(
        "file,participant,group,social_media_h\n"
        "p01_a.mp4,P01,heavy,6\np02_b,P02,light,1\np03_c.mp4,P03,heavy,5\n"
    )
    db = str(tmp_path / "v.sqlite")
    stats = tmp_path / "s.json"
    args = ["--db", db, "--source", f"videos:{clips}", "--model", str(emotion_model)]
    args += ["--jobs", "2", "--participant-from", str(mapping), "--stats-json", str(stats)]
    p = run("emotion-edge-record", *args)
    assert p.returncode == 0, p.stderr
    s = json.loads(stats.read_text())
    assert s["recorded"] == 3 and s["workers"] == 2 and s["frames"] == 72, s
    assert "72/72" in p.stderr  # one progress bar over every file's frames
    per_dev = dict(db_rows(db, "SELECT device_id, COUNT(*) FROM samples GROUP BY 1"))
    assert per_dev == {"p01_a": 24, "p02_b": 24, "p03_c": 24}
    who = db_rows(
        db,
        "SELECT label, participant, group_name, meta FROM markers "
        "WHERE kind = 'session' AND action = 'start' ORDER BY label",
    )
    assert [(a, b, c) for a, b, c, _ in who] == [
        ("p01_a", "P01", "heavy"),
        ("p02_b", "P02", "light"),
        ("p03_c", "P03", "heavy"),
    ]
    assert json.loads(who[1][3])["social_media_h"] == "1"
    # again: every file already recorded, nothing added
    p = run("emotion-edge-record", *args)
    assert p.returncode == 0, p.stderr
    assert json.loads(stats.read_text())["skipped"] == 3
    assert db_rows(db, "SELECT COUNT(*) FROM samples")[0][0] == 72
    # a file cut short (its session end marker never written): recorded again, stored once
    con = sqlite3.connect(db)
    con.execute("DELETE FROM markers WHERE label = 'p02_b' AND kind = 'session'")
    con.commit()
    con.close()
    p = run("emotion-edge-record", *args, "--jobs", "1")
    assert p.returncode == 0, p.stderr
    s = json.loads(stats.read_text())
    assert s["recorded"] == 1 and s["skipped"] == 2
    assert s["videos"][0]["stored"].get("timeline", 0) == 0  # every sample was there already
    assert db_rows(db, "SELECT COUNT(*) FROM samples")[0][0] == 72
    # a mapping that misses a file is refused before any work
    mapping.write_text("file,participant\np01_a.mp4,P01\n")
    p = run("emotion-edge-record", *args[:-2], "--db", str(tmp_path / "w.sqlite"))
    assert p.returncode == 2 and "no row for 2 file(s)" in p.stderr, p.stderr
