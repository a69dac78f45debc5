"""Verify an exported int8 .tflite file itself, through the device's `EmotionClassifier`.

The file runs through the same class the daemon uses (LiteRT, input/output quantization,
tensors checked against the metadata), so the figures here are the daemon's figures: accuracy
(FER2013 PublicTest/PrivateTest, FER+ test), agreement with the float model, per-class report,
file size and single-face latency at 1 and 2 threads.

A file with its `.json` sidecar loads from the file; a file just converted (no sidecar yet)
loads from its bytes with the metadata `convert.int8_metadata` reads from the file.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from emotion_edge.classify.classifier import EmotionClassifier
from emotion_edge.classify.model_meta import ModelMetadata, sha256_file
from emotion_edge.preprocess import INPUT_SIZE
from emotion_edge_train.data import FerDataset
from emotion_edge_train.evaluate import evaluate

EVAL_BATCH = 256  # faces per interpreter call while scoring a split


def load_classifier(
    path: Path,
    meta: ModelMetadata | None = None,
    num_threads: int = 2,
    flip_average: bool | None = None,
) -> EmotionClassifier:
    """The device's classifier for `path`: from the file and its sidecar, or (`meta` given,
    e.g. before the sidecar is written) from the file's bytes checked against `meta`;
    `flip_average` None follows the metadata, as the daemon does."""
    path = Path(path)
    kw = dict(num_threads=num_threads, max_batch=EVAL_BATCH, flip_average=flip_average)
    if meta is None:
        return EmotionClassifier(path, **kw)
    return EmotionClassifier.from_bytes(path.read_bytes(), meta, name=str(path), **kw)


def single_face_latency_ms(clf: EmotionClassifier, runs: int = 300) -> dict:
    """`predict_faces` on one face (quantize, invoke, dequantize), as the daemon calls it."""
    face = np.random.default_rng(0).integers(0, 256, (1, INPUT_SIZE, INPUT_SIZE), dtype=np.uint8)
    for _ in range(20):
        clf.predict_faces(face)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        clf.predict_faces(face)
        times.append((time.perf_counter() - t) * 1000)
    a = np.array(times)
    return {
        "threads": clf.num_threads,
        "runs": runs,
        "median_ms": round(float(np.median(a)), 4),
        "p90_ms": round(float(np.percentile(a, 90)), 4),
    }


def verify_tflite(
    path: Path,
    ds: FerDataset,
    float_probs: dict | None = None,
    meta: ModelMetadata | None = None,
    flip_average: bool | None = None,
) -> dict:
    """Full report for one .tflite file (labels from its metadata: the sidecar, or `meta`);
    `float_probs` (split -> probs) adds argmax agreement with the float model."""
    path = Path(path)
    clf = load_classifier(path, meta, num_threads=2, flip_average=flip_average)
    cache: dict = {}
    report = evaluate(clf.predict_faces, ds, clf.labels, probs_cache=cache)
    report["file"] = str(path)
    report["size_bytes"] = path.stat().st_size
    report["sha256"] = sha256_file(path)
    report["flip_average"] = clf.flip_average
    report["input_dtype"] = str(clf.input_dtype)
    report["output_dtype"] = str(clf.output_dtype)
    if float_probs:
        report["argmax_agreement_with_float"] = {
            split: round(float(np.mean(cache[split].argmax(1) == float_probs[split].argmax(1))), 4)
            for split in cache
            if split in float_probs
        }
    report["latency_single_face"] = [
        single_face_latency_ms(load_classifier(path, meta, t, flip_average)) for t in (1, 2)
    ]
    return report
