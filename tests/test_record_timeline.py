"""The daemon's timeline stream: sampler, payload schema, pipeline on the sample video, and
the MQTT spool that keeps samples while the broker is away (real mosquitto)."""

from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import paho.mqtt.client as paho
import pytest
from emotion_edge.app import build_pipeline
from emotion_edge.config import load_config, load_table
from emotion_edge.preprocess import FER2013_LABELS
from emotion_edge.publish.mqtt import MqttPublisher
from emotion_edge.publish.stdout import StdoutOutput
from emotion_edge.tools.payload_schema import validate
from emotion_edge.track.events import FaceObservation
from emotion_edge.track.timeline import TIMELINE_SCHEMA, TimelineSampler, timeline_payload
from mqtt_broker import free_port

DEVICE = "tl-kiosk"


def obs(face_id: int, top: int = 3) -> FaceObservation:
    p = np.full(len(FER2013_LABELS), 0.05, np.float32)
    p[top] = 1.0 - 0.05 * (len(p) - 1)
    return FaceObservation(face_id, (10.0, 20.0, 64.0, 64.0), 3, p)


def test_sampler_keeps_the_interval_on_frame_time():
    s = TimelineSampler(0.5, FER2013_LABELS, DEVICE, "m1")
    ts = [100.0 + i / 30 for i in range(90)]  # 3 s at 30 fps
    out = [s.sample([obs(1)], i, (640, 480), t) for i, t in enumerate(ts)]
    got = [p["captured_ts"] for p in out if p is not None]
    assert len(got) == 6  # 0, 0.5, ... 2.5 s
    assert np.allclose(np.diff(got), 0.5, atol=1 / 30 + 1e-6)
    # a gap in the frames gives one sample, not a burst to catch up
    assert s.sample([], 90, (640, 480), 200.0) is not None
    assert s.sample([], 91, (640, 480), 200.1) is None
    every = TimelineSampler(0.0, FER2013_LABELS, DEVICE, "m1")
    assert all(every.sample([], i, (8, 8), 5.0 + i) for i in range(5))
    with pytest.raises(ValueError):
        TimelineSampler(-1, FER2013_LABELS, DEVICE, "m1")


def test_payload_has_every_label_and_matches_the_schema():
    p = timeline_payload(
        DEVICE,
        "m1",
        FER2013_LABELS,
        [obs(1, 3), obs(4, 6)],
        7,
        (640, 480),
        time.time(),
        file_name="a.jpg",
    )
    validate(p)
    assert p["schema"] == TIMELINE_SCHEMA and p["file"] == "a.jpg"
    assert [f["face_id"] for f in p["faces"]] == [1, 4]
    for f, top in zip(p["faces"], ("happy", "neutral"), strict=True):
        assert set(f["probs"]) == set(FER2013_LABELS)
        assert abs(sum(f["probs"].values()) - 1) < 1e-3
        assert f["emotion"] == top and f["confidence"] == f["probs"][top]
    empty = timeline_payload(DEVICE, "m1", FER2013_LABELS, [], 8, (640, 480), time.time())
    validate(empty)
    assert empty["faces"] == [] and "file" not in empty
    bad = dict(p, faces=[dict(p["faces"][0], probs={"happy": 1.0})])
    with pytest.raises(Exception, match="required"):
        validate(bad)


def test_pipeline_emits_timeline_of_announced_faces(sample_video, emotion_model):
    cfg = load_config(
        None,
        {
            "device": {"id": DEVICE},
            "source": {"kind": "video", "uri": str(sample_video), "loop": False},
            "classifier": {"model_path": str(emotion_model), "num_threads": 1},
            "pipeline": {"realtime": False, "adaptive": False},
            "output": {"timeline_interval_s": 0.05},
        },
    )
    buf = io.StringIO()
    summary = build_pipeline(cfg, output=StdoutOutput(buf)).run()
    assert summary.reason == "source ended"
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    timeline = [p for p in lines if p["schema"] == TIMELINE_SCHEMA]
    events = [p for p in lines if p["schema"] == "emotion-edge/event/1"]
    assert len(timeline) >= 5, "no timeline samples at 0.05 s"
    for p in timeline:
        validate(p)
    assert len({p["sample_id"] for p in timeline}) == len(timeline)
    ts = [p["captured_ts"] for p in timeline]
    # due every 0.05 s of frame time: a gap is at least that on average, never bursts
    assert ts == sorted(ts) and np.mean(np.diff(ts)) >= 0.05 - 1e-3 and min(np.diff(ts)) > 0
    # only announced faces, with the ids the events use
    announced = {e["face_id"] for e in events if e["kind"] == "appeared"}
    in_timeline = {f["face_id"] for p in timeline for f in p["faces"]}
    assert in_timeline and in_timeline <= announced


def test_timeline_off_by_default(sample_video, emotion_model):
    cfg = load_config(
        None,
        {
            "source": {"kind": "video", "uri": str(sample_video), "loop": False},
            "classifier": {"model_path": str(emotion_model), "num_threads": 1},
            "pipeline": {"realtime": False},
        },
    )
    assert cfg.output.timeline_interval_s == 0
    pipe = build_pipeline(cfg, output=StdoutOutput(io.StringIO()))
    assert pipe.timeline is None


class _Sub:
    def __init__(self, broker, topic):
        self.got: list[dict] = []
        self.cond = threading.Condition()
        self.c = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=f"tl-sub-{free_port()}", clean_session=False
        )
        self.c.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        ok = threading.Event()
        self.c.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.c.on_subscribe = lambda *a: ok.set()
        self.c.on_message = self._on
        self.c.connect(broker.host, broker.port, keepalive=5)
        self.c.loop_start()
        assert ok.wait(5)

    def _on(self, c, u, msg):
        with self.cond:
            self.got.append(json.loads(msg.payload))
            self.cond.notify_all()

    def ids(self) -> set[str]:
        with self.cond:
            return {p["sample_id"] for p in self.got}

    def wait_ids(self, want: set[str], timeout: float = 15) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: {p["sample_id"] for p in self.got} >= want, timeout)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_timeline_spooled_while_broker_away_and_across_restart(mqtt_broker, tmp_path):
    cfg = load_table(
        "mqtt",
        {
            "enabled": True,
            "host": mqtt_broker.host,
            "port": mqtt_broker.port,
            "spool_dir": str(tmp_path / "spool"),
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5,
            "keepalive_s": 5,
        },
    )
    sub = _Sub(mqtt_broker, f"emotion-edge/{DEVICE}/timeline")
    sampler = TimelineSampler(0.0, FER2013_LABELS, DEVICE, "m1")
    made: list[str] = []

    def one(pub, i):
        p = sampler.sample([obs(1)], i, (640, 480), time.time())
        made.append(p["sample_id"])
        pub.publish_timeline(p)
        time.sleep(0.01)

    pub = MqttPublisher(cfg, DEVICE, "m1")
    pub.start()
    assert pub.wait_connected(5)
    for i in range(20):
        one(pub, i)
    mqtt_broker.stop()
    for i in range(20, 50):  # the broker is away: kept in the spool
        one(pub, i)
    mqtt_broker.start()
    assert pub.wait_connected(10)
    for i in range(50, 60):
        one(pub, i)
    assert sub.wait_ids(set(made)), f"{len(set(made) - sub.ids())} samples lost"
    st = pub.stats()
    assert st["timeline_samples"] == 60 and st["timeline_dropped"] == 0
    assert st["timeline_acked"] >= 40
    pub.stop(timeout=2)

    # samples spooled by a publisher that could not deliver them go out at the next start
    mqtt_broker.stop()
    pub2 = MqttPublisher(cfg, DEVICE, "m1")
    pub2.start()
    for i in range(60, 70):
        one(pub2, i)
    pub2.stop(timeout=0.5)
    mqtt_broker.start()
    pub3 = MqttPublisher(cfg, DEVICE, "m1")
    pub3.start()
    assert pub3.wait_connected(10)
    one(pub3, 70)
    assert sub.wait_ids(set(made)), f"{len(set(made) - sub.ids())} samples lost"
    pub3.stop(timeout=2)
    sub.close()
