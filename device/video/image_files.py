"""One image file from disk -> a BGR image, refusing what would hurt the device first.

`read_image(path, max_pixels)` reads the width and height from the file's header (PNG, JPEG,
BMP, TIFF, WebP, PGM/PPM, told apart by their first bytes, not by the file name) and refuses a
picture over `max_pixels` before decoding it: a PNG whose header declares 100000 x 100000 is a
few hundred bytes on disk and would be 30 GB decoded (OpenCV's imread raises instead of
returning None for it, which used to end a whole `images:` run). Files that are no image, are
damaged or that OpenCV refuses raise `UnreadableImage` with a one-line reason, so the folder
source and the recorder skip them, count them and log each file once.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

DEFAULT_MAX_PIXELS = 50_000_000  # 50 MP: any camera photo; 150 MB decoded as BGR
HEAD_BYTES = 64 * 1024


class UnreadableImage(ValueError):
    """A file that is skipped; the message says why in one line (no image content)."""


def _pnm_size(head: bytes) -> tuple[int, int]:
    """P1-P6: magic, width, height as whitespace-separated tokens; '#' comments to the end of
    the line."""
    tokens: list[bytes] = []
    i, n = 2, len(head)
    while len(tokens) < 2 and i < n:
        c = head[i : i + 1]
        if c == b"#":
            end = head.find(b"\n", i)
            i = n if end < 0 else end + 1
        elif c.isspace():
            i += 1
        else:
            j = i
            while j < n and not head[j : j + 1].isspace() and head[j : j + 1] != b"#":
                j += 1
            tokens.append(head[i:j])
            i = j
    if len(tokens) < 2 or not all(t.isdigit() for t in tokens):
        raise UnreadableImage("damaged PGM/PPM header")
    return int(tokens[0]), int(tokens[1])


def _bmp_size(head: bytes) -> tuple[int, int]:
    if len(head) < 26:
        raise UnreadableImage("damaged BMP header")
    (dib,) = struct.unpack_from("<I", head, 14)
    if dib == 12:  # BITMAPCOREHEADER: unsigned 16-bit sides
        w, h = struct.unpack_from("<HH", head, 18)
    else:
        w, h = struct.unpack_from("<ii", head, 18)  # height < 0: stored top-down
    return abs(w), abs(h)


def _webp_size(head: bytes) -> tuple[int, int]:
    chunk = head[12:16]
    if chunk == b"VP8X" and len(head) >= 30:
        w = int.from_bytes(head[24:27], "little") + 1
        h = int.from_bytes(head[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:
        (bits,) = struct.unpack_from("<I", head, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack_from("<HH", head, 26)
        return w & 0x3FFF, h & 0x3FFF
    raise UnreadableImage("damaged WebP header")


def _tiff_size(f: BinaryIO, head: bytes) -> tuple[int, int]:
    """Width and length of the first image (the one OpenCV decodes): its IFD may be anywhere in
    the file, often at the end."""
    order = "<" if head[:2] == b"II" else ">"
    (version,) = struct.unpack_from(order + "H", head, 2)
    big = version == 43  # BigTIFF: 8-byte offsets and counts, 20-byte entries
    try:
        if big:
            (ifd,) = struct.unpack_from(order + "Q", head, 8)
        else:
            (ifd,) = struct.unpack_from(order + "I", head, 4)
        f.seek(ifd)
        raw = f.read(8 if big else 2)
        (count,) = struct.unpack(order + ("Q" if big else "H"), raw)
        size = 20 if big else 12
        entries = f.read(min(count, 4096) * size)
    except (struct.error, OSError, ValueError, OverflowError):
        raise UnreadableImage("damaged TIFF header") from None
    found: dict[int, int] = {}
    for k in range(len(entries) // size):
        e = entries[k * size : (k + 1) * size]
        tag, typ = struct.unpack_from(order + "HH", e)
        if tag not in (256, 257):
            continue
        value_at = 12 if big else 8
        if typ == 3:  # SHORT
            (found[tag],) = struct.unpack_from(order + "H", e, value_at)
        elif typ == 4:  # LONG
            (found[tag],) = struct.unpack_from(order + "I", e, value_at)
        elif typ == 16 and big:  # LONG8
            (found[tag],) = struct.unpack_from(order + "Q", e, value_at)
    if 256 not in found or 257 not in found:
        raise UnreadableImage("damaged TIFF header (no image width/length)")
    return found[256], found[257]


def header_size(path: Path) -> tuple[str, int, int]:
    """(format, width, height) from the file's header alone; UnreadableImage when the first
    bytes are no format read here or the header is damaged."""
    from emotion_edge.analyze.image import ImageError, jpeg_size, png_size

    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
            if head.startswith(b"\x89PNG\r\n\x1a\n"):
                fmt, (w, h) = "PNG", png_size(head)
            elif head.startswith(b"\xff\xd8\xff"):
                try:
                    w, h = jpeg_size(head)
                except ImageError:
                    # large metadata segments (EXIF, ICC) before the frame header
                    w, h = jpeg_size(head + f.read())
                fmt = "JPEG"
            elif head[:2] == b"BM":
                fmt, (w, h) = "BMP", _bmp_size(head)
            elif head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
                fmt, (w, h) = "TIFF", _tiff_size(f, head)
            elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                fmt, (w, h) = "WebP", _webp_size(head)
            elif len(head) > 2 and head[:1] == b"P" and head[1:2] in b"123456":
                fmt, (w, h) = "PGM/PPM", _pnm_size(head)
            else:
                raise UnreadableImage(
                    "not an image OpenCV is asked to read here (JPEG, PNG, BMP, TIFF, WebP, "
                    "PGM/PPM, told by the first bytes)"
                )
    except ImageError as exc:
        raise UnreadableImage(str(exc)) from None
    except OSError as exc:
        raise UnreadableImage(f"cannot read ({exc.strerror or exc})") from None
    if w <= 0 or h <= 0:
        raise UnreadableImage(f"{fmt} header gives an empty image ({w} x {h})")
    return fmt, w, h


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The BGR image at `path`; UnreadableImage (one line: why) for a file to skip."""
    import cv2

    fmt, w, h = header_size(Path(path))
    if w * h > max_pixels:
        raise UnreadableImage(
            f"{fmt} of {w} x {h} = {w * h / 1e6:.1f} MP is over the limit of "
            f"{max_pixels / 1e6:g} MP ([source] max_image_pixels), not decoded"
        )
    try:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error:
        img = None  # OpenCV's own checks (its message quotes source lines, not the file)
    if img is None or img.size == 0:
        raise UnreadableImage(f"{fmt} data cannot be decoded (damaged or unsupported file)")
    return img
