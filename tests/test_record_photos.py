"""A folder of photos: one row per face per photo with its file name, the EXIF capture time
where the photo has one and no time where it has none (never the file's modification time),
a per-photo table, annotated copies on request, no mood-over-the-day plot."""

from __future__ import annotations

import csv
import sqlite3
import subprocess

import pytest

pytest.importorskip("sqlalchemy", reason="the recorder needs the [record] extra")
Image = pytest.importorskip("PIL.Image")
cv2 = pytest.importorskip("cv2")

from test_record_mqtt import exe  # noqa: E402

NO_CLOCK = 946684800.0  # 2000-01-01T00:00:00Z (record/timebase.py)


def run(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*exe(name), *args], capture_output=True, text=True, timeout=600)


def test_photos_exif_time_or_none_table_and_annotated_copies(samples_dir, emotion_model, tmp_path):
    src = samples_dir / "face_recognition"
    if not (src / "obama.jpg").is_file() or not (src / "two_people.jpg").is_file():
        pytest.skip(f"sample photos missing in {src}")
    folder = tmp_path / "photos"
    folder.mkdir()
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = "2024:05:06 07:08:09"  # DateTimeOriginal
    Image.open(src / "obama.jpg").save(folder / "a.jpg", exif=exif)
    Image.open(src / "two_people.jpg").save(folder / "b.jpg")  # saved without EXIF
    Image.new("RGB", (200, 150), (40, 90, 160)).save(folder / "c.png")  # no face, no EXIF
    db = tmp_path / "p.sqlite"
    marked = tmp_path / "marked"
    p = run(
        "emotion-edge-record", "--db", str(db), "--source", f"images:{folder}",
        "--model", str(emotion_model), "--no-progress", "--annotate", str(marked),
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    con = sqlite3.connect(db)
    got = {
        n: (ts, k)
        for n, ts, k in con.execute("SELECT file_name, captured_ts, face_count FROM samples")
    }
    con.close()
    assert got["a.jpg"][0] == 1714979289.0  # 2024-05-06T07:08:09 as written
    assert got["b.jpg"][0] == NO_CLOCK + 1 and got["c.png"][0] == NO_CLOCK + 2  # no time
    assert got["a.jpg"][1] >= 1 and got["b.jpg"][1] >= 1 and got["c.png"][1] == 0
    # annotated copies: every photo, decodable, boxes drawn where there are faces
    for name in ("a.jpg", "b.jpg", "c.png"):
        img = cv2.imread(str(marked / name))
        assert img is not None, name
    orig = cv2.imread(str(folder / "a.jpg"))
    assert float(abs(cv2.imread(str(marked / "a.jpg")).astype(int) - orig).mean()) > 0.05
    out = tmp_path / "rep"
    p = run("emotion-edge-report", str(db), "--out", str(out))
    assert p.returncode == 0, p.stderr
    with open(out / "photos.csv", newline="") as f:
        photos = {r["file"]: r for r in csv.DictReader(f)}
    assert photos["a.jpg"]["capture_time"].startswith("2024-05-06T07:08:09")
    assert photos["b.jpg"]["capture_time"] == "" and photos["c.png"]["capture_time"] == ""
    assert {k: int(r["faces"]) for k, r in photos.items()} == {k: v[1] for k, v in got.items()}
    with open(out / "timeline.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(v[1] for v in got.values())  # one row per face per photo
    assert {r["file"] for r in rows} == {"a.jpg", "b.jpg"}
    page = (out / "report.html").read_text()
    assert "<h2>Photos</h2>" in page and "c.png" in page
    assert not list(out.glob("device_*.png"))  # no mood over the day for photos
