"""Every research script starts from research/ (imports resolve, arguments parse)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow", reason="the scripts use emotion_edge_train ([train] extra)")

RESEARCH = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "script",
    [
        "experiments/self_distill.py",
        "experiments/device_crop_finetune.py",
        "experiments/ensemble_pairs.py",
        "experiments/class_bias.py",
        "experiments/int8_vs_float_speed.py",
        "experiments/int8_latency.py",
        "experiments/pair_finetune.py",
        "experiments/step_speed.py",
        "experiments/soft_label_stats.py",
        "proxy/pack_fer.py",
        "proxy/torch_recipe_proxy.py",
        "proxy/soft_labels.py",
    ],
)
def test_script_help(script):
    if script.endswith("torch_recipe_proxy.py") and importlib.util.find_spec("torch") is None:
        pytest.skip("the GPU proxy needs PyTorch (not a project dependency)")
    proc = subprocess.run(
        [sys.executable, str(RESEARCH / script), "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout
