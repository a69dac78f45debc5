"""Device-side speed: classifier latency and throughput, detector latency, model sizes.

Imports only the device's dependencies (numpy, OpenCV, LiteRT, emotion_edge), so the same
code runs on the host and under qemu-aarch64 (see benchmarks/arm/). Usage:
    python -m benchmarks.device_bench --json out.json [--quick] [--peer PEER.tflite]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.common import (
    SAMPLE_VIDEO,
    default_model,
    default_single_model,
    log,
    machine_info,
    time_calls,
    time_interleaved,
    write_json,
)

FRAME_SIZES = ((320, 240), (640, 480))


def _faces(n: int, seed: int = 0) -> np.ndarray:
    # CNN latency does not depend on pixel values; seeded noise keeps this free of data files.
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 48), dtype=np.uint8)


def _invoke_only(interp) -> Callable[[], object]:
    """The interpreter call alone (input already set): the model's own cost."""
    return interp.invoke


def classifier_speed(
    model: Path,
    threads: tuple[int, ...],
    runs: int,
    batch_sizes: tuple[int, ...],
    peer: Path | None,
    warmup: int = 10,
    single: Path | None = None,
) -> dict:
    """Per-face latency of our classifier (`EmotionClassifier.predict_faces`: quantize,
    invoke, dequantize), of the single-net file `[classifier] model = "auto"` falls back to,
    and of the peer (resize to 64x64, scale, invoke), timed interleaved in the same process;
    plus invoke-only figures and batch throughput (ours and the single net)."""
    from emotion_edge.classify.classifier import EmotionClassifier

    out: dict = {
        "model": str(model),
        "per_face": [],
        "per_face_invoke_only": [],
        "batch": [],
        "peer_per_face": [],
        "peer_per_face_invoke_only": [],
        "ratio_peer_over_ours": [],
    }
    if single is not None:
        out |= {
            "single_model": str(single),
            "single_per_face": [],
            "single_per_face_invoke_only": [],
            "single_batch": [],
            "ratio_single_over_ours": [],
        }
    face = _faces(1)
    for t in threads:
        clf = EmotionClassifier(model, num_threads=t, max_batch=max(batch_sizes))
        clf.predict_faces(face)  # leaves `face` set in the batch-1 interpreter
        fns = {
            "ours": lambda c=clf: c.predict_faces(face),
            "ours_invoke": _invoke_only(clf._interpreter(1)),
        }
        sclf = None
        if single is not None:
            sclf = EmotionClassifier(single, num_threads=t, max_batch=max(batch_sizes))
            sclf.predict_faces(face)
            fns |= {
                "single": lambda c=sclf: c.predict_faces(face),
                "single_invoke": _invoke_only(sclf._interpreter(1)),
            }
        if peer is not None:
            from benchmarks.peer import PeerClassifier

            pc = PeerClassifier(peer, num_threads=t)
            pc.predict_faces(face)
            fns |= {
                "peer": lambda p=pc: p.predict_faces(face),
                "peer_invoke": _invoke_only(pc.interp),
            }
        res = time_interleaved(fns, runs, warmup)
        r = res["ours"]
        out["per_face"].append({"threads": t, **r})
        out["per_face_invoke_only"].append({"threads": t, **res["ours_invoke"]})
        log(f"classifier {t} thread(s): median {r['median_ms']:.3f} ms/face")
        if sclf is not None:
            rs = res["single"]
            out["single_per_face"].append({"threads": t, **rs})
            out["single_per_face_invoke_only"].append({"threads": t, **res["single_invoke"]})
            sratio = rs["median_ms"] / r["median_ms"]
            out["ratio_single_over_ours"].append({"threads": t, "ratio": round(sratio, 2)})
            log(
                f"single net {t} thread(s): median {rs['median_ms']:.3f} ms/face "
                f"(x{sratio:.2f} ours)"
            )
        if peer is not None:
            rp = res["peer"]
            out["peer_per_face"].append({"threads": t, **rp})
            out["peer_per_face_invoke_only"].append({"threads": t, **res["peer_invoke"]})
            ratio = rp["median_ms"] / r["median_ms"]
            out["ratio_peer_over_ours"].append({"threads": t, "ratio": round(ratio, 2)})
            log(f"peer {t} thread(s): median {rp['median_ms']:.3f} ms/face (x{ratio:.2f} ours)")
        for key, c in (("batch", clf), ("single_batch", sclf)):
            if c is None:
                continue
            for b in batch_sizes:
                faces = _faces(b, seed=b)
                rb = time_calls(
                    lambda c=c, f=faces: c.predict_faces(f),
                    max(5, runs // max(1, b // 2)),
                    min(3, warmup),
                )
                out[key].append(
                    {
                        "threads": t,
                        "batch": b,
                        **rb,
                        "faces_per_s": round(1000.0 * b / rb["median_ms"], 1),
                    }
                )
    return out


def _video_frames(n: int) -> tuple[list[np.ndarray], str]:
    import cv2

    frames: list[np.ndarray] = []
    if SAMPLE_VIDEO.is_file():
        cap = cv2.VideoCapture(str(SAMPLE_VIDEO))
        step = 275 // max(1, n)
        i = 0
        while len(frames) < n:
            ok, bgr = cap.read()
            if not ok:
                break
            if i % max(1, step) == 0:
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
            i += 1
        cap.release()
    if frames:
        return frames, f"{SAMPLE_VIDEO.name}, {len(frames)} frames resized"
    noise = np.random.default_rng(1).integers(0, 256, (n, 360, 640), dtype=np.uint8)
    return list(noise), "random noise frames (sample video absent)"


def detector_speed(kinds: tuple[str, ...], threads: int, runs: int, n_frames: int = 20) -> dict:
    import cv2
    from emotion_edge.detect.detector import DetectorConfig, make_detector

    base, source = _video_frames(n_frames)
    out: dict = {"frames": source, "threads": threads, "results": []}
    for kind in kinds:
        det = make_detector(DetectorConfig(kind=kind, num_threads=threads))
        name = getattr(det, "name", kind)
        for w, h in FRAME_SIZES:
            frames = [cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in base]
            it = iter(range(10**9))
            r = time_calls(
                lambda d=det, fr=frames, i=it: d.detect(fr[next(i) % len(fr)]), runs, warmup=3
            )
            faces = [len(det.detect(f)) for f in frames]
            out["results"].append(
                {
                    "kind": kind,
                    "name": name,
                    "width": w,
                    "height": h,
                    **r,
                    "mean_faces_per_frame": round(float(np.mean(faces)), 2),
                }
            )
            log(f"detector {name} {w}x{h}: median {r['median_ms']:.2f} ms")
    return out


def model_sizes(paths: dict[str, Path | None]) -> dict:
    return {
        k: (Path(p).stat().st_size if p and Path(p).is_file() else None) for k, p in paths.items()
    }


def run(args) -> dict:
    if args.quick:
        args.runs = min(args.runs, 100)
        args.detector_runs = min(args.detector_runs, 20)
    model = Path(args.model)
    threads = tuple(int(t) for t in args.threads.split(","))
    batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    peer = Path(args.peer) if args.peer else None
    result: dict = {"machine": machine_info(), "quick": args.quick}
    single = Path(args.single_model) if args.single_model else None
    result["classifier"] = classifier_speed(
        model, threads, args.runs, batch_sizes, peer, args.warmup, single
    )
    kinds = tuple(k for k in args.detectors.split(",") if k)
    if kinds:
        result["detector"] = detector_speed(kinds, min(threads), args.detector_runs)
    models_dir = Path(__import__("emotion_edge").__file__).parent / "models"
    result["model_sizes_bytes"] = model_sizes(
        {
            "emotion_int8": model,
            "emotion_int8_single": single,
            "peer_fer_tflite": peer,
            "blazeface_short": models_dir / "face_detection_short_range.tflite",
            "blazeface_full_sparse": models_dir / "face_detection_full_range_sparse.tflite",
        }
    )
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.device_bench",
        description="Device-side speed benchmarks (no TensorFlow needed): emotion classifier "
        "latency per face and batch throughput, the fer peer's latency in the same "
        "run, face detector latency at 320x240 and 640x480, model file sizes.",
    )
    p.add_argument(
        "--model",
        default=str(default_model()),
        help="int8 emotion .tflite (with its .json sidecar); default: the shipped model",
    )
    single = default_single_model()
    p.add_argument(
        "--single-model",
        default=str(single) if single.is_file() else "",
        help="the one-net int8 .tflite timed beside --model ([classifier] model = auto's "
        "fallback); default: the shipped one; empty: skip",
    )
    p.add_argument(
        "--peer",
        default="",
        help="the fer peer .tflite (see benchmarks/peer.py); empty: skip the peer",
    )
    p.add_argument("--threads", default="1,2", help="comma-separated interpreter thread counts")
    p.add_argument("--batch-sizes", default="1,4,8,16", help="batch sizes for throughput")
    p.add_argument("--runs", type=int, default=500, help="timed calls per latency figure")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls before timing")
    p.add_argument(
        "--detectors",
        default="blazeface,blazeface_full,haar",
        help="detector kinds to time (comma-separated; empty: none)",
    )
    p.add_argument("--detector-runs", type=int, default=100, help="timed frames per size")
    p.add_argument("--quick", action="store_true", help="few runs (CI / emulation)")
    p.add_argument("--json", required=True, help="write results here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    write_json(run(args), Path(args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
