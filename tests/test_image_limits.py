"""Issue 42 (5): an image file that is no image, is damaged or declares more pixels than
[source] max_image_pixels is skipped, counted and logged once, by the daemon's `images:`
source and by the recorder alike, never decoded.

Before, one PNG whose header declared 100000 x 100000 made `cv2.imread` raise (not return None)
and ended a whole `images:` run with exit code 1, in the daemon and in `emotion-edge-record`.
The bombs are made here: a few hundred bytes of valid header for each format read.
"""

from __future__ import annotations

import json
import logging
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from emotion_edge.config import SourceConfig
from emotion_edge.video.image_files import UnreadableImage, header_size, read_image
from emotion_edge.video.sources import make_source

BIG = 100_000  # 100000 x 100000 = 10 GP, 30 GB decoded


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bomb(w: int = BIG, h: int = BIG) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _chunk(b"IEND", b"")
    )


def jpeg_bomb() -> bytes:
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, 60000, 60000, 3) + b"\x01\x22\x00" * 3
    return b"\xff\xd8\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\1\1\0\0\1\0\1\0\0" + sof


def bmp_bomb() -> bytes:
    dib = struct.pack("<IiiHHIIiiII", 40, 70000, -70000, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + 64, 0, 0, 54) + dib + b"\0" * 64


def tiff_bomb() -> bytes:
    entries = [(256, 4, 1, 80000), (257, 4, 1, 80000), (258, 3, 1, 8)]
    ifd = struct.pack("<H", len(entries))
    ifd += b"".join(struct.pack("<HHII", *e) for e in entries) + struct.pack("<I", 0)
    body = b"\0" * 100  # the IFD after the data, as many writers place it
    return b"II*\x00" + struct.pack("<I", 8 + len(body)) + body + ifd


def webp_bomb() -> bytes:
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\0\0\0\0" + (16383).to_bytes(3, "little") * 2
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


def ppm_bomb() -> bytes:
    return b"P6\n# made by a test\n90000 90000\n255\n" + b"\0" * 64


BOMBS = {
    "png": (png_bomb, BIG, BIG),
    "jpg": (jpeg_bomb, 60000, 60000),
    "bmp": (bmp_bomb, 70000, 70000),
    "tif": (tiff_bomb, 80000, 80000),
    "webp": (webp_bomb, 16384, 16384),
    "ppm": (ppm_bomb, 90000, 90000),
}


def photo(w: int = 320, h: int = 240) -> np.ndarray:
    x = np.linspace(0, 255, w, dtype=np.float32)
    img = np.dstack([np.tile(x, (h, 1)), np.tile(x[::-1], (h, 1)), np.full((h, w), 90)])
    return img.astype(np.uint8)


# -- the header reader ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", list(BOMBS))
def test_a_bomb_is_refused_from_its_header_before_decoding(tmp_path, suffix):
    make, w, h = BOMBS[suffix]
    path = tmp_path / f"bomb.{suffix}"
    path.write_bytes(make())
    assert header_size(path)[1:] == (w, h)
    with pytest.raises(UnreadableImage, match=r"over the limit of 50 MP"):
        read_image(path, 50_000_000)


@pytest.mark.parametrize("suffix", ["png", "jpg", "bmp", "tif", "webp", "ppm", "pgm"])
def test_header_size_agrees_with_opencv_for_each_format(tmp_path, suffix):
    import cv2

    img = photo(333, 217)
    if suffix == "pgm":
        img = img[:, :, 0]
    path = tmp_path / f"p.{suffix}"
    assert cv2.imwrite(str(path), img)
    assert header_size(path)[1:] == (333, 217)
    assert read_image(path, 333 * 217).shape[:2] == (217, 333)
    with pytest.raises(UnreadableImage, match="over the limit"):
        read_image(path, 333 * 217 - 1)


def test_a_jpeg_with_large_metadata_before_its_frame_header(tmp_path):
    import cv2

    ok, data = cv2.imencode(".jpg", photo(200, 100))
    data = data.tobytes()
    app = b"\xff\xe2" + struct.pack(">H", 65000) + b"\0" * 64998  # an ICC-sized segment
    path = tmp_path / "meta.jpg"
    path.write_bytes(data[:2] + app * 2 + data[2:])
    assert header_size(path)[1:] == (200, 100)
    assert read_image(path).shape == (100, 200, 3)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not an image"),
        (b"garbage, not a picture", "not an image"),
        (b"\x89PNG\r\n\x1a\n\0\0", "IHDR"),
        (png_bomb(64, 64)[:40], "cannot be decoded"),  # a header and too little data
        (b"P6\n# no size\n", "damaged PGM/PPM"),
    ],
    ids=["empty", "text", "png_without_ihdr", "png_cut_short", "ppm_without_size"],
)
def test_damaged_files_give_a_one_line_reason(tmp_path, content, reason):
    path = tmp_path / "x.png"
    path.write_bytes(content)
    with pytest.raises(UnreadableImage, match=reason) as err:
        read_image(path)
    assert "\n" not in str(err.value)


# -- the daemon's images: source --------------------------------------------------------------


def folder_with_a_bomb(tmp_path: Path) -> Path:
    import cv2

    d = tmp_path / "photos"
    d.mkdir()
    cv2.imwrite(str(d / "a_first.png"), photo())
    (d / "b_bomb.png").write_bytes(png_bomb())
    cv2.imwrite(str(d / "c_last.jpg"), photo())
    return d


def test_images_source_skips_the_bomb_counts_it_and_warns_once(tmp_path, caplog):
    folder = folder_with_a_bomb(tmp_path)
    caplog.set_level(logging.WARNING, "emotion_edge.video.sources")
    src = make_source(SourceConfig(kind="images", uri=str(folder), loop=True))
    src.open()
    names = [src.read().name for _ in range(6)]  # three passes
    src.close()
    assert names == ["a_first.png", "c_last.jpg"] * 3
    assert src.files_skipped == 1
    warned = [r.getMessage() for r in caplog.records if "b_bomb.png" in r.getMessage()]
    assert len(warned) == 1 and "100000 x 100000" in warned[0] and "not decoded" in warned[0]


def test_images_source_limit_is_configurable(tmp_path):
    folder = folder_with_a_bomb(tmp_path)
    cfg = SourceConfig(kind="images", uri=str(folder), loop=False, max_image_pixels=320 * 240 - 1)
    src = make_source(cfg)
    with pytest.raises(Exception, match="none of the 3 images"):
        src.open()  # every file over the limit: a start-up error (exit 2), not a silent run


def _cli(name: str) -> list[str]:
    script = Path(sys.executable).with_name(name)
    assert script.is_file(), f"{name} not installed in the venv"
    return [str(script)]


def test_daemon_images_run_skips_the_bomb(tmp_path):
    folder = folder_with_a_bomb(tmp_path)
    p = subprocess.run(
        [*_cli("emotion-edge"), "--source", f"images:{folder}", "--no-loop", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    stats = [json.loads(line) for line in p.stdout.splitlines() if '"emotion-edge/stats/1"' in line]
    assert stats and stats[-1]["source"]["files_skipped"] == 1
    assert stats[-1]["frames"]["processed"] == 2
    assert p.stderr.count("b_bomb.png") == 1 and "Traceback" not in p.stderr


def test_recorder_images_run_skips_the_bomb(tmp_path):
    folder = folder_with_a_bomb(tmp_path)
    db, stats = tmp_path / "r.sqlite", tmp_path / "stats.json"
    cmd = [*_cli("emotion-edge-record"), "--db", str(db), "--source", f"images:{folder}"]
    p = subprocess.run(
        [*cmd, "--no-progress", "--stats-json", str(stats)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    s = json.loads(stats.read_text())
    assert s["source"]["frames"] == 2 and s["source"]["files_skipped"] == 1
    assert s["db"]["samples"] == 2
    assert p.stderr.count("b_bomb.png") == 1 and "Traceback" not in p.stderr
