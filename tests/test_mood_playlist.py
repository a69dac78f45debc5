"""examples/mood_playlist.py: the hysteresis rule, and the real script against a real mosquitto
with a stand-in command that records each call (what `mpc load calm` would have been asked)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples/mood_playlist.py"


def load_example():
    spec = importlib.util.spec_from_file_location("mood_playlist", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


mp = load_example()
RULES = [mp.parse_rule("sad:120:calm"), mp.parse_rule("happy:60:upbeat")]


def feed(tracker, readings) -> list[tuple[float, str]]:
    fired = []
    for ts, emotion, conf in readings:
        rule = tracker.update(ts, emotion, conf)
        if rule is not None:
            fired.append((ts, rule.command[0]))
    return fired


def every(start: float, stop: float, emotion, conf=0.6, step=5.0):
    t = start
    while t <= stop:
        yield t, emotion, conf
        t += step


def test_sad_for_two_minutes_plays_calm_once_despite_flickers():
    tr = mp.MoodTracker(RULES, min_confidence=0.4, grace_s=15)
    readings = [
        *every(0, 55, "sad"),
        (60, "neutral", 0.5),  # flickers shorter than the grace: the clock keeps running
        (65, "happy", 0.7),
        (70, None, None),
        *every(75, 300, "sad"),  # sad goes on: calm is not started again
        (305, "happy", 0.9),  # one happy reading while calm plays: nothing
        *every(310, 330, "sad"),
    ]
    assert feed(tr, readings) == [(120, "calm")]


def test_other_mood_takes_over_only_after_its_own_hold():
    tr = mp.MoodTracker(RULES, min_confidence=0.4, grace_s=15)
    fired = feed(tr, [*every(0, 130, "sad"), *every(135, 200, "happy")])
    assert fired == [(120, "calm"), (195, "upbeat")]  # happy since 135, 60 s later
    # the room empties for longer than the grace: the sad clock starts from zero again
    fired = feed(tr, [*every(205, 260, None, None), *every(265, 400, "sad")])
    assert fired == [(385, "calm")]


def test_low_confidence_and_long_gaps_do_not_count():
    tr = mp.MoodTracker(RULES, min_confidence=0.5, grace_s=15)
    assert feed(tr, every(0, 200, "sad", conf=0.45)) == []
    tr = mp.MoodTracker(RULES, min_confidence=0.5, grace_s=15)
    gap = [*every(0, 60, "sad"), *every(65, 100, "neutral"), *every(105, 200, "sad")]
    assert feed(tr, gap) == []  # 35 s of neutral reset the clock; 105 + 120 > 200


def test_bad_rule_is_a_clear_error():
    import argparse

    for text in ("sad", "sad:soon:x", "sad:120:", ":120:x", "sad:-1:x"):
        with pytest.raises(argparse.ArgumentTypeError, match="EMOTION:SECONDS:COMMAND"):
            mp.parse_rule(text)
    assert mp.parse_rule("happy:60:mpc load 'up beat'").command == ["mpc", "load", "up beat"]


def state(ts: float, emotion, confidence) -> bytes:
    room = {"face_count": 1 if emotion else 0, "emotion": emotion, "confidence": confidence}
    return json.dumps(
        {
            "schema": "emotion-edge/state/1",
            "device_id": "den",
            "updated_ts": ts,
            "face_count": room["face_count"],
            "room": room,
        }
    ).encode()


@pytest.mark.parametrize("mqtt_broker", [{"users": {"mood": "s3cret"}}], indirect=True)
def test_real_script_runs_the_command_through_a_real_broker(mqtt_broker, tmp_path):
    """A broker that wants a login, as Home Assistant's mosquitto add-on does."""
    record = tmp_path / "calls.txt"
    standin = tmp_path / "standin.py"
    standin.write_text(
        "import os, sys\n"
        f"with open({str(record)!r}, 'a') as f:\n"
        "    f.write(os.environ['MOOD'] + ' ' + ' '.join(sys.argv[1:]) + '\\n')\n"
    )
    py = sys.executable
    err = (tmp_path / "example.log").open("wb")
    proc = subprocess.Popen(
        [
            py,
            str(EXAMPLE),
            "--host",
            mqtt_broker.host,
            "--port",
            str(mqtt_broker.port),
            "--device-id",
            "den",
            "--username",
            "mood",
            "--rule",
            f"sad:120:{py} {standin} load calm",
            "--rule",
            f"happy:60:{py} {standin} load upbeat",
        ],
        stderr=err,
        env={**os.environ, "MQTT_PASSWORD": "s3cret"},
    )
    daemon = paho.Client(paho.CallbackAPIVersion.VERSION2)
    daemon.username_pw_set("mood", "s3cret")
    daemon.connect(mqtt_broker.host, mqtt_broker.port)
    daemon.loop_start()
    try:
        deadline = time.monotonic() + 20
        while b"listening" not in (tmp_path / "example.log").read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, (
                tmp_path / "example.log"
            ).read_text()
            time.sleep(0.1)
        daemon.publish("emotion-edge/den/availability", "online", qos=1, retain=True)
        t0 = time.time()  # the daemon's clock, stepped 5 s a payload (no waiting)
        script = [
            *[(t0 + t, "sad", 0.6) for t in range(0, 60, 5)],
            (t0 + 60, "neutral", 0.5),  # a flicker
            *[(t0 + t, "sad", 0.6) for t in range(65, 200, 5)],  # calm at 120, once
            *[(t0 + t, "happy", 0.7) for t in range(200, 270, 5)],  # upbeat at 260
        ]
        for ts, emo, conf in script:
            daemon.publish("emotion-edge/den/state", state(ts, emo, conf), qos=1).wait_for_publish(
                5
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            lines = record.read_text().splitlines() if record.exists() else []
            if len(lines) >= 2:
                break
            time.sleep(0.1)
        time.sleep(0.5)  # nothing more should come
        assert record.read_text().splitlines() == ["sad load calm", "happy load upbeat"]
        # a stopped daemon resets the clocks: a stale state after it runs nothing
        daemon.publish("emotion-edge/den/availability", "stopped", qos=1, retain=True)
    finally:
        daemon.loop_stop()
        daemon.disconnect()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(15)
    log = (tmp_path / "example.log").read_text()
    assert rc == 0, log
    assert "mood sad: ran" in log and "(exit 0)" in log
