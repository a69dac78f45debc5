"""research/experiments/step_speed.py: one line per variant, ratio to the first, a bad variant
exits 2. Not in the default suite: run with `.venv/bin/pytest research/tests`."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow", reason="the experiment trains with the [train] extra")


def test_step_speed_times_each_variant_in_its_own_process():
    script = Path(__file__).resolve().parents[1] / "experiments" / "step_speed.py"
    run = [sys.executable, str(script)]
    out = subprocess.run(
        [*run, "batch=8", "batch=16", "--steps", "2", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if "s/epoch" in line]
    assert [line.split()[1] for line in lines] == ["batch=8", "batch=16"]
    assert "x1.00" in lines[0]
    bad = subprocess.run([*run, "depth=3"], capture_output=True, text=True)
    assert bad.returncode == 2 and "depth=3" in bad.stderr
