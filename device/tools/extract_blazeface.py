"""Re-extract the vendored BlazeFace .tflite files from a mediapipe wheel and verify them.

Provenance check for device/models/: the files must come out of the published wheel with the
sha256 pinned in emotion_edge.detect.detector. Run it at build/install time, never at run time.

    python -m emotion_edge.tools.extract_blazeface --check            # verify installed files
    python -m emotion_edge.tools.extract_blazeface --wheel mediapipe-0.10.21-...whl
    python -m emotion_edge.tools.extract_blazeface                     # pip download, extract
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from emotion_edge.detect.detector import BLAZEFACE, MODELS_DIR, sha256_file

WHEEL_DIR = "mediapipe/modules/face_detection/"
DEFAULT_VERSION = "0.10.21"
# Any platform's wheel holds the same files; pinning one makes `pip download` work everywhere.
DEFAULT_PLATFORM = "manylinux_2_28_x86_64"
DEFAULT_PYTHON = "3.11"


class ProvenanceError(Exception):
    pass


def pins() -> dict[str, str]:
    return {spec.filename: spec.sha256 for spec in BLAZEFACE.values()}


def download_wheel(version: str, dest: Path, platform: str, python: str) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--platform",
        platform,
        "--python-version",
        python,
        f"mediapipe=={version}",
        "-d",
        str(dest),
    ]
    print("running:", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob(f"mediapipe-{version}-*.whl"))
    if not wheels:
        raise ProvenanceError(f"pip download left no mediapipe-{version} wheel in {dest}")
    return wheels[0]


def extract(wheel: Path, out_dir: Path) -> list[tuple[str, str]]:
    """Verify every pinned file inside the wheel, then write them all; nothing is written
    when any of them is missing or differs."""
    blobs = {}
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for fname, want in pins().items():
            member = WHEEL_DIR + fname
            if member not in names:
                raise ProvenanceError(
                    f"{wheel.name}: has no {member} (mediapipe 0.10.30 and "
                    "later ship no .tflite files; use 0.10.21)"
                )
            data = zf.read(member)
            got = hashlib.sha256(data).hexdigest()
            if got != want:
                raise ProvenanceError(f"{wheel.name}:{member}: sha256 {got} != pinned {want}")
            blobs[fname] = data
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for fname, data in blobs.items():
        tmp = out_dir / (fname + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(out_dir / fname)
        done.append((fname, pins()[fname]))
    return done


def check(out_dir: Path) -> list[str]:
    """Problems with the files in out_dir (empty: all present and matching their pins)."""
    problems = []
    for fname, want in pins().items():
        p = out_dir / fname
        if not p.is_file():
            problems.append(f"{p}: missing")
        elif (got := sha256_file(p)) != want:
            problems.append(f"{p}: sha256 {got} != pinned {want}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m emotion_edge.tools.extract_blazeface",
        description="Extract the BlazeFace face detector models from a mediapipe wheel into "
        "the package's models folder, refusing any whose sha256 is not the pinned "
        "one. Without --wheel, the wheel is fetched with `pip download --no-deps`.",
    )
    ap.add_argument("--wheel", type=Path, help="a mediapipe wheel file already downloaded")
    ap.add_argument(
        "--version",
        default=DEFAULT_VERSION,
        help=f"mediapipe version to download (default {DEFAULT_VERSION})",
    )
    ap.add_argument(
        "--platform",
        default=DEFAULT_PLATFORM,
        help=f"wheel platform tag to download (default {DEFAULT_PLATFORM})",
    )
    ap.add_argument(
        "--python-version",
        default=DEFAULT_PYTHON,
        help=f"wheel Python version to download (default {DEFAULT_PYTHON})",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=MODELS_DIR,
        help="where to write the .tflite files (default: the package's models/)",
    )
    ap.add_argument(
        "--check",
        action="store_true",
        help="only verify the files already in --out; exit 1 if any differs",
    )
    args = ap.parse_args(argv)

    if args.check:
        problems = check(args.out)
        for p in problems:
            print("FAIL", p)
        if not problems:
            for fname, sha in pins().items():
                print(f"ok   {args.out / fname}  sha256 {sha}")
        return 1 if problems else 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            wheel = args.wheel or download_wheel(
                args.version, Path(tmp), args.platform, args.python_version
            )
            if not wheel.is_file():
                raise ProvenanceError(f"{wheel}: no such wheel file")
            for fname, sha in extract(wheel, args.out):
                print(f"wrote {args.out / fname}  sha256 {sha}  (from {wheel.name})")
    except (ProvenanceError, zipfile.BadZipFile, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
