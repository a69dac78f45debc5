"""The image analysis API: the real server (in-process on a loopback port, and the installed
`emotion-edge-analyze` console script), real HTTP, the packaged models, real sample photos.

Sample photos come from ../shared/samples (skipped with a reason when absent); bad uploads
are made here (random bytes, a cut JPEG, a PNG header claiming 100000 x 100000 pixels, 50 MB).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest
from chromium import needs_chromium, start_chromium
from mqtt_broker import free_port

cv2 = pytest.importorskip("cv2")
pytest.importorskip("aiohttp")

from emotion_edge.analyze import Analyzer, ImageError, analyze_image, decode_image  # noqa: E402
from emotion_edge.config import load_config  # noqa: E402
from emotion_edge.geometry import iou  # noqa: E402
from emotion_edge.web import WebServer  # noqa: E402
from emotion_edge.web.analyze_api import AnalyzeLimits, make_analyze_api  # noqa: E402

TWO = "face_recognition/two_people.jpg"
OBAMA = "face_recognition/obama.jpg"
MB = 1024 * 1024
# the two people in two_people.jpg (x, y, w, h); a detector may find more (a false positive
# is the detector's business, tested in its own tests), but never fewer
TWO_FACES = ((236, 50, 176, 176), (792, 98, 135, 135))


def finds_both(boxes) -> bool:
    """Both people of two_people.jpg are among `boxes` (dicts or tuples)."""
    boxes = [(b["x"], b["y"], b["w"], b["h"]) if isinstance(b, dict) else b for b in boxes]
    return all(any(iou(t, b) > 0.5 for b in boxes) for t in TWO_FACES)


# -- helpers ------------------------------------------------------------------------------------


def multipart(fields: dict[str, bytes | str], filename: str = "photo.jpg") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = bytearray()
    for name, value in fields.items():
        out += f"--{boundary}\r\n".encode()
        if isinstance(value, bytes):
            out += (
                f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            out += value
        else:
            out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}'.encode()
        out += b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def post(port: int, body: bytes, ctype: str, path: str = "/api/v1/analyze", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": ctype, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def get(port: int, path: str, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def png_header(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR (with its CRC) claiming width x height, one tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def schema_validator(doc: dict, name: str):
    jsonschema = pytest.importorskip("jsonschema")
    root = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    return jsonschema.Draft202012Validator(root)


def check_analysis(body: dict, labels: list[str], width: int, height: int) -> None:
    assert len(body["request_id"]) == 32
    assert body["image"] == {"width": width, "height": height}
    assert body["face_count"] == len(body["faces"])
    for face in body["faces"]:
        b = face["box"]
        assert 0 <= b["x"] < width and 0 <= b["y"] < height and b["w"] > 10 and b["h"] > 10
        assert b["x"] + b["w"] <= width + 1 and b["y"] + b["h"] <= height + 1
        assert list(face["probabilities"]) == labels
        assert abs(sum(face["probabilities"].values()) - 1) < 0.01
        tops = [t["confidence"] for t in face["top"]]
        assert tops == sorted(tops, reverse=True)
        assert (
            face["emotion"]
            == face["top"][0]["emotion"]
            == max(face["probabilities"], key=face["probabilities"].get)
        )
        assert 0 < face["score"] <= 1


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cfg():
    return load_config(None)


@pytest.fixture(scope="module")
def photos(samples_dir) -> dict[str, bytes]:
    paths = {TWO: samples_dir / TWO, OBAMA: samples_dir / OBAMA}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        pytest.skip(f"sample photos missing: {missing}")
    return {k: p.read_bytes() for k, p in paths.items()}


def start_server(cfg, token: str = "", **limits) -> WebServer:
    lim = AnalyzeLimits(**{"top_k_default": 3, **limits})
    api = make_analyze_api(cfg, camera_less=True, limits=lim)
    analyzer = api.warm_up()
    web_cfg = load_config(None, {"web": {"enabled": True, "port": free_port()}}).web
    server = WebServer(
        web_cfg,
        device_id="test",
        model_version=analyzer.model_version,
        labels=analyzer.labels,
        face_info=lambda face_id: None,
        status=lambda: {},
        token=token,
        analyze=api,
    )
    server.start()
    return server


@pytest.fixture(scope="module")
def server(cfg):
    srv = start_server(cfg)
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def openapi(server) -> dict:
    status, headers, body = get(server.port, "/api/v1/openapi.json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    return json.loads(body)


# -- the Python API -----------------------------------------------------------------------------


def test_python_api_one_code_path_with_the_daemon(cfg, photos):
    """analyze_image() on a path, bytes and an array agrees with the daemon's own detector and
    classifier (built by the same factories) called as the pipeline calls them."""
    from emotion_edge.classify.classifier import load_classifier
    from emotion_edge.detect.detector import detect_photo, make_detector
    from emotion_edge.preprocess import eye_roll_deg

    data = photos[TWO]
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    # what the pipeline does with a photo of an images: source
    dets = detect_photo(make_detector(cfg.detector), gray)
    dets.sort(key=lambda d: -d.box[2] * d.box[3])  # the API lists the largest face first
    rolls = [eye_roll_deg(d.keypoints) for d in dets]
    probs = load_classifier(cfg.classifier).classify(gray, [d.box for d in dets], rolls)
    assert finds_both([d.box for d in dets]), [d.box for d in dets]

    analyzer = Analyzer(cfg)
    for given in (data, img):
        result = analyzer.analyze(given)
        assert [f.box for f in result.faces] == [tuple(d.box) for d in dets]
        got = np.array([list(f.probabilities.values()) for f in result.faces])
        np.testing.assert_allclose(got, probs, atol=1e-4)
        assert (result.width, result.height) == (img.shape[1], img.shape[0])
    by_path = analyze_image(Path(str(samples_path(TWO))))
    assert [f.emotion for f in by_path.faces] == [f.emotion for f in result.faces]

    from emotion_edge import Analyzer as Exported
    from emotion_edge import analyze_image as exported

    assert Exported is Analyzer and exported is analyze_image


def test_scan_frame_is_the_daemons_camera_frame_path(cfg, server, photos):
    """scan=frame: one detector pass, as the daemon on a camera frame; bad values are 400."""
    from emotion_edge.classify.classifier import load_classifier
    from emotion_edge.detect.detector import make_detector
    from emotion_edge.preprocess import eye_roll_deg

    img = cv2.imdecode(np.frombuffer(photos[TWO], np.uint8), cv2.IMREAD_COLOR)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    dets = make_detector(cfg.detector).detect(gray)
    dets.sort(key=lambda d: -d.box[2] * d.box[3])
    rolls = [eye_roll_deg(d.keypoints) for d in dets]
    probs = load_classifier(cfg.classifier).classify(gray, [d.box for d in dets], rolls)
    status, _, raw = post(server.port, photos[TWO], "image/jpeg", path="/api/v1/analyze?scan=frame")
    assert status == 200, raw[:300]
    doc = json.loads(raw)
    got = np.array([list(f["probabilities"].values()) for f in doc["faces"]])
    assert doc["face_count"] == len(dets) and finds_both([f["box"] for f in doc["faces"]])
    np.testing.assert_allclose(got, probs, atol=1e-3)
    status, _, raw = post(server.port, photos[TWO], "image/jpeg", path="/api/v1/analyze?scan=all")
    assert status == 400 and "scan" in json.loads(raw)["error"]


def samples_path(name: str) -> Path:
    from conftest import SAMPLES_DIR

    return SAMPLES_DIR / name


def test_decode_refuses_bombs_and_cut_files_before_decoding(photos):
    with pytest.raises(ImageError) as bomb:
        decode_image(png_header(100_000, 100_000))
    assert bomb.value.status == 413 and "100000 x 100000" in str(bomb.value)
    cut = photos[OBAMA][: len(photos[OBAMA]) * 2 // 3]
    with pytest.raises(ImageError) as trunc:
        decode_image(cut)
    assert trunc.value.status == 422 and "truncated" in str(trunc.value)
    with pytest.raises(ImageError) as other:
        decode_image(b"GIF89a" + b"\x00" * 100)
    assert other.value.status == 415
    assert decode_image(photos[OBAMA]).ndim == 3


def test_phone_photos_are_turned_by_their_exif_orientation():
    """A phone stores a portrait photo sideways with EXIF orientation 6: boxes must refer to
    the picture as people see it, so the decoded image is the turned one."""
    pil = pytest.importorskip("PIL.Image")
    import io

    img = pil.fromarray(np.zeros((100, 200, 3), np.uint8))
    exif = pil.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    assert decode_image(buf.getvalue()).shape == (200, 100, 3)


# -- HTTP ---------------------------------------------------------------------------------------


def test_multipart_raw_and_base64_give_the_same_faces(server, openapi, photos):
    data = photos[TWO]
    labels = openapi["components"]["schemas"]["Face"]["properties"]["emotion"]["enum"]
    validate = schema_validator(openapi, "Analysis")
    body, ctype = multipart({"image": data})
    answers = [
        post(server.port, body, ctype),
        post(server.port, data, "image/jpeg"),
        post(
            server.port,
            json.dumps({"image": base64.b64encode(data).decode()}).encode(),
            "application/json",
        ),
    ]
    faces = []
    for status, headers, raw in answers:
        assert status == 200, raw[:300]
        assert headers["Cache-Control"] == "no-store"
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        doc = json.loads(raw)
        validate.validate(doc)
        check_analysis(doc, labels, 1126, 661)
        assert finds_both([f["box"] for f in doc["faces"]]) and len(doc["faces"][0]["top"]) == 3
        assert "annotated_jpeg_b64" not in doc and "crop_jpeg_b64" not in doc["faces"][0]
        faces.append([(f["box"], f["probabilities"]) for f in doc["faces"]])
    assert faces[0] == faces[1] == faces[2]
    assert len({json.loads(a[2])["request_id"] for a in answers}) == 3


def test_crops_and_annotated_image(server, openapi, photos):
    body, ctype = multipart({"image": photos[TWO], "crops": "true", "top_k": "7"})
    status, _, raw = post(server.port, body, ctype, path="/api/v1/analyze?annotated=true")
    assert status == 200, raw[:300]
    doc = json.loads(raw)
    schema_validator(openapi, "Analysis").validate(doc)
    pic = cv2.imdecode(np.frombuffer(base64.b64decode(doc["annotated_jpeg_b64"]), np.uint8), 1)
    assert pic.shape == (661, 1126, 3)
    orig = cv2.imdecode(np.frombuffer(photos[TWO], np.uint8), 1)
    for i, face in enumerate(doc["faces"]):
        assert len(face["top"]) == 7
        crop = cv2.imdecode(np.frombuffer(base64.b64decode(face["crop_jpeg_b64"]), np.uint8), 1)
        assert crop.shape == (112, 112, 3)
        # the box is drawn: the annotated picture differs from the photo along the box's left edge
        b = face["box"]
        x, y0, y1 = round(b["x"]), round(b["y"] + b["h"] * 0.3), round(b["y"] + b["h"] * 0.7)
        diff = np.abs(pic[y0:y1, x].astype(int) - orig[y0:y1, x].astype(int)).mean()
        assert diff > 40, (i, diff)


BAD = {
    "empty": (b"", "image/jpeg", 400, "empty"),
    "not an image": (b"hello, this is text and not a photo" * 10, "image/jpeg", 415, None),
    "100000x100000 PNG header": (png_header(100_000, 100_000), "image/png", 413, "pixels"),
}


@pytest.mark.parametrize(
    "case",
    [*BAD, "truncated JPEG", "50 MB", "bad base64", "no image field", "text/plain", "bad option"],
)
def test_bad_uploads_get_a_clear_4xx_json_error(server, openapi, photos, case):
    validate = schema_validator(openapi, "Error")
    if case in BAD:
        data, ctype, want, word = BAD[case]
        body = data
    elif case == "truncated JPEG":
        body, ctype, want, word = (
            photos[OBAMA][: len(photos[OBAMA]) * 2 // 3],
            "image/jpeg",
            422,
            "truncated",
        )
    elif case == "50 MB":
        body, ctype, want, word = os.urandom(50 * MB), "application/octet-stream", 413, "too large"
    elif case == "bad base64":
        body, ctype, want, word = b'{"image": "not base64!!"}', "application/json", 400, "base64"
    elif case == "no image field":
        body, ctype = multipart({"photo_is_missing": "x"})
        want, word = 400, "image"
    elif case == "text/plain":
        body, ctype, want, word = b"x", "text/plain", 415, "Content-Type"
    else:
        body, ctype, want, word = photos[TWO], "image/jpeg", 400, "top_k"
    path = "/api/v1/analyze?top_k=99" if case == "bad option" else "/api/v1/analyze"
    t0 = time.monotonic()
    status, headers, raw = post(server.port, body, ctype, path=path)
    assert time.monotonic() - t0 < 30
    assert status == want, raw[:300]
    assert headers["Content-Type"].startswith("application/json")
    doc = json.loads(raw)
    validate.validate(doc)
    assert word is None or word.lower() in doc["error"].lower(), doc
    assert "\n" not in doc["error"]
    # the server is still fine
    ok, _, _ = post(server.port, photos[OBAMA], "image/jpeg", path="/api/v1/analyze?scan=frame")
    assert ok == 200


def test_50_mb_streamed_without_length_is_cut_off(server, photos):
    """A chunked upload has no Content-Length to refuse early: reading stops at the limit."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)

    def chunks():
        block = os.urandom(MB)
        for _ in range(50):
            yield block

    try:
        conn.request(
            "POST",
            "/api/v1/analyze",
            body=chunks(),
            headers={"Content-Type": "image/jpeg"},
            encode_chunked=True,
        )
        resp = conn.getresponse()
        status, raw = resp.status, resp.read()
    except (BrokenPipeError, ConnectionResetError):
        pytest.fail("the server dropped the connection instead of answering 413")
    finally:
        conn.close()
    assert status == 413 and json.loads(raw)["code"] == "too_large"


def test_openapi_document_is_valid(openapi):
    from openapi_spec_validator import validate

    validate(openapi)
    assert openapi["openapi"].startswith("3.")
    post_op = openapi["paths"]["/api/v1/analyze"]["post"]
    assert {"multipart/form-data", "image/jpeg", "image/png", "application/json"} <= set(
        post_op["requestBody"]["content"]
    )
    assert {"200", "400", "413", "415", "422", "429"} <= set(post_op["responses"])
    labels = openapi["components"]["schemas"]["Face"]["properties"]["emotion"]["enum"]
    assert "happy" in labels and "sad" in labels


def test_busy_server_answers_429_and_recovers(cfg, photos):
    """One worker, no queue: while one upload is in progress a second request gets 429."""
    srv = start_server(cfg, workers=1, queue=0)
    try:
        data = photos[TWO]
        slow = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        slow.sendall(
            (
                "POST /api/v1/analyze?scan=frame HTTP/1.1\r\nHost: x\r\n"
                "Content-Type: image/jpeg\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
            ).encode()
            + data[:1000]
        )
        time.sleep(0.5)
        status, headers, raw = post(srv.port, data, "image/jpeg", path="/api/v1/analyze?scan=frame")
        assert status == 429, raw[:300]
        assert headers["Retry-After"] == "1" and json.loads(raw)["code"] == "busy"
        slow.sendall(data[1000:])
        reply = b""
        while chunk := slow.recv(65536):
            reply += chunk
        slow.close()
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        assert post(srv.port, data, "image/jpeg", path="/api/v1/analyze?scan=frame")[0] == 200
        assert srv.analyze.figures["refused_busy"] == 1
    finally:
        srv.close()


def test_refusals_are_counted_and_logged_without_content(cfg, photos, caplog):
    caplog.set_level(logging.INFO, logger="emotion_edge.web.analyze_api")
    srv = start_server(cfg)
    try:
        assert post(srv.port, b"GIF89a" + b"\x00" * 64, "image/png")[0] == 415
        assert post(srv.port, png_header(100_000, 100_000), "image/png")[0] == 413
        assert (
            post(srv.port, photos[OBAMA], "image/jpeg", path="/api/v1/analyze?scan=frame")[0] == 200
        )
        status, _, raw = get(srv.port, "/api/v1/stats")
        stats = json.loads(raw)
        assert status == 200 and stats["requests"] == 3 and stats["analysed"] == 1
        assert stats["refusals"] == {"415 unsupported_format": 1, "413 too_many_pixels": 1}
        assert stats["in_progress"] == 0 and stats["limits"]["workers"] == 2
        lines = [r.getMessage() for r in caplog.records if "analyze: refused" in r.getMessage()]
        assert lines == [
            "analyze: refused 1 x 415 unsupported_format (all refusals: GET /api/v1/stats; "
            "the next are summed up once a minute)"
        ]
        assert "100000" not in caplog.text and "GIF" not in caplog.text
    finally:
        srv.close()


def test_token_is_required_when_set(cfg, photos):
    srv = start_server(cfg, token="s3cret-token-for-tests")
    try:
        assert post(srv.port, photos[OBAMA], "image/jpeg")[0] == 401
        assert get(srv.port, "/api/v1/openapi.json")[0] == 401
        status, headers, body = get(srv.port, "/analyze")  # a browser gets the sign-in form
        assert status == 401 and headers["Content-Type"].startswith("text/html")
        assert b'action="login"' in body
        status, _, raw = post(
            srv.port,
            photos[OBAMA],
            "image/jpeg",
            headers={"Authorization": "Bearer s3cret-token-for-tests"},
        )
        assert status == 200 and json.loads(raw)["face_count"] >= 1
    finally:
        srv.close()


def test_images_are_neither_logged_nor_stored(server, photos, tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.DEBUG)
    data = photos[OBAMA]
    body, ctype = multipart({"image": data}, filename="secret-holiday-photo.jpg")
    assert post(server.port, body, ctype)[0] == 200
    assert post(server.port, data[:5000], "image/jpeg")[0] == 422
    text = caplog.text
    assert "secret-holiday-photo" not in text
    assert base64.b64encode(data[:48]).decode()[:40] not in text
    assert list(tmp_path.iterdir()) == []


def test_pages_and_redirect(server):
    status, headers, _ = get(server.port, "/")
    assert status == 302 and headers["Location"] == "/analyze"
    status, headers, body = get(server.port, "/analyze")
    assert status == 200 and b'src="static/analyze.js"' in body and b"<script>" not in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    for name in ("analyze.js", "analyze.css"):
        assert get(server.port, f"/static/{name}")[0] == 200


# -- the installed console script, end to end ---------------------------------------------------


def analyze_cmd() -> list[str]:
    script = Path(sys.executable).with_name("emotion-edge-analyze")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "emotion_edge.analyze.cli"]


def test_console_script_serves_what_the_readme_shows(tmp_path, photos, samples_dir):
    port = free_port()
    err = (tmp_path / "err.log").open("wb")
    proc = subprocess.Popen(
        [*analyze_cmd(), "--web", str(port)], stdout=subprocess.DEVNULL, stderr=err
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "err.log").read_text()
            try:
                if get(port, "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.3)
        photo = samples_dir / TWO
        curl = shutil.which("curl")
        if curl:  # exactly as the README has it
            out = subprocess.run(
                [curl, "-sS", "-F", f"image=@{photo}", f"http://127.0.0.1:{port}/api/v1/analyze"],
                capture_output=True,
                timeout=60,
                check=True,
            ).stdout
        else:
            body, ctype = multipart({"image": photos[TWO]})
            out = post(port, body, ctype)[2]
        doc = json.loads(out)
        assert finds_both([f["box"] for f in doc["faces"]])
        assert {f["emotion"] for f in doc["faces"]} <= set(doc["labels"])
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    log = (tmp_path / "err.log").read_text()
    assert rc == 0, log
    assert "image analysis on http://127.0.0.1:" in log
    assert "two_people" not in log


def test_console_script_files_and_user_errors(tmp_path, samples_dir):
    photo = samples_dir / TWO
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    run = subprocess.run([*analyze_cmd(), str(photo)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    line = json.loads(run.stdout.splitlines()[0])
    assert line["file"] == str(photo) and finds_both([f["box"] for f in line["faces"]])
    run = subprocess.run([*analyze_cmd(), str(bad)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "not a JPEG or PNG" in run.stderr
    run = subprocess.run(analyze_cmd(), capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "nothing to do" in run.stderr


# -- a real browser: drop a photo on the page ---------------------------------------------------

DOCS_SHOT = Path(__file__).resolve().parents[1] / "docs/img/analyze-page.png"

# Selenium cannot drag a file from the desktop; a real File from a real <input type=file>
# (send_keys) is put in a DataTransfer and dropped on the zone, which is what the browser
# hands the page's drop handler when a person drops a photo.
DROP_JS = """
const input = document.createElement('input');
input.type = 'file';
input.id = 'test-file';
document.body.appendChild(input);
"""
DROP_FIRE_JS = """
const file = document.getElementById('test-file').files[0];
const dt = new DataTransfer();
dt.items.add(file);
const zone = document.getElementById('drop');
for (const type of ['dragenter', 'dragover', 'drop']) {
  zone.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: dt}));
}
"""


@needs_chromium
def test_browser_drop_a_photo_shows_boxes_and_bars(server, samples_dir, tmp_path):
    from selenium.webdriver.common.by import By

    drv = start_chromium(tmp_path / "chromium-profile", window="1280,800")
    try:
        drv.get(f"http://127.0.0.1:{server.port}/")  # camera-less: redirected to /analyze
        assert drv.current_url.endswith("/analyze")
        drv.execute_script(DROP_JS)
        drv.find_element(By.ID, "test-file").send_keys(str(samples_dir / TWO))
        drv.execute_script(DROP_FIRE_JS)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not drv.execute_script(
            "return document.body.dataset.done"
        ):
            time.sleep(0.2)
        state = drv.execute_script(
            """
            const c = document.getElementById('picture');
            const cards = [...document.querySelectorAll('#faces .card')];
            const ctx = c.getContext('2d');
            return {w: c.width, h: c.height, hidden: c.hidden, faces: c.dataset.faces,
                    status: document.getElementById('status').textContent,
                    error: document.getElementById('status').classList.contains('error'),
                    titles: cards.map(k => k.querySelector('.title').textContent),
                    bars: cards.map(k => k.querySelectorAll('.fill').length),
                    widths: cards.map(
                        k => [...k.querySelectorAll('.fill')].map(f => f.style.width)),
                    crop: cards.length ? [...cards[0].querySelector('.crop').getContext('2d')
                          .getImageData(0, 0, 112, 112).data].some(v => v > 0) : false};
            """
        )
        assert not state["error"], state["status"]
        doc = json.loads(post(server.port, (samples_dir / TWO).read_bytes(), "image/jpeg")[2])
        n = doc["face_count"]
        assert finds_both([f["box"] for f in doc["faces"]])
        assert (state["w"], state["h"], state["hidden"], state["faces"]) == (
            1126,
            661,
            False,
            str(n),
        )
        assert state["status"].startswith(f"{n} faces in 1126x661 px"), state["status"]
        assert len(state["titles"]) == n and state["bars"] == [7] * n
        assert all(re.match(r"^\d: \w+ \d+%$", t) for t in state["titles"]), state["titles"]
        assert float(state["widths"][0][0].rstrip("%")) > 20  # the leading emotion's bar
        assert state["crop"], "the face thumbnail was drawn"
        # the boxes are on the picture: the canvas pixel on a box edge has the face's colour
        b = doc["faces"][0]["box"]
        px = drv.execute_script(
            "return [...document.getElementById('picture').getContext('2d')"
            f".getImageData({round(b['x'])}, {round(b['y'] + b['h'] / 2)}, 1, 1).data]"
        )
        assert abs(px[0] - 0x22) < 60 and abs(px[1] - 0xD3) < 60 and abs(px[2] - 0xEE) < 60, px
        shot = tmp_path / "analyze-page.png"
        drv.save_screenshot(str(shot))
        if os.environ.get("EMOTION_EDGE_UPDATE_SCREENSHOT") == "1" or not DOCS_SHOT.exists():
            DOCS_SHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, DOCS_SHOT)
        # the fast scan box: one detector pass, the API's scan=frame
        first = drv.execute_script("return document.body.dataset.done")
        drv.find_element(By.ID, "fast").click()
        drv.execute_script(DROP_FIRE_JS)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and drv.execute_script(
            "return document.body.dataset.done"
        ) in (None, first):
            time.sleep(0.2)
        fast = json.loads(
            post(
                server.port,
                (samples_dir / TWO).read_bytes(),
                "image/jpeg",
                path="/api/v1/analyze?scan=frame",
            )[2]
        )
        shown = drv.execute_script("return document.getElementById('picture').dataset.faces")
        assert shown == str(fast["face_count"])
        logs = [
            e
            for e in drv.get_log("browser")
            if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]
        ]
        assert not logs, logs  # no CSP violation, no script error
    finally:
        drv.quit()


def test_daemon_web_serves_the_api_beside_the_live_view(tmp_path, samples_dir):
    """`emotion-edge --web`: the live view at /, the analysis API and page beside it."""
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(samples_dir / "face_recognition/obama_small.jpg", folder / "a.jpg")
    port = free_port()
    script = Path(sys.executable).with_name("emotion-edge")
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "emotion_edge.cli"]
    err = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [*cmd, "--source", f"images:{folder}", "--dry-run", "--web", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "daemon.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "no /healthz"
            try:
                if get(port, "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.3)
        status, _, body = get(port, "/")
        assert status == 200 and b"live view" in body  # the camera's page, not a redirect
        assert get(port, "/analyze")[0] == 200
        photo = (samples_dir / TWO).read_bytes()
        status, _, raw = post(port, photo, "image/jpeg", path="/api/v1/analyze?scan=frame")
        assert status == 200, raw[:300]
        assert finds_both([f["box"] for f in json.loads(raw)["faces"]])
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    assert rc == 0, (tmp_path / "daemon.log").read_text()[-2000:]
