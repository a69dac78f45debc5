"""The report on damaged or unexpected input: a recording on a read-only file and on a
read-only mount (reported, never changed), an empty, foreign, newer-schema or corrupt file
(one line, exit 2, nothing half-written), and --out replaced only by a complete report."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess

import pytest

pytest.importorskip("sqlalchemy", reason="the recorder needs the [record] extra")
pytest.importorskip("pandas", reason="the report's analysis needs pandas")

from emotion_edge_record.cli import report_main  # noqa: E402
from test_report_stats import run, study_jsonl  # noqa: E402


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    d = tmp_path_factory.mktemp("rec")
    src = d / "study.jsonl"
    study_jsonl(src)
    db = d / "study.sqlite"
    p = run("emotion-edge-record", "--db", str(db), "--jsonl", str(src))
    assert p.returncode == 0, p.stderr
    return db


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_error_line(p: subprocess.CompletedProcess, *words: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_read_only_file_is_reported_and_never_changed(recording, tmp_path):
    db = tmp_path / "ro.sqlite"
    shutil.copy(recording, db)
    db.chmod(0o444)
    before, mtime = digest(db), db.stat().st_mtime_ns
    p = run("emotion-edge-report", str(db), "--out", str(tmp_path / "rep"), "--no-plots")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "rep" / "stimulus_by_group.csv").is_file()
    assert digest(db) == before and db.stat().st_mtime_ns == mtime


def test_read_only_mount(recording, tmp_path):
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    shutil.copy(recording, src / "r.sqlite")
    before = digest(src / "r.sqlite")
    m = subprocess.run(["mount", "--bind", "-o", "ro", str(src), str(mnt)], capture_output=True)
    if m.returncode != 0:
        pytest.skip(f"cannot bind-mount read-only here: {m.stderr.decode().strip()}")
    try:
        with pytest.raises(OSError):
            (mnt / "probe").write_text("x")  # the mount is read-only indeed
        p = run("emotion-edge-report", str(mnt / "r.sqlite"), "--out", str(tmp_path / "rep"))
        assert p.returncode == 0, p.stderr
        assert (tmp_path / "rep" / "report.html").is_file()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
    assert digest(src / "r.sqlite") == before
    assert sorted(x.name for x in src.iterdir()) == ["r.sqlite"]


def test_empty_foreign_and_newer_files_refused_in_one_line(recording, tmp_path):
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    p = run("emotion-edge-report", str(empty), "--out", str(tmp_path / "o1"))
    one_error_line(p, "empty file")
    assert empty.stat().st_size == 0 and not (tmp_path / "o1").exists()

    text = tmp_path / "notes.sqlite"
    text.write_text("not a database at all\n" * 100)
    one_error_line(run("emotion-edge-report", str(text), "--out", str(tmp_path / "o2")), "not a")

    foreign = tmp_path / "foreign.sqlite"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE invoices (id INTEGER, total REAL)")
    con.commit()
    con.close()
    before = digest(foreign)
    p = run("emotion-edge-report", str(foreign), "--out", str(tmp_path / "o3"))
    one_error_line(p, "not an emotion-edge recording")
    assert digest(foreign) == before

    newer = tmp_path / "newer.sqlite"
    shutil.copy(recording, newer)
    con = sqlite3.connect(newer)
    con.execute("INSERT INTO schema_version VALUES (99, 'from the future', 0)")
    con.commit()
    con.close()
    p = run("emotion-edge-report", str(newer), "--out", str(tmp_path / "o4"))
    one_error_line(p, "schema version 99 is newer")
    assert not any(tmp_path.glob("o[1-4]*")) and not any(tmp_path.glob(".o*"))


def test_out_replaced_only_by_a_complete_report(recording, tmp_path, capsys):
    out = tmp_path / "rep"
    assert report_main([str(recording), "--out", str(out), "--no-plots"]) == 0
    (out / "stale.txt").write_text("from an earlier report")
    first = (out / "timeline.csv").read_text()
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"")
    assert report_main([str(bad), "--out", str(out), "--no-plots"]) == 2
    assert (out / "stale.txt").is_file() and (out / "timeline.csv").read_text() == first
    assert report_main([str(recording), "--out", str(out), "--no-plots"]) == 0
    assert not (out / "stale.txt").exists()  # replaced as a whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.sqlite", "rep"]
    # a folder holding other things is not replaced
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("x")
    assert report_main([str(recording), "--out", str(other), "--no-plots"]) == 2
    assert (other / "thesis.tex").is_file()
    capsys.readouterr()


def test_every_single_page_corruption_is_refused_or_reported_whole(recording, tmp_path, capsys):
    """Each page of the file overwritten with garbage in turn: the report either refuses with
    one line (exit 2) and writes nothing, or succeeds with every file; never a partial folder,
    never an unexpected error."""
    page = 4096
    n_pages = recording.stat().st_size // page
    assert n_pages > 5
    clean = recording.read_bytes()
    outcomes = {"refused": 0, "reported": 0}
    garbage = bytes((i * 7 + 13) % 256 for i in range(page))
    for i in range(n_pages):
        db = tmp_path / f"c{i}.sqlite"
        db.write_bytes(clean[: i * page] + garbage + clean[(i + 1) * page :])
        out = tmp_path / f"out{i}"
        rc = report_main([str(db), "--out", str(out), "--no-plots", "--log-level", "ERROR"])
        err = capsys.readouterr().err
        assert rc in (0, 2), (i, rc, err)
        if rc == 2:
            outcomes["refused"] += 1
            assert len(err.strip().splitlines()) == 1, (i, err)
            assert not out.exists(), i
        else:
            outcomes["reported"] += 1
            assert (out / "timeline.csv").is_file() and (out / "sessions.csv").is_file(), i
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
        assert not leftovers, (i, leftovers)
        db.unlink()
        shutil.rmtree(out, ignore_errors=True)
    assert outcomes["refused"] >= n_pages // 2, outcomes
    os.sync()
