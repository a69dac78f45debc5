"""Issue 42 (6): the live view's `stream_frames_missed` counts pictures a slow stream client
missed, not pipeline frames between the 10 fps ticks.

Before, `web.frames_skipped` grew by the pipeline frames between two encodes (19,850 for 50
clients that all kept up). Now a client that reads every picture misses none, and one that
stops reading for a while misses the pictures published meanwhile (it gets the newest next).
"""

from __future__ import annotations

import http.client
import socket
import time

import numpy as np
import pytest
from test_web import Daemon, get_json, wait_for


def _still(folder, img: np.ndarray):
    import cv2

    folder.mkdir()
    cv2.imwrite(str(folder / "still.png"), img)
    return folder


def _web(d: Daemon) -> dict:
    return get_json(d.base + "/api/state")["web"]


def _read_parts(resp, n: int, pause_after_first_s: float = 0.0) -> int:
    got = 0
    while got < n:
        line = resp.fp.readline()
        if not line:
            break
        if line.lower().startswith(b"content-length:"):
            size = int(line.split(b":")[1])
            while resp.fp.readline() not in (b"\r\n", b"\n"):
                pass
            resp.fp.read(size)
            got += 1
            if got == 1 and pause_after_first_s:
                time.sleep(pause_after_first_s)
    return got


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("webcount")


def test_a_client_that_keeps_up_misses_nothing(tmp):
    """Source at 15 fps, stream at 10 fps: every tick skips pipeline frames, the client none."""
    grad = np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))
    d = Daemon(tmp, f"images:{_still(tmp / 'gradient', grad)}", max_fps=10.0).start()
    try:
        conn = http.client.HTTPConnection(f"127.0.0.1:{d.port}", timeout=20)
        conn.request("GET", "/stream.mjpg")
        resp = conn.getresponse()
        assert resp.status == 200
        assert _read_parts(resp, 20) == 20
        web = _web(d)
        conn.close()
        assert web["frames_encoded"] >= 20
        assert web["stream_frames_missed"] == 0, web
    finally:
        d.stop()


def test_a_client_that_stops_reading_misses_the_pictures_meanwhile(tmp):
    """Big noisy pictures (1280 px, quality 95, ~1 MB each) fill the socket buffers within a
    tick or two, so a client that pauses 1.5 s (under send_timeout_s) holds its writer up while
    the ticker publishes newer pictures; it then gets the newest, and the ones between count."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    d = Daemon(
        tmp,
        f"images:{_still(tmp / 'noise', noise)}",
        stream_width=1280,
        jpeg_quality=95,
        send_timeout_s=5.0,
    ).start()
    try:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(20)
        s.connect(("127.0.0.1", d.port))
        s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = http.client.HTTPResponse(s)
        resp.begin()
        assert resp.status == 200
        assert _read_parts(resp, 6, pause_after_first_s=1.5) == 6
        web = wait_for(lambda: (w := _web(d))["stream_frames_missed"] > 0 and w, 10, what="misses")
        s.close()
        assert web["clients_dropped"] == 0, web  # slow, not stuck: it was kept
        assert web["stream_frames_missed"] < web["frames_encoded"], web
    finally:
        d.stop()
