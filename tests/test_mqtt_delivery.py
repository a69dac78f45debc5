"""End-to-end delivery through a broker that forgets (issue 42, defect 2): mosquitto with
`persistence false`, SIGKILLed twice while the daemon's publisher sends events to a real
emotion-edge-record (SQLite). The publisher reconnects before the recorder does (the recorder
is frozen with SIGSTOP while the broker is down and thawed 1.5 s after the publisher is back),
so what the publisher sends in that gap reaches a broker with no subscription: PUBACK reason
0x10, "no matching subscribers". With `[mqtt] require_subscriber = true` those events stay in
the spool and go out again once the recorder has resubscribed: 0 lost. Without it they count
as delivered and are gone (the run shows the loss, so the test cannot pass by accident).
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from emotion_edge.publish.mqtt import MqttPublisher
from mqtt_broker import Broker
from test_mqtt import DEVICE, make_cfg, make_event
from test_record_mqtt import RecorderProc, db_ids, make_sample, wait_until

KILLS = 2
DOWN_S = 2.0  # broker dead
GAP_S = 1.5  # publisher connected, recorder not yet


class Producer:
    """Feeds the publisher an event every `period` seconds, and a timeline sample every fifth,
    and remembers every id."""

    def __init__(self, pub: MqttPublisher, period: float = 0.02):
        self.pub, self.period = pub, period
        self.ids: list[str] = []
        self.samples: list[str] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(self.period):
            ev = make_event(i)
            self.pub.publish_event(ev)
            self.ids.append(ev["event_id"])
            if i % 5 == 0:
                sample = make_sample(DEVICE, i, time.time())
                self.pub.publish_timeline(sample)
                self.samples.append(sample["sample_id"])
            i += 1

    def stop(self) -> list[str]:
        self._stop.set()
        self._t.join(5)
        return self.ids


def spooled(path: Path) -> set[str]:
    if not path.exists():
        return set()
    con = sqlite3.connect(path)
    try:
        return {r[0] for r in con.execute("SELECT event_id FROM events")}
    finally:
        con.close()


def run_broker_kills(tmp_path, require_subscriber: bool) -> tuple[set[str], set[str], dict]:
    """The fault run; returns (sent ids, stored ids, the publisher's final stats); timeline
    samples are in the stats under `samples_sent` / `samples_stored` / `samples_spooled`."""
    broker = Broker(tmp_path, persistence=False).start()
    db = tmp_path / "rec.sqlite"
    rec = RecorderProc(tmp_path, broker, str(db), "--log-level", "DEBUG").start()
    cfg = make_cfg(broker, tmp_path, require_subscriber=require_subscriber)
    pub = MqttPublisher(cfg, DEVICE, model_version="test")
    pub.start()
    try:
        assert pub.wait_connected(10)
        prod = Producer(pub)
        for _ in range(KILLS):
            time.sleep(1.5)
            broker.stop(kill=True)
            rec.proc.send_signal(signal.SIGSTOP)  # frozen: reconnects only when thawed
            time.sleep(DOWN_S)
            broker.start()
            wait_until(pub.connected, 10, "publisher reconnected")
            time.sleep(GAP_S)  # the publisher sends to a broker that has no subscription
            rec.proc.send_signal(signal.SIGCONT)
        time.sleep(1.0)
        sent = set(prod.stop())
        assert pub.flush(30), pub.stats()
        stats = pub.stats()
        # whatever the broker acknowledged has reached the recorder or never will: give the
        # recorder time to commit, then compare
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not sent <= db_ids(db, "events", "event_id"):
            time.sleep(0.2)
        stored = db_ids(db, "events", "event_id")
        samples = set(prod.samples)
        time.sleep(1.0)  # the last samples' PUBACKs
        stats["samples_sent"] = samples
        stats["samples_stored"] = db_ids(db, "samples", "sample_id")
        rec.stop()
    finally:
        pub.stop(timeout=1.0)
        if rec.proc.poll() is None:
            rec.proc.send_signal(signal.SIGCONT)
            rec.kill()
        broker.stop()
    # samples not stored yet wait in the timeline spool for the next sample's call
    stats["samples_spooled"] = spooled(pub._timeline.path)
    return sent, stored, stats


def test_require_subscriber_loses_nothing_when_the_broker_forgets(tmp_path):
    sent, stored, st = run_broker_kills(tmp_path, require_subscriber=True)
    lost = sent - stored
    print(
        f"require_subscriber=true: {len(sent)} sent, {len(sent & stored)} stored, "
        f"{len(lost)} lost, {st['no_subscriber_retries']} PUBACK 0x10 kept and re-sent"
    )
    assert len(sent) > 200
    assert not lost, f"{len(lost)} of {len(sent)} events lost"
    # the gap did happen: the broker answered 0x10 and the events were kept, not counted
    assert st["no_subscriber_retries"] > 0
    assert st["acked_no_subscriber"] == 0
    assert st["waiting_for_subscriber"] == 0 and st["spool_depth"] == 0
    left = st["events_created"] + st["events_carried_over"]
    assert left == st["events_acked"] + st["events_rejected"] + st["events_dropped"]
    # timeline samples: none lost either (stored, or still in the spool for the next call)
    lost_samples = st["samples_sent"] - st["samples_stored"] - st["samples_spooled"]
    print(
        f"timeline: {len(st['samples_sent'])} sent, {len(st['samples_stored'])} stored, "
        f"{len(lost_samples)} lost, {st.get('timeline_no_subscriber_retries', 0)} re-sent"
    )
    assert not lost_samples
    assert st.get("timeline_no_subscriber_retries", 0) > 0


@pytest.mark.slow
def test_without_require_subscriber_the_gap_is_lost_and_counted(tmp_path):
    """The defect as it was (and still is by default): events acknowledged with 0x10 count as
    delivered; they are lost, and `acked_no_subscriber` says how many."""
    sent, stored, st = run_broker_kills(tmp_path, require_subscriber=False)
    lost = sent - stored
    print(
        f"require_subscriber=false: {len(sent)} sent, {len(sent & stored)} stored, "
        f"{len(lost)} lost, {st['acked_no_subscriber']} acknowledged with 0x10"
    )
    assert lost, "expected the no-subscriber gap to lose events without require_subscriber"
    lost_samples = st["samples_sent"] - st["samples_stored"] - st["samples_spooled"]
    print(f"timeline: {len(st['samples_sent'])} sent, {len(lost_samples)} lost")
    assert st["acked_no_subscriber"] >= len(lost)
    assert st["no_subscriber_retries"] == 0


@pytest.mark.parametrize("protocol", ["3.1.1"])
def test_require_subscriber_needs_mqtt_5(tmp_path, protocol):
    from emotion_edge.errors import ConfigError

    with pytest.raises(ConfigError, match="require_subscriber: needs protocol"):
        make_cfg(None, tmp_path, require_subscriber=True, protocol=protocol)
