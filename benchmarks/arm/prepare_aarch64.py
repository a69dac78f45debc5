"""Assemble a Debian 12 (bookworm) arm64 Python 3.11 userland without running anything emulated.

Steps (all on the host):
1. resolve python3.11 and its dependency closure for arm64 with a private apt state
   (own sources list, lists, cache and an empty dpkg status, so nothing of the host's apt
   configuration or package database is touched) and download the .debs;
2. `dpkg -x` every .deb into the root;
3. install the device's aarch64 wheels (pyproject's [device] extra) with the host pip:
   `--target <root>/opt/site --platform manylinux_2_28_aarch64 ... --only-binary=:all:`
   (ai-edge-litert is tagged manylinux_2_27, opencv manylinux_2_28, so all tags are listed);
4. write an aarch64 /proc/cpuinfo inside the root: QEMU 7.2 passes the host's x86
   /proc/cpuinfo through, and LiteRT's CPU feature probe segfaults on it; qemu -L <root>
   redirects the read to this file (benchmarks/arm/emulated.py rewrites it per emulated CPU).

The root is cached under ~/.cache/emotion-edge/arm64-root/<key>/ where key hashes every input
(packages, requirements, platform tags, this script's recipe version); a second call reuses it.
Needs: apt-get, dpkg, the Debian archive keyring, network access to deb.debian.org and PyPI.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[2]
RECIPE_VERSION = 1
SUITE = "bookworm"
DEB_PACKAGES = ("python3.11", "libstdc++6")
PYTHON_VERSION = "3.11"
# pip does not widen a manylinux_2_28 request to older glibc tags by itself here; list them.
PLATFORMS = (
    "manylinux_2_28_aarch64",
    "manylinux_2_27_aarch64",
    "manylinux_2_17_aarch64",
    "manylinux2014_aarch64",
)
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
CACHE_ROOT = (
    Path(
        os.environ.get("EMOTION_EDGE_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "emotion-edge"
    )
    / "arm64-root"
)
PRUNE = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/locale",
    "usr/share/info",
    "usr/share/lintian",
)

# Per emulated CPU: the identification and feature flags a Linux kernel would list.
CPUINFO = {
    "cortex-a72": ("0xd08", "3", "fp asimd evtstrm crc32 cpuid"),
    "cortex-a76": (
        "0xd0b",
        "1",
        "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
        "asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
    ),
}


class PrepareError(RuntimeError):
    pass


def device_requirements() -> list[str]:
    """The device extra from pyproject.toml: the emulated root gets what a Pi would install."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return list(project["optional-dependencies"]["device"])


def cache_key(requirements: list[str]) -> str:
    inputs = {
        "recipe": RECIPE_VERSION,
        "suite": SUITE,
        "debs": DEB_PACKAGES,
        "python": PYTHON_VERSION,
        "platforms": PLATFORMS,
        "requirements": requirements,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def write_cpuinfo(root: Path, cpu: str, n_cpus: int = 4) -> None:
    if cpu not in CPUINFO:
        raise PrepareError(f"no cpuinfo template for QEMU_CPU={cpu!r}; known: {sorted(CPUINFO)}")
    part, rev, features = CPUINFO[cpu]
    block = (
        "processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {f}\nCPU implementer\t: 0x41\n"
        "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {p}\nCPU revision\t: {r}\n\n"
    )
    text = "".join(block.format(i=i, f=features, p=part, r=rev) for i in range(n_cpus))
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc" / "cpuinfo").write_text(text)


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-1500:]
        raise PrepareError(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd[:6])} ...\n{tail}"
        )
    return proc


def _apt_download(work: Path) -> list[Path]:
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        raise PrepareError("apt-get and dpkg are needed to assemble the arm64 root (Debian host)")
    if not KEYRING.is_file():
        raise PrepareError(f"{KEYRING} missing: apt-get install debian-archive-keyring")
    state = work / "apt"
    for d in ("lists/partial", "cache/archives/partial", "etc/sources.list.d", "etc/preferences.d"):
        (state / d).mkdir(parents=True, exist_ok=True)
    (state / "status").touch()
    (state / "etc" / "sources.list").write_text(
        f"deb [arch=arm64 signed-by={KEYRING}] http://deb.debian.org/debian {SUITE} main\n"
        f"deb [arch=arm64 signed-by={KEYRING}] http://deb.debian.org/debian {SUITE}-updates main\n"
        f"deb [arch=arm64 signed-by={KEYRING}] http://deb.debian.org/debian-security "
        f"{SUITE}-security main\n"
    )
    apt = [
        "apt-get",
        "-q",
        "-y",
        "-o",
        "APT::Architecture=arm64",
        "-o",
        "APT::Architectures::=arm64",
        "-o",
        f"Dir::State={state}",
        "-o",
        f"Dir::State::Lists={state / 'lists'}",
        "-o",
        f"Dir::State::status={state / 'status'}",
        "-o",
        f"Dir::Cache={state / 'cache'}",
        "-o",
        f"Dir::Etc::SourceList={state / 'etc' / 'sources.list'}",
        "-o",
        f"Dir::Etc::SourceParts={state / 'etc' / 'sources.list.d'}",
        "-o",
        f"Dir::Etc::Preferences={state / 'etc' / 'preferences'}",
        "-o",
        f"Dir::Etc::PreferencesParts={state / 'etc' / 'preferences.d'}",
        "-o",
        "APT::Install-Recommends=0",
        "-o",
        "APT::Install-Suggests=0",
        # private state: the host's dpkg/apt locks are not ours to take
        "-o",
        "Debug::NoLocking=1",
    ]
    _run([*apt, "update"], "apt-get update (arm64, private state)", timeout=600)
    # With an empty dpkg status, --download-only resolves the whole dependency closure.
    _run([*apt, "install", "--download-only", *DEB_PACKAGES], "apt-get download", timeout=900)
    debs = sorted((state / "cache" / "archives").glob("*.deb"))
    if not debs:
        raise PrepareError("apt resolved no .deb files")
    return debs


def _pip_target(root: Path, requirements: list[str]) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        "--target",
        str(root / "opt" / "site"),
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        PYTHON_VERSION,
        "--abi",
        "cp" + PYTHON_VERSION.replace(".", ""),
    ]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    _run([*cmd, *requirements], "pip install aarch64 wheels", timeout=900)


def prepare(force: bool = False, cache_root: Path = CACHE_ROOT, quiet: bool = False) -> Path:
    """Return a ready root (cached); build it when missing or forced."""
    reqs = device_requirements()
    key = cache_key(reqs)
    root = cache_root / key
    manifest = root / "emotion-edge-root.json"
    if manifest.is_file() and not force:
        return root
    say = (lambda m: None) if quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    started = time.time()
    work = cache_root / f".build-{key}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    new_root = work / "root"
    new_root.mkdir(parents=True)
    try:
        say(f"arm64 root: resolving {', '.join(DEB_PACKAGES)} for arm64 ({SUITE})")
        debs = _apt_download(work)
        say(f"arm64 root: extracting {len(debs)} .debs")
        for deb in debs:
            _run(["dpkg-deb", "-x", str(deb), str(new_root)], f"dpkg -x {deb.name}")
        for rel in PRUNE:
            shutil.rmtree(new_root / rel, ignore_errors=True)
        py = new_root / "usr" / "bin" / f"python{PYTHON_VERSION}"
        if not py.is_file():
            raise PrepareError(f"{py} missing after extraction")
        say(f"arm64 root: pip --target aarch64 wheels: {' '.join(reqs)}")
        _pip_target(new_root, reqs)
        write_cpuinfo(new_root, "cortex-a72")
        size = sum(
            f.stat().st_size for f in new_root.rglob("*") if f.is_file() and not f.is_symlink()
        )
        info = {
            "key": key,
            "recipe": RECIPE_VERSION,
            "suite": SUITE,
            "debs": [d.name for d in debs],
            "requirements": reqs,
            "platforms": list(PLATFORMS),
            "wheels": sorted(p.name for p in (new_root / "opt" / "site").glob("*.dist-info")),
            "size_bytes": size,
            "build_seconds": round(time.time() - started, 1),
            "python": f"/usr/bin/python{PYTHON_VERSION}",
            "site": "/opt/site",
        }
        (new_root / manifest.name).write_text(json.dumps(info, indent=2) + "\n")
        if root.exists():
            shutil.rmtree(root)
        new_root.rename(root)
        say(f"arm64 root ready: {root} ({size / 2**20:.0f} MiB, {info['build_seconds']} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.arm.prepare_aarch64",
        description="Assemble (or reuse from the cache) a Debian 12 arm64 userland with Python "
        "3.11 and the device's aarch64 wheels, for qemu-aarch64-static -L ROOT. "
        "Prints the root path.",
    )
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument(
        "--cache-root",
        type=Path,
        default=CACHE_ROOT,
        help=f"where prepared roots are kept (default {CACHE_ROOT})",
    )
    args = p.parse_args(argv)
    try:
        root = prepare(force=args.force, cache_root=args.cache_root)
    except PrepareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
