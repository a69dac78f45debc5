"""The "before" variant on the daemon's code as it was at a git commit, not only its settings.

Settings pinned on today's code still run today's code (roll-aligned crops, the new tracker and
event rules). `--before-ref REF` instead extracts `device/` at REF with `git archive` into a
temporary folder (the repository and its work tree are not touched), makes it importable as
`emotion_edge` ahead of the installed package, and runs this benchmark's "before" variant in a
child process there, on the same cached clips. Its cost figures are timed in that process, so
they are not interleaved with the other variants'.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from benchmarks.common import REPO, log
from benchmarks.room.daemon_run import UsageError


def resolve(ref: str) -> str:
    """The short commit id of a ref (UsageError with git's message when it is not one)."""
    proc = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short=10", "--verify", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise UsageError(f"--before-ref {ref!r}: not a commit ({proc.stderr.strip()})")
    return proc.stdout.strip()


def run_before_at(ref: str, child_args: list[str]) -> tuple[str, dict]:
    """(commit, the child's "before" variant entry) for `device/` at `ref`."""
    sha = resolve(ref)
    with tempfile.TemporaryDirectory(prefix="synthetic-room-old-") as tmp:
        tree = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", sha, "device"],
            capture_output=True,
            check=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(tree)) as tar:
            try:
                tar.extractall(Path(tmp) / "src", filter="data")
            except TypeError:  # a Python without extraction filters (our own git archive)
                tar.extractall(Path(tmp) / "src")  # noqa: S202
        pkg = Path(tmp) / "pkg"
        pkg.mkdir()
        (pkg / "emotion_edge").symlink_to(Path(tmp) / "src" / "device")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(pkg), str(REPO), env.get("PYTHONPATH", "")])
        out = Path(tmp) / "out"
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.synthetic_room",
            *child_args,
            "--variants",
            "before",
            "--out",
            str(out),
        ]
        log(f"synthetic_room: before@{sha}: device/ of {sha} in a child process")
        proc = subprocess.run(cmd, cwd=REPO, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"the before@{sha} run failed (exit {proc.returncode})")
        result = json.loads((out / "synthetic_room.json").read_text())
        used = result.get("emotion_edge", "")
        if not used.startswith(str(pkg)):
            raise RuntimeError(f"the before@{sha} run imported emotion_edge from {used}")
        entry = result["variants"]["before"]
        entry["code"] = sha
        entry["cost_timed_apart"] = True
        return sha, entry
