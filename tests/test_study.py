"""emotion-edge-study: the study file, and whole sessions in a real browser.

Debian's headless Chromium (autoplay allowed by flag) is driven by Selenium through the
researcher's start page, the consent, the full-screen button, the clips (made here with
OpenCV) and the ratings; the markers go through a real mosquitto to the real recorder into a
real SQLite file, or straight into the database (--db). Clip start/end markers are checked
against the clips' durations, the session markers against what was entered.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from chromium import needs_chromium, start_chromium
from emotion_edge_study.studyfile import (
    StudyFileError,
    clip_order,
    load_study,
    new_participant_code,
)
from test_record_mqtt import RecorderProc, wait_until

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FPS = 25
DURATIONS = {"clip-short": 1.6, "clip-long": 2.4}
TOLERANCE_S = 0.2  # the bound for marker end - start against the clip's duration
UPDATE_DOCS = os.environ.get("EMOTION_EDGE_UPDATE_SCREENSHOT") == "1"

needs_browser = needs_chromium


def study_cmd() -> list[str]:
    script = BIN / "emotion-edge-study"
    if script.is_file():
        return [str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; from emotion_edge_study.cli import main; sys.exit(main())",
    ]


def make_clip(path: Path, seconds: float, fps: int = FPS) -> Path:
    """A VP8 WebM clip (Chromium plays it): a white first frame, then frame numbers."""
    cv2 = pytest.importorskip("cv2")
    import numpy as np

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"VP80"), fps, (320, 240))
    assert w.isOpened(), "OpenCV cannot write VP8 WebM here"
    for i in range(int(round(seconds * fps))):
        f = np.full((240, 320, 3), 255 if i == 0 else 40, np.uint8)
        cv2.putText(f, str(i), (20, 140), cv2.FONT_HERSHEY_SIMPLEX, 3, (0, 200, 0), 4)
        w.write(f)
    w.release()
    return path


STUDY_TOML = """\
[study]
name = "films"
groups = ["control", "treatment"]
order = "random"
seed = 41
fixation_s = {fixation}
metadata = ["age", "handedness"]
consent = "I agree to take part in this study, and I know I can stop at any time."
thanks = "Thank you for taking part."

[[clips]]
name = "clip-short"
file = "clips/short.webm"

[[clips]]
name = "clip-long"
file = "clips/long.webm"
{extra}
[[ratings]]
name = "valence"
prompt = "How pleasant was the clip?"
min = 1
max = 9
labels = ["very unpleasant", "very pleasant"]
"""

MISSING_CLIP = """
[[clips]]
name = "clip-missing"
file = "clips/missing.webm"
"""


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("study")
    (d / "clips").mkdir()
    make_clip(d / "clips/short.webm", DURATIONS["clip-short"])
    make_clip(d / "clips/long.webm", DURATIONS["clip-long"])
    (d / "films.toml").write_text(STUDY_TOML.format(fixation=0.3, extra=MISSING_CLIP))
    (d / "two.toml").write_text(STUDY_TOML.format(fixation=0.3, extra=""))
    # no ratings: the last clip's end and the session's end follow each other at once
    no_ratings = STUDY_TOML.format(fixation=0.3, extra="")
    (d / "noratings.toml").write_text(no_ratings[: no_ratings.index("[[ratings]]")])
    return d


# -- the study file ---------------------------------------------------------------------------


def test_toml_and_csv_study_files_give_the_same_study(study_dir, tmp_path):
    toml = load_study(study_dir / "films.toml")
    csv = tmp_path / "films.csv"
    csv.write_text(
        "# the same study as films.toml\n"
        "study,films\ngroup,control\ngroup,treatment\norder,random\nseed,41\nfixation_s,0.3\n"
        "metadata,age,handedness\n"
        "consent,I agree to take part in this study, and I know I can stop at any time.\n"
        "thanks,Thank you for taking part.\n"
        f"clip,clip-short,{study_dir}/clips/short.webm\n"
        f"clip,clip-long,{study_dir}/clips/long.webm\n"
        f"clip,clip-missing,{study_dir}/clips/missing.webm\n"
        "rating,valence,How pleasant was the clip?,slider,1,9,very unpleasant,very pleasant\n"
    )
    from_csv = load_study(csv)
    assert from_csv.clips == toml.clips
    assert from_csv.ratings == toml.ratings
    for key in ("name", "groups", "order", "seed", "fixation_s", "metadata", "consent", "thanks"):
        assert getattr(from_csv, key) == getattr(toml, key), key
    assert [c.name for c in toml.missing_clips()] == ["clip-missing"]


def test_random_order_is_reproducible_by_seed_and_differs_between_participants(study_dir):
    study = load_study(study_dir / "films.toml")
    orders = {p: [c.name for c in clip_order(study, p)] for p in (f"P-{i:03d}" for i in range(40))}
    again = {
        p: [c.name for c in clip_order(load_study(study_dir / "films.toml"), p)] for p in orders
    }
    assert orders == again
    assert len({tuple(o) for o in orders.values()}) > 1, "one order for everybody"
    assert all(sorted(o) == sorted(c.name for c in study.clips) for o in orders.values())
    # the same code in a fresh interpreter (str seeds are hashed with SHA-512, not hash())
    path = str(study_dir / "films.toml")
    code = (
        "from emotion_edge_study.studyfile import load_study, clip_order;"
        f"print([c.name for c in clip_order(load_study({path!r}), 'P-007')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(orders["P-007"])
    codes = {new_participant_code() for _ in range(200)}
    assert len(codes) == 200 and all(c.startswith("P-") and len(c) == 8 for c in codes)


@pytest.mark.parametrize(
    "text, error",
    [
        ("[study]\nname='x'\n", "no clips"),
        ("[study]\norder='shuffled'\n[[clips]]\nname='a'\nfile='a.webm'\n", "fixed or random"),
        ("[[clips]]\nname='a'\nfile='a.webm'\n[[clips]]\nname='a'\nfile='b.webm'\n", "twice"),
        (
            "[[clips]]\nname='a'\nfile='a.webm'\n[[ratings]]\nname='v'\nprompt='?'\nmin=5\nmax=5\n",
            "max > min",
        ),
        ("[study]\nfixation_s=-1\n[[clips]]\nname='a'\nfile='a.webm'\n", "0-600"),
        ("[study\n", "not valid TOML"),
    ],
)
def test_bad_study_files_are_one_line_and_exit_2(tmp_path, text, error):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(StudyFileError, match=error):
        load_study(p)
    r = subprocess.run(
        [*study_cmd(), str(p), "--device", "d1", "--db", str(tmp_path / "x.sqlite")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert error in r.stderr and "Traceback" not in r.stderr


def test_network_address_needs_allow_remote(study_dir, tmp_path):
    r = subprocess.run(
        [*study_cmd(), str(study_dir / "two.toml"), "--device", "d1", "--db",
         str(tmp_path / "x.sqlite"), "--no-camera", "--host", "0.0.0.0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and "--allow-remote" in r.stderr, r.stderr


# -- the server --------------------------------------------------------------------------------


def test_vendored_jspsych_matches_its_checksums_and_licence():
    vendor = REPO / "study/static/vendor/jspsych"
    import hashlib

    sums = [line.split() for line in (vendor / "SHA256SUMS").read_text().splitlines()]
    assert len(sums) >= 8
    for digest, name in sums:
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    assert "MIT License" in (vendor / "LICENSE").read_text()
    assert "jspsych 8.3.0" in (vendor / "VERSIONS").read_text()


def _http(url: str, body: dict | None = None) -> tuple[int, dict, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_pages_load_nothing_from_elsewhere_and_bad_requests_are_refused(study_dir, tmp_path):
    study = StudyProc(
        tmp_path, study_dir / "two.toml", "--device", "lab-1", "--db",
        str(tmp_path / "x.sqlite"), "--no-camera",
    )  # fmt: skip
    try:
        for path in ("", "run", "control"):
            status, headers, body = _http(study.url + path)
            assert status == 200
            csp = headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp and "script-src 'self'" in csp
            assert b"http://" not in body and b"https://" not in body, path
        status, _, body = _http(study.url + "static/vendor/jspsych/jspsych.js")
        assert status == 200 and len(body) > 50_000
        assert _http(study.url + "static/../cli.py")[0] == 404
        assert _http(study.url + "clips/not-a-token/0.webm")[0] == 404
        assert _http(study.url + "api/sessions/not-a-token")[0] == 404
        assert _http(study.url + "api/sessions", {"group": "nobody"})[0] == 400
        assert _http(study.url + "api/sessions", {"participant": "a/b"})[0] == 400
        status, _, body = _http(study.url + "api/sessions", {"group": "control"})
        token = json.loads(body)["token"]
        # one session at a time
        assert _http(study.url + "api/sessions", {"group": "control"})[0] == 409
        # stimulus markers only for this session's clips, at times near this clock
        now = time.time()
        assert _http(study.url + f"api/sessions/{token}/stimulus",
                     {"action": "start", "label": "clip-short", "ts": now})[0] == 409  # fmt: skip
        consent = {"accepted": True, "ts": now, "clock": {"offset_s": 0, "rtt_ms": 1}}
        assert _http(study.url + f"api/sessions/{token}/consent", consent)[0] == 200
        for bad in (
            {"action": "start", "label": "not-a-clip", "ts": now},
            {"action": "start", "label": "clip-short", "ts": now - 3600},
            {"action": "begin", "label": "clip-short", "ts": now},
        ):
            assert _http(study.url + f"api/sessions/{token}/stimulus", bad)[0] == 400, bad
        assert _http(study.url + f"api/sessions/{token}/stimulus", {"label": "x"})[0] == 400
    finally:
        study.stop()
    assert study.proc.returncode == 0, study.log()
    ms = markers(tmp_path / "x.sqlite")
    assert [(m["kind"], m["action"]) for m in ms] == [("session", "start"), ("session", "end")]
    assert ms[-1]["tags"] == ["aborted"], "a session open at shutdown ends as aborted"


# -- whole sessions in a real browser ----------------------------------------------------------


class StudyProc:
    """emotion-edge-study as a subprocess on a free loopback port."""

    def __init__(self, tmp: Path, study: Path, *args: str):
        self.tmp = tmp
        self.ready = tmp / f"study-ready-{time.monotonic_ns()}"
        self.log_path = tmp / f"{self.ready.name}.log"
        self.proc = subprocess.Popen(
            [*study_cmd(), str(study), "--port", "0", "--ready-file", str(self.ready), *args],
            stdout=subprocess.DEVNULL,
            stderr=self.log_path.open("w"),
        )
        wait_until(lambda: self.ready.exists() or self.proc.poll() is not None, 60, "study up")
        assert self.proc.poll() is None, self.log()
        self.url = self.ready.read_text().strip()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    drv = start_chromium(
        tmp_path_factory.mktemp("chromium-profile"), "--autoplay-policy=no-user-gesture-required"
    )
    yield drv
    drv.quit()


def _find(drv, css: str, timeout: float = 15.0):
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in drv.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no {css} on the page: {drv.page_source[-1500:]}"
        time.sleep(0.05)


def start_session(drv, url: str, participant: str, group: str, fields: dict, shots=None):
    """The researcher's start page -> the participant's consent page."""
    drv.get(url)
    box = _find(drv, "#participant")
    wait_until(lambda: box.get_attribute("value"), 10, "a random participant code")
    assert box.get_attribute("value").startswith("P-")
    box.clear()
    box.send_keys(participant)
    from selenium.webdriver.support.ui import Select

    Select(_find(drv, "#group")).select_by_value(group)
    for k, v in fields.items():
        _find(drv, f"input[data-field='{k}']").send_keys(v)
    if shots:
        shots("start")
    _find(drv, "#start").click()
    _find(drv, ".consent")
    if shots:
        shots("consent")


def run_through(drv, shots=None, rating: int | None = 7, timeout: float = 60) -> None:
    """Consent, full screen, clips, ratings, up to the thanks page."""
    _find(drv, "#jspsych-html-button-response-btngroup [data-choice='0']").click()
    button = _find(drv, "#jspsych-fullscreen-btn")
    if shots:
        shots("fullscreen")
    button.click()
    deadline = time.monotonic() + timeout
    shot_taken = set()
    from selenium.webdriver.common.by import By

    while True:
        if drv.find_elements(By.CSS_SELECTOR, ".thanks"):
            break
        if shots and "clip" not in shot_taken:
            videos = drv.find_elements(By.CSS_SELECTOR, "#jspsych-video-keyboard-response-stimulus")
            if videos and drv.execute_script("return arguments[0].currentTime > 0.4", videos[0]):
                shot_taken.add("clip")
                shots("clip")
        nxt = drv.find_elements(By.CSS_SELECTOR, "#jspsych-html-slider-response-next")
        if nxt:
            if rating is not None:
                drv.execute_script(
                    "const s = document.querySelector('#jspsych-html-slider-response-response');"
                    "s.value = arguments[0]; s.dispatchEvent(new Event('input'));",
                    rating,
                )
            if shots and "rating" not in shot_taken:
                shot_taken.add("rating")
                shots("rating")
            try:
                nxt[0].click()
            except Exception:  # noqa: BLE001 - replaced by the next trial meanwhile
                pass
        assert time.monotonic() < deadline, f"no thanks page within {timeout} s"
        time.sleep(0.05)
    if shots:
        shots("thanks")


def markers(db: Path) -> list[dict]:
    con = sqlite3.connect(db, timeout=10)
    con.row_factory = sqlite3.Row
    try:
        rows = con.execute("SELECT * FROM markers ORDER BY ts, action DESC").fetchall()
    finally:
        con.close()
    out = []
    for r in rows:
        d = dict(r)
        d["tags"], d["meta"] = json.loads(d["tags"]), json.loads(d["meta"])
        out.append(d)
    return out


def has(db: Path, pred) -> bool:
    try:
        return db.exists() and any(pred(m) for m in markers(db))
    except sqlite3.OperationalError:  # the recorder has not made the tables yet
        return False


def clip_spans(ms: list[dict], label: str) -> list[tuple[float, float, list, list]]:
    starts = [
        m for m in ms if m["kind"] == "stimulus" and m["label"] == label and m["action"] == "start"
    ]
    ends = [
        m for m in ms if m["kind"] == "stimulus" and m["label"] == label and m["action"] == "end"
    ]
    assert len(starts) == len(ends), (label, starts, ends)
    return [(s["ts"], e["ts"], s["tags"], e["tags"]) for s, e in zip(starts, ends, strict=True)]


def check_completed_session(ms: list[dict], study, participant: str, group: str, fields: dict):
    sess = [m for m in ms if m["kind"] == "session"]
    assert [m["action"] for m in sess] == ["start", "end"], sess
    start, end = sess
    assert start["participant"] == participant and start["group_name"] == group
    assert start["meta"]["consent"]["accepted"] is True
    assert start["meta"]["consent"]["text_sha256"] == study.consent_sha256()
    assert start["meta"]["fields"] == fields
    order = [c.name for c in clip_order(study, participant)]
    assert start["meta"]["order"] == order and start["meta"]["seed"] == study.seed
    assert 0 < start["meta"]["clock"]["rtt_ms"] < 1000
    assert end["tags"] == ["completed"] and end["meta"]["status"] == "completed"
    stim = [m for m in ms if m["kind"] == "stimulus"]
    assert all(m["session"] == start["label"] and m["participant"] == participant for m in stim)
    assert all(start["ts"] <= m["ts"] <= end["ts"] for m in stim)
    # the clips in the participant's order, each one stretch as long as the clip
    played = [
        m["label"] for m in stim if m["action"] == "start" and not m["label"].startswith("rating:")
    ]
    assert played == order
    errors = {}
    for name, seconds in DURATIONS.items():
        spans = clip_spans(ms, name)
        # one stretch; a loaded machine may add a buffer stall (> 100 ms) that splits it
        assert spans[0][2] == [] and spans[-1][3] == [], spans
        assert all(set(t) <= {"stalled", "resumed"} for sp in spans for t in sp[2:]), spans
        e = spans[-1][1]
        played = sum(b - a for a, b, _, _ in spans)
        errors[name] = played - seconds
        assert abs(errors[name]) <= TOLERANCE_S, (name, played, seconds)
        first = next(m for m in stim if m["label"] == name and m["action"] == "start")
        if first["meta"].get("timing") == "frame":
            assert first["meta"]["media_time"] == 0, "the start is not the clip's first frame"
        ((rs, re_, _, _),) = clip_spans(ms, f"rating:{name}")
        assert e <= rs <= re_
        rend = next(m for m in stim if m["label"] == f"rating:{name}" and m["action"] == "end")
        assert rend["meta"]["answers"] == {"valence": 7}
    return errors


@needs_browser
def test_whole_session_over_mqtt_to_the_recorder(browser, study_dir, mqtt_broker, tmp_path):
    """Start page -> consent -> two clips and a missing one -> ratings -> thanks, markers over a
    real mosquitto to the recorder; then a second session closed mid-clip is `aborted`."""
    db = tmp_path / "study.sqlite"
    rec = RecorderProc(tmp_path, mqtt_broker, str(db), "--device", "lab-1").start()
    study = StudyProc(
        tmp_path, study_dir / "films.toml", "--device", "lab-1", "--mqtt-host",
        mqtt_broker.host, "--mqtt-port", str(mqtt_broker.port), "--spool-dir",
        str(tmp_path / "spool"), "--sessions", "2", "--abort-after", "4",
    )  # fmt: skip
    shots = None
    if UPDATE_DOCS:

        def shots(name: str) -> None:
            browser.save_screenshot(str(REPO / "docs/img" / f"study-{name}.png"))

    try:
        fields = {"age": "34", "handedness": "left"}
        start_session(browser, study.url, "P-TEST01", "treatment", fields, shots)
        run_through(browser, shots)
        wait_until(lambda: has(db, lambda m: m["tags"] == ["completed"]), 30, "the session end")
        ms = markers(db)
        st = load_study(study_dir / "films.toml")
        errors = check_completed_session(ms, st, "P-TEST01", "treatment", fields)
        print("marker duration error (s):", errors)
        missing = [m for m in ms if m["label"] == "clip-missing"]
        assert [m["action"] for m in missing] == ["start", "end"]
        assert all(m["tags"] == ["skipped"] and m["meta"]["error"] for m in missing)
        assert all(m["source"] == "emotion-edge-study" for m in ms)

        if shots:
            browser.get(study.url + "control")
            _find(browser, "#status")
            time.sleep(1.5)
            shots("control")
        # a second participant closes the page in the middle of a clip
        start_session(browser, study.url, "P-TEST02", "control", {"age": "51"})
        _find(browser, "#jspsych-html-button-response-btngroup [data-choice='0']").click()
        _find(browser, "#jspsych-fullscreen-btn").click()
        wait_until(
            lambda: has(db, lambda m: m["participant"] == "P-TEST02" and m["kind"] == "stimulus"),
            30,
            "P-TEST02's first clip start",
        )
        closed_at = time.time()
        browser.get("about:blank")
        wait_until(
            lambda: has(db, lambda m: m["tags"] == ["aborted"] and m["kind"] == "session"),
            30,
            "the aborted session end",
        )
        assert study.wait(30) == 0, study.log()
        two = [m for m in markers(db) if m["participant"] == "P-TEST02"]
        end = next(m for m in two if m["kind"] == "session" and m["action"] == "end")
        assert end["meta"]["status"] == "aborted" and abs(end["ts"] - closed_at) < 2.0
        open_clip = [m for m in two if m["kind"] == "stimulus" and m["action"] == "end"]
        assert open_clip and open_clip[-1]["tags"] == ["aborted"]
    finally:
        study.stop()
        rec.stop()
    stats = json.loads(rec.stats_path.read_text())
    assert stats["record"]["rejected"] == {}, stats


@needs_browser
@pytest.mark.realdata
def test_pause_resume_and_db_mode_report(browser, study_dir, tmp_path, sample_video):
    """--db: the daemon's pipeline runs in-process on a real face video; the researcher pauses
    and resumes a clip; the report then shows the session with its stimuli."""
    db = tmp_path / "inproc.sqlite"
    study = StudyProc(
        tmp_path, study_dir / "noratings.toml", "--device", "laptop", "--db", str(db),
        "--source", f"video:{sample_video}", "--sessions", "1",
    )  # fmt: skip
    try:
        start_session(browser, study.url, "P-TEST03", "control", {"age": "29"})
        _find(browser, "#jspsych-html-button-response-btngroup [data-choice='0']").click()
        _find(browser, "#jspsych-fullscreen-btn").click()
        wait_until(lambda: browser.execute_script(
            "const v = document.querySelector('#jspsych-video-keyboard-response-stimulus');"
            "return !!v && v.currentTime > 0.5"), 30, "a clip half a second in")  # fmt: skip
        control(study.url, "pause")
        time.sleep(1.0)
        assert _find(browser, "#paused").is_displayed()
        control(study.url, "resume")
        run_through_rest(browser)
        assert study.wait(30) == 0, study.log()
    finally:
        study.stop()
    ms = markers(db)
    paused = [s for name in DURATIONS for s in clip_spans(ms, name) if "paused" in s[3]]
    assert len(paused) == 1, ms
    name = next(n for n in DURATIONS if any("paused" in s[3] for s in clip_spans(ms, n)))
    spans = clip_spans(ms, name)
    assert [s[2] for s in spans] == [[], ["resumed"]] and [s[3] for s in spans] == [["paused"], []]
    for clip in DURATIONS:  # every clip's last stretch ends with the clip, not the session
        assert clip_spans(ms, clip)[-1][3] == [], clip_spans(ms, clip)
    played = sum(e - s for s, e, _, _ in spans)
    assert abs(played - DURATIONS[name]) <= TOLERANCE_S, (played, spans)
    assert spans[1][0] - spans[0][1] >= 0.8, "the pause is not a gap between the stretches"

    con = sqlite3.connect(db)
    faces = con.execute("SELECT COUNT(*) FROM timeline_faces").fetchone()[0]
    con.close()
    assert faces > 0, "the in-process pipeline recorded no face"
    out = tmp_path / "report"
    r = subprocess.run(
        [str(BIN / "emotion-edge-report"), str(db), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    page = (out / "report.html").read_text()
    assert "P-TEST03" in page
    for clip in DURATIONS:
        assert clip in page, f"{clip} not in the report"


def control(url: str, action: str) -> dict:
    req = urllib.request.Request(
        url + "api/control",
        data=json.dumps({"action": action}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def run_through_rest(drv, timeout: float = 60) -> None:
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    while not drv.find_elements(By.CSS_SELECTOR, ".thanks"):
        for b in drv.find_elements(By.CSS_SELECTOR, "#jspsych-html-slider-response-next"):
            try:
                b.click()
            except Exception:  # noqa: BLE001 - replaced by the next trial meanwhile
                pass
        assert time.monotonic() < deadline, "no thanks page"
        time.sleep(0.05)


# -- delivery: the spooled path -----------------------------------------------------------------


def test_markers_survive_a_broker_crash_mid_session(study_dir, mqtt_broker, tmp_path):
    """The player's markers go through the daemon's spool: made while the broker is down, they
    wait on disk and reach the recorder after it is back; the player never announces itself
    on the daemon's availability topic."""
    from emotion_edge.config.tables import MqttConfig
    from emotion_edge_study.session import Session
    from emotion_edge_study.sinks import MqttMarkerSink

    db = tmp_path / "rec.sqlite"
    rec = RecorderProc(tmp_path, mqtt_broker, str(db), "--device", "lab-1").start()
    cfg = MqttConfig(
        host=mqtt_broker.host,
        port=mqtt_broker.port,
        spool_dir=str(tmp_path / "spool"),
        reconnect_min_s=0.2,
        reconnect_max_s=0.5,
    )
    sink = MqttMarkerSink(cfg, "lab-1")
    sink.start()
    study = load_study(study_dir / "two.toml")
    s = Session(study, "lab-1", "films-P-X", "token", "P-X", "control", {"age": "40"},
                clip_order(study, "P-X"), sink)  # fmt: skip
    try:
        assert sink.publisher.wait_connected(10)
        t = time.time()
        s.consent(True, t, {"offset_s": 0.0, "rtt_ms": 1.0}, "test")
        s.stimulus("start", "clip-short", t + 0.1)
        mqtt_broker.stop(kill=True)
        s.stimulus("end", "clip-short", t + 1.7)
        s.stimulus("start", "clip-long", t + 2.0)
        assert sink.stats()["queued"] >= 2, sink.stats()
        mqtt_broker.start()
        s.stimulus("end", "clip-long", t + 4.4)
        s.end(t + 4.5, "completed")
        ids = {m["marker_id"] for m in s.markers}
        wait_until(
            lambda: db.exists() and {m["marker_id"] for m in markers(db)} == ids,
            30,
            "every marker in the database",
        )
    finally:
        sink.close(5)
        rec.stop()
    assert sink.stats()["queued"] == 0
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((REPO / "device/schemas/marker.schema.json").read_text())
    for m in s.markers:  # the payloads exactly as sent: the schema every consumer knows
        jsonschema.validate(m, schema)
    con = sqlite3.connect(db)
    assert (
        con.execute("SELECT COUNT(*) FROM availability WHERE device_id = 'lab-1'").fetchone()[0]
        == 0
    ), "the player must not speak for the device's availability"
    con.close()
    assert (tmp_path / "spool/study").is_dir(), "not the player's own spool folder"


@needs_browser
def test_declined_consent_and_researcher_abort(browser, study_dir, tmp_path):
    """A participant who declines: the refusal and nothing else about them; then the
    researcher aborts the next session from /control in the middle of a clip."""
    db = tmp_path / "markers.sqlite"
    study = StudyProc(
        tmp_path, study_dir / "two.toml", "--device", "lab-1", "--db", str(db), "--no-camera",
        "--sessions", "2",
    )  # fmt: skip
    try:
        start_session(browser, study.url, "P-TEST04", "control", {"age": "62"})
        _find(browser, "#jspsych-html-button-response-btngroup [data-choice='1']").click()
        assert "Nothing more to do" in _find(browser, ".thanks").text
        wait_until(lambda: has(db, lambda m: m["tags"] == ["declined"]), 20, "the refusal")

        start_session(browser, study.url, "P-TEST05", "treatment", {"age": "23"})
        _find(browser, "#jspsych-html-button-response-btngroup [data-choice='0']").click()
        _find(browser, "#jspsych-fullscreen-btn").click()
        wait_until(
            lambda: has(db, lambda m: m["participant"] == "P-TEST05" and m["kind"] == "stimulus"),
            30,
            "P-TEST05's first clip",
        )
        assert control(study.url, "abort")["session"]["status"] == "aborted"
        wait_until(
            lambda: "ended by the researcher" in browser.find_element("tag name", "body").text,
            10,
            "the page to follow the researcher's abort",
        )
        assert study.wait(30) == 0, study.log()
    finally:
        study.stop()
    ms = markers(db)
    declined = [m for m in ms if m["participant"] == "P-TEST04"]
    assert [(m["kind"], m["action"]) for m in declined] == [
        ("session", "start"),
        ("session", "end"),
    ]
    start, end = declined
    assert start["meta"]["consent"]["accepted"] is False
    assert "fields" not in start["meta"] and "order" not in start["meta"]
    assert end["tags"] == ["declined"] and end["meta"]["status"] == "declined"
    aborted = [m for m in ms if m["participant"] == "P-TEST05"]
    assert aborted[-1]["kind"] == "session" and aborted[-1]["tags"] == ["aborted"]
    clip_ends = [m for m in aborted if m["kind"] == "stimulus" and m["action"] == "end"]
    assert clip_ends and clip_ends[-1]["tags"] == ["aborted"]
