"""How far the study player's clip markers are from the frames the clips really appeared on.

    python -m benchmarks.study_markers [--clips 8] [--seconds 2.0] [--out FILE]

A real `emotion-edge-study --db` serves a study of dark clips (a black first frame, then
dark grey with the frame number) between white fixation screens; Debian's headless Chromium
(driven by Selenium, autoplay allowed) runs a whole session. Independently of the page's
own timing, a second DevTools client records every frame the browser composites
(`Page.startScreencast`, its `timestamp` is the frame's swap time on this machine's clock)
and measures its brightness: a clip is on screen from the first dark frame to the first
white one after it. For every clip it reports

  onset error   start marker - the first composited frame showing the clip (the marker's
                timing error, within the screencast's own frame spacing; "-" where the
                screencast sent no frame in the 0.1 s before the change)
  offset error  end marker - the first composited frame not showing it (headless
                Chromium's screencast usually sends no frame for 0.3-0.6 s after a video
                element goes away, so this is mostly "-": docs/benchmarks.md)
  duration      (end - start) - the clip's duration
  playing event the `playing` media event's time - the first presented frame's time (what a
                player that marked on media events alone would be off by)
  clock         half the round trip of the page's best clock ping (the bound on the
                page -> device clock conversion)

Prints a table; writes JSON to benchmarks/results/study_markers.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import RESULTS_DIR, log, machine_info, write_json

OUT = RESULTS_DIR / "study_markers.json"
# mean grey of a screencast frame: the fixation cross and the video element before its first
# frame are black (~20 with the cross), the clip's frames grey (~72 letterboxed), the rating
# and thanks pages white
BLACK, BRIGHT = 30, 200
MAX_GAP_S = 0.1  # a transition is only timed when the screencast sent the frame before it


def make_clips(folder: Path, n: int, seconds: float) -> list[tuple[str, Path, float, int]]:
    import cv2
    import numpy as np

    clips = []
    for i in range(n):
        fps = (25, 30, 24)[i % 3]
        path = folder / f"clip{i}.webm"
        w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"VP80"), fps, (320, 240))
        frames = int(round(seconds * fps))
        for k in range(frames):
            f = np.full((240, 320, 3), 60, np.uint8)
            cv2.putText(f, str(k), (20, 140), cv2.FONT_HERSHEY_SIMPLEX, 3, (90, 90, 90), 4)
            w.write(f)
        w.release()
        clips.append((f"clip-{i}", path, frames / fps, fps))
    return clips


def write_study(folder: Path, clips) -> Path:
    lines = ["[study]", 'name = "bench"', 'order = "fixed"', "fixation_s = 0.6", ""]
    for name, path, _, _ in clips:
        lines += ["[[clips]]", f'name = "{name}"', f'file = "{path}"', ""]
    p = folder / "bench.toml"
    p.write_text("\n".join(lines))
    return p


class Screencast:
    """A second DevTools client on the page: (swap time, mean grey) of every frame."""

    def __init__(self, debugger_address: str):
        self.address = debugger_address
        self.frames: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("screencast did not start")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    async def _run(self) -> None:
        import aiohttp
        import cv2
        import numpy as np

        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{self.address}/json") as r:
                targets = await r.json(content_type=None)
            page = next(t for t in targets if t["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                n = 0

                async def call(method: str, **params) -> None:
                    nonlocal n
                    n += 1
                    await ws.send_json({"id": n, "method": method, "params": params})

                await call("Page.enable")
                await call(
                    "Page.startScreencast",
                    format="jpeg",
                    quality=40,
                    maxWidth=320,
                    maxHeight=180,
                    everyNthFrame=1,
                )
                self._ready.set()
                while not self._stop.is_set():
                    try:
                        msg = await ws.receive(timeout=0.2)
                    except asyncio.TimeoutError:
                        continue
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    data = json.loads(msg.data)
                    if data.get("method") != "Page.screencastFrame":
                        continue
                    p = data["params"]
                    await call("Page.screencastFrameAck", sessionId=p["sessionId"])
                    import base64

                    img = cv2.imdecode(
                        np.frombuffer(base64.b64decode(p["data"]), np.uint8), cv2.IMREAD_GRAYSCALE
                    )
                    self.frames.append((float(p["metadata"]["timestamp"]), float(img.mean())))
                await call("Page.stopScreencast")


def transition(frames, ts: float, into: bool, window=(-0.3, 0.3)) -> float | None:
    """The first composited frame near `ts` where the screen turns to the clip (`into`) or
    away from it, provided the frame before it is at most MAX_GAP_S older (otherwise the
    screencast was not sending frames then and the moment is not known): None."""
    showing = [(t, BLACK < g < BRIGHT) for t, g in frames]
    for (t0, s0), (t1, s1) in zip(showing, showing[1:], strict=False):
        if not ts + window[0] <= t1 <= ts + window[1]:
            continue
        if s0 != into and s1 == into:
            return t1 if t1 - t0 <= MAX_GAP_S else None
    return None


def run_session(url: str, debugger_cb) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--autoplay-policy=no-user-gesture-required",
        "--disable-dev-shm-usage",
        "--window-size=1280,720",
        "--no-first-run",
    ):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    drv.implicitly_wait(15)
    try:
        cast = debugger_cb(drv.capabilities["goog:chromeOptions"]["debuggerAddress"])
        drv.get(url)
        time.sleep(0.5)
        drv.find_element(By.ID, "start").click()
        drv.find_element(
            By.CSS_SELECTOR, "#jspsych-html-button-response-btngroup [data-choice='0']"
        ).click()
        drv.find_element(By.ID, "jspsych-fullscreen-btn").click()
        deadline = time.monotonic() + 300
        drv.implicitly_wait(0)
        while not drv.find_elements(By.CSS_SELECTOR, ".thanks"):
            if time.monotonic() > deadline:
                raise RuntimeError("the session did not finish in 300 s")
            time.sleep(0.1)
        time.sleep(0.5)
        cast.stop()
    finally:
        drv.quit()


def markers(db: Path) -> list[dict]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute("SELECT * FROM markers ORDER BY ts")]
    con.close()
    for r in rows:
        r["meta"] = json.loads(r["meta"])
    return rows


def summary(values: list[float | None]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0}
    a = [abs(v) for v in values]
    return {
        "n": len(values),
        "mean_ms": round(statistics.fmean(values) * 1000, 1),
        "median_abs_ms": round(statistics.median(a) * 1000, 1),
        "max_abs_ms": round(max(a) * 1000, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--keep-db", type=Path, help="copy the session's database here")
    ap.add_argument("--trace", action="store_true", help="print the frames near each marker")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="study-bench-") as tmp:
        tmp = Path(tmp)
        clips = make_clips(tmp, args.clips, args.seconds)
        study = write_study(tmp, clips)
        db, ready = tmp / "bench.sqlite", tmp / "ready"
        exe = Path(sys.executable).with_name("emotion-edge-study")
        proc = subprocess.Popen(
            [str(exe), str(study), "--device", "bench", "--db", str(db), "--no-camera", "--port",
             "0", "--ready-file", str(ready), "--sessions", "1", "--log-level", "WARNING"],
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("emotion-edge-study did not start")
                time.sleep(0.1)
            casts: list[Screencast] = []

            def start_cast(address: str) -> Screencast:
                c = Screencast(address)
                c.start()
                casts.append(c)
                return c

            log(f"{len(clips)} clips of {args.seconds:g} s in headless Chromium")
            run_session(ready.read_text().strip(), start_cast)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        ms = markers(db)
        frames = casts[0].frames
        if args.keep_db:
            shutil.copy(db, args.keep_db)
    if args.trace:
        ends = [m["ts"] for m in ms if m["kind"] == "stimulus"]
        for ts, grey in sorted(frames):
            near = min(ends, key=lambda e: abs(e - ts))
            if abs(ts - near) < 0.5:
                print(f"{ts - near:+.3f} {grey:6.1f}")
    frames.sort()
    gaps = [b[0] - a[0] for a, b in zip(frames, frames[1:], strict=False)]
    start: dict[str, dict] = {}  # the first start and the last end of every clip
    end: dict[str, dict] = {}
    segments: dict[str, int] = {}
    for m in ms:
        if m["kind"] != "stimulus":
            continue
        if m["action"] == "start":
            start.setdefault(m["label"], m)
            segments[m["label"]] = segments.get(m["label"], 0) + 1
        else:
            end[m["label"]] = m
    session = next(m for m in ms if m["kind"] == "session" and m["action"] == "start")
    rows = []
    for name, _, seconds, fps in clips:
        s, e = start[name], end[name]
        on = transition(frames, s["ts"], True)
        off = transition(frames, e["ts"], False, (-0.3, 1.0))
        rows.append(
            {
                "clip": name,
                "fps": fps,
                "seconds": round(seconds, 3),
                "onset_error_s": None if on is None else round(s["ts"] - on, 4),
                "offset_error_s": None if off is None else round(e["ts"] - off, 4),
                "duration_error_s": round(e["ts"] - s["ts"] - seconds, 4),
                "stretches": segments[name],
                "end_tags": json.loads(e["tags"]),
                "short_stalls": e["meta"].get("short_stalls"),
                "playing_event_s": round(s["meta"].get("playing_event_ms", float("nan")) / 1000, 4),
                "timing": s["meta"].get("timing"),
                "frames_presented": e["meta"].get("frames"),
                "frames_in_clip": int(round(seconds * fps)),
            }
        )
    result = {
        "machine": machine_info(),
        "clips": len(clips),
        "screencast_frames": len(frames),
        "screencast_frame_spacing_ms": {
            "median": round(statistics.median(gaps) * 1000, 1),
            "p90": round(sorted(gaps)[int(0.9 * len(gaps))] * 1000, 1),
        },
        "clock_half_rtt_ms": round(session["meta"]["clock"]["rtt_ms"] / 2, 2),
        "onset": summary([r["onset_error_s"] for r in rows]),
        "offset": summary([r["offset_error_s"] for r in rows]),
        "duration": summary([r["duration_error_s"] for r in rows]),
        "playing_event": summary([r["playing_event_s"] for r in rows]),
        "rows": rows,
    }
    write_json(result, args.out)
    print(
        f"{'clip':8} {'fps':>3} {'onset ms':>9} {'offset ms':>9} {'dur ms':>7} {'playing ms':>10}"
    )

    def ms_(v) -> str:
        return "-" if v is None else f"{v * 1000:.1f}"

    for r in rows:
        print(
            f"{r['clip']:8} {r['fps']:>3} {ms_(r['onset_error_s']):>9} "
            f"{ms_(r['offset_error_s']):>9} {ms_(r['duration_error_s']):>7} "
            f"{ms_(r['playing_event_s']):>10}"
        )
    for k in ("onset", "offset", "duration", "playing_event"):
        print(f"{k:14} {result[k]}")
    print(f"screencast frame spacing (ms): {result['screencast_frame_spacing_ms']}")
    print(f"clock: half round trip {result['clock_half_rtt_ms']} ms; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
