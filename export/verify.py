"""Verify an exported int8 .tflite file itself, in the LiteRT interpreter.

Accuracy (FER2013 PublicTest/PrivateTest, FER+ test), agreement with the float model,
per-class report, file size and single-face latency at 1 and 2 threads.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from emotion_edge.classify.litert import make_interpreter
from emotion_edge.classify.model_meta import sha256_file
from emotion_edge.preprocess import quantize_input
from emotion_edge_train.data import FerDataset
from emotion_edge_train.evaluate import evaluate


class TfliteClassifier:
    """Batch predictions from an int8 (or float) emotion .tflite, probabilities out."""

    def __init__(self, path: Path | str, num_threads: int = 2):
        self.path = Path(path)
        self.interp = make_interpreter(str(self.path), num_threads=num_threads)
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        self._batch = int(self.inp["shape"][0])

    def _resize(self, n: int) -> None:
        if n != self._batch:
            self.interp.resize_tensor_input(self.inp["index"], [n, 48, 48, 1])
            self.interp.allocate_tensors()
            self.inp = self.interp.get_input_details()[0]
            self.out = self.interp.get_output_details()[0]
            self._batch = n

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        self._resize(len(faces))
        scale, zp = self.inp["quantization"]
        if self.inp["dtype"] == np.float32:
            x = faces.reshape(-1, 48, 48, 1).astype(np.float32) / 255.0
        else:
            x = quantize_input(faces, scale, zp, self.inp["dtype"])
        self.interp.set_tensor(self.inp["index"], x)
        self.interp.invoke()
        y = self.interp.get_tensor(self.out["index"])
        if self.out["dtype"] != np.float32:
            s, z = self.out["quantization"]
            y = (y.astype(np.float32) - z) * s
        return y


def single_face_latency_ms(path: Path, num_threads: int, runs: int = 300) -> dict:
    clf = TfliteClassifier(path, num_threads=num_threads)
    face = np.random.default_rng(0).integers(0, 256, (1, 48, 48), dtype=np.uint8)
    for _ in range(20):
        clf(face)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        clf(face)
        times.append((time.perf_counter() - t) * 1000)
    a = np.array(times)
    return {
        "threads": num_threads,
        "runs": runs,
        "median_ms": round(float(np.median(a)), 4),
        "p90_ms": round(float(np.percentile(a, 90)), 4),
    }


def verify_tflite(
    path: Path, ds: FerDataset, labels: tuple[str, ...], float_probs: dict | None = None
) -> dict:
    """Full report for one .tflite file; `float_probs` (split -> probs) adds agreement."""
    clf = TfliteClassifier(path, num_threads=2)
    cache: dict = {}
    report = evaluate(clf, ds, labels, probs_cache=cache)
    report["file"] = str(path)
    report["size_bytes"] = path.stat().st_size
    report["sha256"] = sha256_file(path)
    report["input_dtype"] = str(np.dtype(clf.inp["dtype"]))
    report["output_dtype"] = str(np.dtype(clf.out["dtype"]))
    if float_probs:
        report["argmax_agreement_with_float"] = {
            split: round(float(np.mean(cache[split].argmax(1) == float_probs[split].argmax(1))), 4)
            for split in cache
            if split in float_probs
        }
    report["latency_single_face"] = [single_face_latency_ms(path, t) for t in (1, 2)]
    return report
