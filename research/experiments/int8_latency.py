"""Experiment (not part of the recipe): per-face latency of candidate int8 files vs the peer.

The benchmark's speed section times one model file against the `fer` peer; choosing between
candidates needs them side by side in one process, because the peer ratio moves with the
machine's load and CPU. This times each int8 .tflite (with its .json sidecar) through the
device's own classifier (`EmotionClassifier.predict_faces`: quantize, invoke, dequantize) and
the peer through `benchmarks.peer.PeerClassifier`, one face a call, interleaved in blocks, so
every ratio to the peer comes from the same minutes of the same machine.

    .venv/bin/python research/experiments/int8_latency.py device/models/emotion_int8.tflite \
        runs/pair_t1_s7/install/emotion_int8.tflite --threads 1 --runs 2000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

# benchmarks/ is not an installed package: import it from the checkout this script sits in
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", type=Path, help="int8 .tflite files (sidecar beside)")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (the bar: 1)")
    p.add_argument("--runs", type=int, default=2000, help="timed calls per model")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args()

    from emotion_edge.classify.classifier import EmotionClassifier

    from benchmarks.common import cpu_isa, time_interleaved
    from benchmarks.peer import PeerClassifier, obtain_peer_model

    face = np.random.default_rng(0).integers(0, 256, (1, 48, 48), dtype=np.uint8)
    calls = {}
    for path in args.models:
        clf = EmotionClassifier(path, num_threads=args.threads, max_batch=1)
        calls[str(path)] = lambda c=clf: c.predict_faces(face)
    peer = PeerClassifier(obtain_peer_model()["path"], num_threads=args.threads)
    calls["peer"] = lambda: peer.predict_faces(face)
    stats = time_interleaved(calls, runs=args.runs)
    peer_ms = stats["peer"]["median_ms"]
    result = {"cpu_isa": cpu_isa(), "threads": args.threads, "runs": args.runs, "models": {}}
    for name, st in stats.items():
        med = st["median_ms"]
        result["models"][name] = {**st, "over_peer": round(med / peer_ms, 3)}
        print(f"{name:55s} {med:7.3f} ms  {med / peer_ms:5.2f}x the peer")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
