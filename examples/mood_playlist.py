#!/usr/bin/env python3
"""Mood -> action: run a command when the room has shown one emotion for a while.

Subscribes to an emotion-edge daemon's retained `state` topic and reads the room's leading
emotion (`room.emotion`, the mean over every face in view). A rule `EMOTION:SECONDS:COMMAND`
runs COMMAND once the room has led with EMOTION, at `--min-confidence` or more, for SECONDS:

    python examples/mood_playlist.py --host 192.168.1.10 --device-id den \\
        --rule 'sad:120:mpc load calm' --rule 'happy:60:mpc load upbeat'

Hysteresis, so a flicker does not restart the music:
  - a mood must hold for its SECONDS before its command runs; readings of another emotion
    (or of nobody) shorter than `--grace` seconds do not reset that clock;
  - a command runs once per mood: while `sad` plays, more sad minutes run nothing; only
    another rule's mood holding for its own SECONDS changes the music;
  - a stopped or vanished daemon (availability not `online`) resets the clocks.

The command runs without a shell (split like a shell would), with MOOD=<emotion> in its
environment; its exit code is logged. Times are the daemon's (`updated_ts`), so a slow
broker does not stretch them; payloads older than `--max-age` seconds are ignored.
Needs paho-mqtt (`pip install paho-mqtt`, part of emotion-edge's [device] extra).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("mood_playlist")


@dataclass(frozen=True)
class Rule:
    emotion: str
    hold_s: float
    command: list[str]


def parse_rule(text: str) -> Rule:
    emotion, sep1, rest = text.partition(":")
    hold, sep2, command = rest.partition(":")
    try:
        hold_s = float(hold)
    except ValueError:
        hold_s = -1.0
    if not (sep1 and sep2 and emotion.strip() and command.strip()) or hold_s < 0:
        raise argparse.ArgumentTypeError(
            f"--rule {text!r}: expected EMOTION:SECONDS:COMMAND, e.g. 'sad:120:mpc load calm'"
        )
    return Rule(emotion.strip(), hold_s, shlex.split(command))


class MoodTracker:
    """The hysteresis rule; `update()` returns the rule to fire now, or None."""

    def __init__(self, rules: list[Rule], min_confidence: float = 0.0, grace_s: float = 15.0):
        self.rules = {r.emotion: r for r in rules}
        self.min_confidence = min_confidence
        self.grace_s = grace_s
        self.current: str | None = None  # the mood whose command ran last
        self.candidate: str | None = None
        self.since = 0.0  # when the candidate started leading
        self.seen = 0.0  # when the candidate last led

    def reset(self) -> None:
        self.candidate = None

    def update(self, ts: float, emotion: str | None, confidence: float | None) -> Rule | None:
        qualifies = (
            emotion in self.rules
            and confidence is not None
            and confidence >= self.min_confidence
            and emotion != self.current
        )
        if emotion == self.current and emotion is not None:
            self.candidate = None  # the music already matches the room
            return None
        if not qualifies:
            if self.candidate is not None and ts - self.seen > self.grace_s:
                self.candidate = None  # a real change, not a flicker
            return None
        if emotion != self.candidate:
            if self.candidate is not None and ts - self.seen <= self.grace_s:
                return None  # a flicker inside another mood's clock: ignored
            self.candidate, self.since = emotion, ts
        self.seen = ts
        rule = self.rules[emotion]
        if ts - self.since >= rule.hold_s:
            self.current, self.candidate = emotion, None
            return rule
        return None


def run_command(rule: Rule, timeout_s: float) -> int:
    env = {**os.environ, "MOOD": rule.emotion}
    try:
        done = subprocess.run(rule.command, env=env, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.error("mood %s: %s failed: %s", rule.emotion, shlex.join(rule.command), exc)
        return -1
    log.info("mood %s: ran %s (exit %d)", rule.emotion, shlex.join(rule.command), done.returncode)
    return done.returncode


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Run a command when the room's mood (emotion-edge) holds for a while.",
        epilog=__doc__.split("\n\n", 2)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="MQTT broker (127.0.0.1)")
    p.add_argument("--port", type=int, default=1883, help="broker port (1883)")
    p.add_argument("--username", default="", help="broker user (Home Assistant's add-on needs one)")
    p.add_argument(
        "--password-env",
        default="MQTT_PASSWORD",
        metavar="VAR",
        help="environment variable holding the password (MQTT_PASSWORD); never a flag",
    )
    p.add_argument("--device-id", required=True, help="the daemon's [device] id")
    p.add_argument("--topic-prefix", default="emotion-edge", help="[mqtt] topic_prefix")
    p.add_argument(
        "--rule",
        type=parse_rule,
        action="append",
        required=True,
        metavar="EMOTION:SECONDS:COMMAND",
        help="run COMMAND when EMOTION has led the room for SECONDS (repeatable)",
    )
    p.add_argument("--min-confidence", type=float, default=0.4, help="room confidence (0.4)")
    p.add_argument("--grace", type=float, default=15.0, help="flickers shorter are ignored (15)")
    p.add_argument("--max-age", type=float, default=60.0, help="ignore older payloads (60)")
    p.add_argument("--command-timeout", type=float, default=30.0, help="seconds (30)")
    return p


def main(argv: list[str] | None = None) -> int:
    import paho.mqtt.client as paho

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    tracker = MoodTracker(args.rule, args.min_confidence, args.grace)
    base = f"{args.topic_prefix}/{args.device_id}"
    stop = threading.Event()
    work: list[Rule] = []
    cond = threading.Condition()

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        client.subscribe([(f"{base}/state", 1), (f"{base}/availability", 1)])
        log.info("listening to %s/state on %s:%d", base, args.host, args.port)

    def on_message(client, userdata, msg):
        if msg.topic.endswith("/availability"):
            if msg.payload != b"online":
                tracker.reset()
            return
        try:
            state = json.loads(msg.payload)
            ts = float(state["updated_ts"])
            room = state.get("room") or {}
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignored a state payload that is not emotion-edge's")
            return
        if args.max_age > 0 and time.time() - ts > args.max_age:
            return  # a stale retained payload of a daemon that is gone
        rule = tracker.update(ts, room.get("emotion"), room.get("confidence"))
        if rule is not None:
            with cond:  # commands run on the main thread, never on paho's
                work.append(rule)
                cond.notify()

    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.on_connect, client.on_message = on_connect, on_message
    client.reconnect_delay_set(1, 30)
    if args.username:
        client.username_pw_set(args.username, os.environ.get(args.password_env) or None)

    def on_signal(signum, frame):
        stop.set()
        with cond:
            cond.notify()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    client.connect_async(args.host, args.port, keepalive=30)
    client.loop_start()
    try:
        while not stop.is_set():
            with cond:
                cond.wait_for(lambda: work or stop.is_set(), timeout=1.0)
                todo, work[:] = list(work), []
            for rule in todo:
                run_command(rule, args.command_timeout)
    finally:
        client.loop_stop()
        client.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
