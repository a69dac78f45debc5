"""Recorder benchmark: ingest throughput and RSS on SQLite and PostgreSQL, offline analysis speed.

    python -m benchmarks.record_bench                 # -> benchmarks/results/record.json
    python -m benchmarks.record_bench --quick         # shorter phases (a smoke run)

For each database (a SQLite file; a throwaway PostgreSQL cluster from tests/pg_cluster.py,
fsync on, skipped where PostgreSQL is absent) with a real mosquitto (tests/mqtt_broker.py):

- live: simulated devices (default 50) each publish 2 timeline samples/s (1-2 faces) and an
  event every 10 s, for `--live-s` seconds, into one `emotion-edge-record` subprocess;
  measured: stored == published (zero lost, zero stored twice, 5 % of the events re-sent),
  the recorder's peak RSS, and the delay from publishing to the committed row.
- backlog: the same kind of traffic published while the recorder is down (queued by the
  broker in its persistent session), then the recorder started: messages/s until every one is
  committed, the recorder's ingest ceiling on this machine.

Then the sample video recorded in-process (`--source video:...`): frames/s against the clip's
own 29.97 fps. Timings are figures of this machine (two shared cores in CI), never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, RESULTS_DIR, SAMPLE_VIDEO, log, machine_info, write_json

sys.path.insert(0, str(REPO / "tests"))  # the real-broker and real-PostgreSQL helpers

BIN = Path(sys.executable).parent


def _recorder_cmd() -> list[str]:
    exe = BIN / "emotion-edge-record"
    if exe.is_file():
        return [str(exe)]
    return [
        sys.executable,
        "-c",
        "import sys; from emotion_edge_record.cli import record_main; sys.exit(record_main())",
    ]


def _rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in kB of a process."""
    cur = peak = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1])
    except OSError:
        pass
    return cur, peak


class Recorder:
    def __init__(self, broker, db: str, workdir: Path, client_id: str):
        self.broker, self.db, self.dir, self.client_id = broker, db, workdir, client_id
        self.proc: subprocess.Popen | None = None
        self.peak_kb = 0

    def start(self) -> None:
        ready = self.dir / f"{self.client_id}.ready"
        ready.unlink(missing_ok=True)
        self.stats = self.dir / f"{self.client_id}.stats.json"
        self.log = open(self.dir / f"{self.client_id}.log", "a")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                *_recorder_cmd(),
                "--db",
                self.db,
                "--mqtt-host",
                self.broker.host,
                "--mqtt-port",
                str(self.broker.port),
                "--client-id",
                self.client_id,
                "--ready-file",
                str(ready),
                "--stats-json",
                str(self.stats),
                "--log-level",
                "WARNING",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        deadline = time.monotonic() + 60
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("recorder did not start: " + self.log_text())
            time.sleep(0.05)

    def sample_rss(self) -> None:
        if self.proc is not None:
            self.peak_kb = max(self.peak_kb, _rss_kb(self.proc.pid)[1])

    def stop(self) -> dict:
        self.sample_rss()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        self.log.close()
        return json.loads(self.stats.read_text())

    def log_text(self) -> str:
        return (self.dir / f"{self.client_id}.log").read_text(errors="replace")


class Fleet:
    """Simulated devices' traffic through one paho client (QoS 1, PUBACKs awaited)."""

    def __init__(self, broker, devices: int):
        import paho.mqtt.client as paho

        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"fleet-{os.getpid()}")
        self.c.max_inflight_messages_set(500)
        self.c.connect(broker.host, broker.port, keepalive=30)
        self.c.loop_start()
        self.devices = [f"sim-{i:03d}" for i in range(devices)]
        self.events: set[str] = set()
        self.samples: set[str] = set()
        self.sent = 0
        self.pending: list = []
        self.rng = random.Random(0)

    def _pub(self, topic: str, payload: dict) -> None:
        self.pending.append(self.c.publish(topic, json.dumps(payload), qos=1))
        self.sent += 1

    def tick(self, i: int, dev: str, ts: float, event_every: int = 20) -> None:
        from test_record_mqtt import make_event, make_sample

        s = make_sample(dev, i, ts, faces=1 + (i % 2))
        self.samples.add(s["sample_id"])
        self._pub(f"emotion-edge/{dev}/timeline", s)
        if i % event_every == 0:
            e = make_event(dev, i, ts)
            self.events.add(e["event_id"])
            self._pub(f"emotion-edge/{dev}/events", e)
            if self.rng.random() < 0.05:
                self._pub(f"emotion-edge/{dev}/events", e)  # re-sent: stored once

    def flush(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        for info in self.pending:
            while not info.is_published():
                if time.monotonic() > deadline:
                    raise RuntimeError("broker did not acknowledge the fleet's messages")
                time.sleep(0.005)
        self.pending = []

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _counts(db: str) -> tuple[int, int]:
    from emotion_edge_record.store import open_store

    st = open_store(db, migrate=False)
    try:
        c = st.counts()
    finally:
        st.close()
    return c["events"], c["samples"]


def _wait_stored(rec: Recorder, db: str, fleet: Fleet, timeout: float) -> float:
    want = (len(fleet.events), len(fleet.samples))
    deadline = time.monotonic() + timeout
    while True:
        rec.sample_rss()
        got = _counts(db)
        if got == want:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"stored {got}, published {want}")
        time.sleep(0.05)


def _delays(db: str) -> dict:
    """Publish -> commit delay of the live phase's samples (received_ts - published_ts)."""
    from emotion_edge_record.store import open_store, samples
    from sqlalchemy import select

    st = open_store(db, migrate=False)
    with st.engine.connect() as conn:
        d = sorted(
            r[0] - r[1] for r in conn.execute(select(samples.c.received_ts, samples.c.published_ts))
        )
    st.close()
    if not d:
        return {}
    return {
        "p50_ms": round(1000 * d[len(d) // 2], 1),
        "p95_ms": round(1000 * d[int(len(d) * 0.95)], 1),
        "max_ms": round(1000 * d[-1], 1),
    }


def bench_db(
    name: str, db: str, broker, work: Path, devices: int, live_s: float, backlog: int
) -> dict:
    out: dict = {"db": name}
    rec = Recorder(broker, db, work, f"bench-{name}")
    rec.start()
    fleet = Fleet(broker, devices)
    # live: every device 2 samples/s, spread evenly over each half second
    period = 0.5 / devices
    t0 = time.monotonic()
    i = 0
    next_t = t0
    while time.monotonic() - t0 < live_s:
        for dev in fleet.devices:
            fleet.tick(i, dev, time.time())
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        i += 1
        rec.sample_rss()
    fleet.flush()
    sent_s = time.monotonic() - t0
    done = _wait_stored(rec, db, fleet, 120)
    live_stats = rec.stop()
    ev, sm = _counts(db)
    out["live"] = {
        "devices": devices,
        "samples_per_device_s": 2,
        "duration_s": round(sent_s, 1),
        "messages_published": fleet.sent,
        "messages_per_s_offered": round(fleet.sent / sent_s, 1),
        "events_unique": len(fleet.events),
        "samples_unique": len(fleet.samples),
        "stored": [ev, sm],
        "duplicates_dropped": live_stats["record"]["duplicates"],
        "lost": (len(fleet.events) - ev) + (len(fleet.samples) - sm),
        "catch_up_after_last_publish_s": round(done - (t0 + sent_s), 2),
        "publish_to_commit": _delays(db),
        "recorder_peak_rss_mb": round(rec.peak_kb / 1024, 1),
    }
    log(f"record bench {name} live: {json.dumps(out['live'])}")

    # backlog: queued while the recorder is away, then drained as fast as it can
    base_events, base_samples = len(fleet.events), len(fleet.samples)
    per_dev = max(1, backlog // devices)
    for i in range(per_dev):
        for dev in fleet.devices:
            fleet.tick(10_000 + i, dev, time.time(), event_every=10)
    fleet.flush()
    queued = fleet.sent - out["live"]["messages_published"]
    rec.peak_kb = 0
    rec.start()
    t_start = time.monotonic()  # subscribed: the queued messages flow from here
    done = _wait_stored(rec, db, fleet, 600)
    secs = done - t_start
    st = rec.stop()
    ev, sm = _counts(db)
    out["backlog"] = {
        "messages": queued,
        "seconds_from_start": round(secs, 2),
        "messages_per_s": round(queued / secs, 1),
        "events_stored": ev - base_events,
        "samples_stored": sm - base_samples,
        "lost": (len(fleet.events) - ev) + (len(fleet.samples) - sm),
        "batches": st["record"]["batches"],
        "recorder_peak_rss_mb": round(rec.peak_kb / 1024, 1),
        "note": "from the recorder's subscription (session present) to the last commit",
    }
    log(f"record bench {name} backlog: {json.dumps(out['backlog'])}")
    fleet.close()
    _drop_session(broker, rec.client_id)
    return out


def _drop_session(broker, client_id: str) -> None:
    """End the recorder's persistent session, so the next phase's traffic is not queued for it."""
    import paho.mqtt.client as paho
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    c.connect(broker.host, broker.port, clean_start=True, properties=props)
    c.loop_start()
    time.sleep(0.3)
    c.disconnect()
    c.loop_stop()


def bench_offline(work: Path) -> dict:
    if not SAMPLE_VIDEO.is_file():
        return {"skipped": f"{SAMPLE_VIDEO} missing"}
    stats = work / "offline.json"
    db = work / "offline.sqlite"
    p = subprocess.run(
        [
            *_recorder_cmd(),
            "--db",
            str(db),
            "--source",
            f"video:{SAMPLE_VIDEO}",
            "--no-progress",
            "--stats-json",
            str(stats),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if p.returncode != 0:
        raise RuntimeError(p.stderr)
    s = json.loads(stats.read_text())["source"]
    res = {
        "video": SAMPLE_VIDEO.name,
        "frames": s["frames"],
        "seconds": s["elapsed_s"],
        "frames_per_s": s["fps"],
        "clip_fps": s["source_fps"],
        "times_real_time": s.get("realtime_factor"),
        "timeline_samples": s["samples"],
        "timeline_face_rows": s["face_rows"],
        "events": s["events"],
        "note": "detection on every frame (pipeline.adaptive = false), timeline every frame",
    }
    log(f"record bench offline: {json.dumps(res)}")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--live-s", type=float, default=30.0)
    ap.add_argument("--backlog", type=int, default=20000, help="timeline samples queued")
    ap.add_argument("--quick", action="store_true", help="10 devices, 5 s, 2000 queued")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "record.json")
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.devices, args.live_s, args.backlog = 10, 5.0, 2000
    from mqtt_broker import Broker
    from pg_cluster import PgCluster, find_bin_dir

    work = Path(tempfile.mkdtemp(prefix="record-bench-"))
    results: dict = {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()}}
    broker = Broker(work)
    # a recorder that is away may have a large backlog queued for it
    with open(broker.conf, "a") as f:
        f.write("max_queued_messages 0\nmax_queued_bytes 0\n")
        # the test broker saves its state after every change; here that would measure
        # mosquitto's disk writes, not the recorder
        f.write("autosave_on_changes false\nautosave_interval 1800\n")
    broker.start()
    pg = None
    try:
        results["sqlite"] = bench_db(
            "sqlite",
            str(work / "bench.sqlite"),
            broker,
            work,
            args.devices,
            args.live_s,
            args.backlog,
        )
        if args.no_postgres or find_bin_dir() is None:
            results["postgresql"] = {"skipped": "PostgreSQL not installed or --no-postgres"}
        else:
            pg = PgCluster.create(fsync=True)
            results["postgresql"] = bench_db(
                "postgresql",
                pg.new_database(),
                broker,
                work,
                args.devices,
                args.live_s,
                args.backlog,
            )
            results["postgresql"]["server"] = "throwaway local cluster, fsync on"
        results["offline"] = bench_offline(work)
    finally:
        broker.stop()
        if pg is not None:
            pg.destroy()
        shutil.rmtree(work, ignore_errors=True)
    write_json(results, args.out)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
