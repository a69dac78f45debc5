"""Where the times of an offline recording come from.

A video's frames are stamped `start + frame index / fps`, with `start` from `--start`, else
the creation time the file's MP4/MOV header records (`mvhd`, when the camera set it), else
the fixed NO_CLOCK_EPOCH (2000-01-01T00:00:00Z). A photo is stamped with its EXIF capture
time (DateTimeOriginal, else DateTime; taken as written, read as UTC) when it has one, else
NO_CLOCK_EPOCH + its index in the folder (seconds): no file modification time is ever passed
off as a capture time. The report shows no time of day for times in [NO_CLOCK_EPOCH,
NO_CLOCK_END).
"""

from __future__ import annotations

import struct
from datetime import datetime, timezone
from pathlib import Path

NO_CLOCK_EPOCH = 946684800.0  # 2000-01-01T00:00:00Z
NO_CLOCK_END = NO_CLOCK_EPOCH + 1e7  # about 116 days: room for long clips and big folders
_MP4_EPOCH = -2082844800  # 1904-01-01T00:00:00Z, the QuickTime/MP4 epoch, in Unix seconds
_CONTAINERS = {b"moov", b"trak", b"mdia"}


def mp4_creation_time(path: str | Path) -> float | None:
    """The movie header's creation time (Unix seconds), or None (not MP4/MOV, or unset)."""
    try:
        with open(path, "rb") as f:
            return _find_mvhd(f, 0, Path(path).stat().st_size, depth=0)
    except (OSError, struct.error):
        return None


def _find_mvhd(f, start: int, end: int, depth: int) -> float | None:
    pos = start
    while pos + 8 <= end and depth < 4:
        f.seek(pos)
        size, kind = struct.unpack(">I4s", f.read(8))
        header = 8
        if size == 1:
            size = struct.unpack(">Q", f.read(8))[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            return None
        if kind == b"mvhd":
            version = f.read(1)[0]
            f.read(3)
            raw = struct.unpack(">Q" if version == 1 else ">I", f.read(8 if version == 1 else 4))
            secs = raw[0]
            if secs == 0:
                return None
            ts = float(secs + _MP4_EPOCH)
            return ts if ts > 0 else None
        if kind in _CONTAINERS:
            found = _find_mvhd(f, pos + header, pos + size, depth + 1)
            if found is not None or kind == b"moov":
                return found
        pos += size
    return None


def exif_time(path: str | Path) -> float | None:
    """The photo's EXIF capture time (Unix seconds, the camera's clock read as UTC) or None."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            exif = im.getexif()
            text = exif.get_ifd(0x8769).get(36867) or exif.get(306)
    except Exception:  # noqa: BLE001 - no readable EXIF is simply no capture time
        return None
    if not text:
        return None
    try:
        dt = datetime.strptime(str(text).strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    return dt.replace(tzinfo=timezone.utc).timestamp()
