"""Accuracy of the shipped int8 model vs the float model vs the `fer` peer (host only).

Same images, same run: FER2013 PublicTest and PrivateTest (FER2013 labels) and the FER+ test
split (majority vote), per class, via `emotion_edge_train.evaluate.evaluate`. The int8 model
runs through the device's own `EmotionClassifier` (LiteRT, sidecar-checked), so the figure is
the one the daemon gets. The float model needs TensorFlow (the [train] extra).

The CI gate compares the measured int8 PrivateTest accuracy with the figure committed with the
model (sidecar `metrics`, else export/report/report.json).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from emotion_edge.preprocess import FER2013_LABELS
from emotion_edge_train.evaluate import SPLITS

from benchmarks.common import REPO, log

GATE_TOLERANCE_POINTS = 0.5
TRAINING_SUBSET = 3000


def committed_privatetest(
    model: Path, report: Path = REPO / "export" / "report" / "report.json"
) -> tuple[float, str] | None:
    """The int8 PrivateTest accuracy committed with the model: (fraction, where it came from)."""
    sidecar = Path(model).with_suffix(".json")
    if sidecar.is_file():
        meta = json.loads(sidecar.read_text())
        value = (meta.get("metrics") or {}).get("fer2013_PrivateTest", {})
        if isinstance(value, dict) and value.get("int8") is not None:
            return float(value["int8"]), f"{sidecar.name} metrics.fer2013_PrivateTest.int8"
    if report.is_file():
        rep = json.loads(report.read_text())
        chosen = rep.get("chosen")
        r = rep.get(f"{chosen}_int8", {}).get("fer2013_PrivateTest", {})
        if "accuracy" in r:
            return float(r["accuracy"]), f"{report.name} {chosen}_int8"
    return None


def gate(measured: float, committed: float, tolerance_points: float = GATE_TOLERANCE_POINTS):
    """(passed, message). Accuracy is deterministic, so any real drop is a regression."""
    drop = round(100.0 * (committed - measured), 6)  # 0.62 - 0.615 is not exactly 0.005
    ok = drop <= tolerance_points
    msg = (
        f"int8 PrivateTest accuracy {100 * measured:.2f}% vs committed {100 * committed:.2f}% "
        f"(drop {drop:+.2f} points, allowed {tolerance_points})"
    )
    return ok, msg


def _compact(report: dict) -> dict:
    """Accuracy, macro-F1 and per-class figures; the confusion matrix is kept for the record."""
    out = {}
    for k in SPLITS:
        if k in report:
            out[k] = {
                key: report[k][key]
                for key in (
                    "n",
                    "accuracy",
                    "macro_f1",
                    "per_class",
                    "confusion_matrix",
                    "excluded_rows",
                )
                if key in report[k]
            }
    return out


def evaluate_model(name: str, predict, ds, labels) -> dict:
    from emotion_edge_train.evaluate import evaluate

    t = time.perf_counter()
    rep = evaluate(predict, ds, tuple(labels))
    res = {
        "name": name,
        "labels": list(labels),
        **_compact(rep),
        "eval_seconds": round(time.perf_counter() - t, 1),
    }
    log(
        f"accuracy {name}: "
        + " ".join(
            f"{k.replace('fer2013_', '')}={100 * res[k]['accuracy']:.2f}%"
            for k in SPLITS
            if k in res
        )
    )
    return res


def run(
    model: Path, data_dir: Path, float_model: Path | None, peer: dict | None, quick: bool
) -> dict:
    from emotion_edge.classify.classifier import EmotionClassifier
    from emotion_edge_train.data import load_fer

    ds = load_fer(data_dir)
    clf = EmotionClassifier(model, num_threads=2, max_batch=256)
    labels = clf.labels
    out: dict = {"data": str(data_dir), "labels": list(labels), "models": {}}
    out["models"]["int8"] = evaluate_model("int8 (shipped, LiteRT)", clf.predict_faces, ds, labels)
    out["models"]["int8"].update(
        {"file": str(model), "version": clf.version, "sha256": clf.meta.sha256}
    )

    if float_model is not None and not quick:
        if Path(float_model).is_file():
            from emotion_edge_export.qat import float_predict_fn, load_float_model

            fm = load_float_model(Path(float_model))
            n_out = int(fm.output_shape[-1])
            if n_out != len(labels):
                out["models"]["float"] = {
                    "skipped": f"{float_model}: {n_out} outputs, the int8 "
                    f"model has {len(labels)} labels"
                }
            else:
                out["models"]["float"] = evaluate_model(
                    "float (Keras)", float_predict_fn(fm), ds, labels
                )
                out["models"]["float"]["file"] = str(float_model)
        else:
            out["models"]["float"] = {"skipped": f"float model not found: {float_model}"}

    if peer is not None and "path" in peer:
        from benchmarks.peer import PEER_LABELS, PeerClassifier

        pc = PeerClassifier(peer["path"], num_threads=2)
        # The same label space as ours: the peer's columns for our labels, in our order.
        cols = np.array([PEER_LABELS.index(n) for n in labels])
        out["models"]["peer"] = evaluate_model(
            f"peer {peer['dist']} (mini-Xception tflite)",
            lambda faces: pc.predict_faces(faces)[:, cols],
            ds,
            labels,
        )
        out["models"]["peer"].update({k: peer[k] for k in ("dist", "sha256", "size_bytes")})
        # Fit on FER2013 Training faces vs the test splits: a test score near the Training
        # score would mean the peer saw the test faces in training.
        rows = ds.split("Training")[:TRAINING_SUBSET]
        idx = {FER2013_LABELS.index(n): i for i, n in enumerate(labels)}
        y = np.array([idx.get(int(v), -1) for v in ds.labels[rows]])
        keep = y >= 0
        for key, fn in (("int8", clf.predict_faces), ("peer", pc.predict_faces)):
            probs = fn(ds.images[rows[keep]])
            if key == "peer":
                probs = probs[:, cols]
            out["models"][key]["training_subset"] = {
                "n": int(keep.sum()),
                "accuracy": round(float(np.mean(probs.argmax(1) == y[keep])), 4),
            }
        out["models"]["peer"]["input"] = pc.input_details
    elif peer is not None:
        out["models"]["peer"] = {"skipped": peer.get("error", "peer unavailable")}

    committed = committed_privatetest(model)
    measured = out["models"]["int8"]["fer2013_PrivateTest"]["accuracy"]
    if committed is None:
        out["gate"] = {"status": "no committed figure", "measured": measured}
    else:
        ok, msg = gate(measured, committed[0])
        out["gate"] = {
            "status": "pass" if ok else "FAIL",
            "measured": measured,
            "committed": committed[0],
            "committed_source": committed[1],
            "tolerance_points": GATE_TOLERANCE_POINTS,
            "message": msg,
        }
        log(msg)
    return out
