"""Uploaded bytes -> a BGR image, refusing what would hurt the device before it is decoded.

Only JPEG and PNG are accepted (told apart by their first bytes, never by a file name or a
client's Content-Type). The pixel count is read from the file's header (PNG IHDR, JPEG SOF)
and checked against `max_pixels` before any decoding, so a 100000 x 100000 header (a
decompression bomb of a few hundred bytes) is refused without allocating its 30 GB. A file
cut short is refused too: a truncated JPEG decodes "successfully" into grey stripes in
libjpeg, so the end-of-image marker must follow the last scan.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
# JPEG start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range
_SOF = {0xC0 + i for i in range(16)} - {0xC4, 0xC8, 0xCC}


class ImageError(ValueError):
    """The upload cannot be analysed; `status` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 422, code: str = "bad_image"):
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class ImageLimits:
    """What one upload may cost. The defaults fit a Raspberry Pi 4 with 2 GB."""

    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 24_000_000  # a 6000 x 4000 photo; decoded BGR is 3 bytes a pixel


DEFAULT_LIMITS = ImageLimits()
# formats people send by mistake, named in the refusal
_OTHER = (
    (lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP", "it is WebP"),
    (lambda d: d[:6] in (b"GIF87a", b"GIF89a"), "it is GIF"),
    (lambda d: d[:2] == b"BM", "it is BMP"),
    (lambda d: d[:4] in (b"II*\x00", b"MM\x00*"), "it is TIFF"),
    (lambda d: d[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"), "it is HEIF/AVIF"),
)


def image_format(data: bytes) -> str:
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    known = next((name for magic, name in _OTHER if magic(data)), "")
    raise ImageError(
        f"not a JPEG or PNG image ({known or 'the first bytes are neither signature'}); "
        "convert it to JPEG or PNG",
        status=415,
        code="unsupported_format",
    )


def png_size(data: bytes) -> tuple[int, int]:
    # signature (8), IHDR length (4), b"IHDR" (4), width (4), height (4)
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ImageError("truncated or damaged PNG: no IHDR header", code="truncated")
    w, h = struct.unpack(">II", data[16:24])
    return int(w), int(h)


def jpeg_size(data: bytes) -> tuple[int, int]:
    """Walk the marker segments to the first start-of-frame (thumbnails sit inside APP1)."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise ImageError("damaged JPEG: marker expected", code="truncated")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # segments without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _SOF:
            if i + 9 > n:
                break
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(w), int(h)
        if marker == 0xDA:  # a scan before any frame header
            break
        i += 2 + length
    raise ImageError("truncated or damaged JPEG: no frame header", code="truncated")


def header_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from the header alone."""
    fmt = image_format(data)
    w, h = png_size(data) if fmt == "png" else jpeg_size(data)
    if w <= 0 or h <= 0:
        raise ImageError(f"{fmt.upper()} header gives an empty image ({w} x {h})")
    return fmt, w, h


def check_complete(fmt: str, data: bytes) -> None:
    if fmt == "png":
        if b"IEND" not in data[-64:]:
            raise ImageError("truncated PNG: no IEND chunk at the end", code="truncated")
        return
    # The end-of-image marker after the last start-of-scan: entropy-coded data never holds
    # FF D9 (0xFF bytes are stuffed), and an EXIF thumbnail's markers come before the scans.
    if data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        raise ImageError(
            "truncated JPEG: the data ends before the end-of-image marker", code="truncated"
        )


def decode_image(data: bytes, limits: ImageLimits | None = None) -> np.ndarray:
    """BGR uint8 image from JPEG/PNG bytes, EXIF orientation applied; ImageError otherwise."""
    import cv2

    limits = limits or DEFAULT_LIMITS
    if not data:
        raise ImageError("empty upload: no image bytes", status=400, code="empty")
    if len(data) > limits.max_bytes:
        raise ImageError(
            f"image too large: {len(data)} bytes, the limit is {limits.max_bytes}",
            status=413,
            code="too_large",
        )
    fmt, w, h = header_size(data)
    if w * h > limits.max_pixels:
        raise ImageError(
            f"image too large: {w} x {h} = {w * h} pixels, the limit is {limits.max_pixels}",
            status=413,
            code="too_many_pixels",
        )
    check_complete(fmt, data)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise ImageError(f"the {fmt.upper()} data cannot be decoded (damaged file)")
    return img
