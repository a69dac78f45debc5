"""benchmarks/record_bench.py in its --quick form: runs end to end, loses and doubles nothing.

Timings are recorded, never asserted (two shared cores in CI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy", reason="the recorder needs the [record] extra")
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_record_bench_quick(tmp_path, mqtt_broker):
    del mqtt_broker  # only to skip where mosquitto is absent; the bench starts its own
    out = tmp_path / "record.json"
    p = subprocess.run(
        [sys.executable, "-m", "benchmarks.record_bench", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(out.read_text())
    dbs = ["sqlite"] + (["postgresql"] if "skipped" not in r["postgresql"] else [])
    for db in dbs:
        live, backlog = r[db]["live"], r[db]["backlog"]
        assert live["lost"] == 0 and backlog["lost"] == 0
        assert live["stored"] == [live["events_unique"], live["samples_unique"]]
        assert backlog["messages_per_s"] > 0 and live["recorder_peak_rss_mb"] > 0
    off = r["offline"]
    if "skipped" not in off:
        assert off["frames"] == 275 and off["frames_per_s"] > 0
