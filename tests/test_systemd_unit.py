"""The systemd unit and the deployment scripts, checked with systemd's own tools (quick).

`systemd-analyze verify` and `systemd-analyze security --offline` read the real unit file;
the daemon is run under the same W^X restriction that the unit's MemoryDenyWriteExecute=
imposes (prctl PR_SET_MDWE, the kernel mechanism behind it) to show the setting does not
break LiteRT/OpenCV. The full install on an arm64 root is tests/test_install_arm64.py (slow).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SYSTEMD_DIR = REPO / "systemd"
UNIT = SYSTEMD_DIR / "emotion-edge.service"
SCRIPTS = ["install.sh", "make-bundle.sh", "build-rootfs.sh", "chroot-run.sh", "binfmt.sh"]
# Exposure reported by `systemd-analyze security` (0 = fully locked down, 10 = wide open).
# docs/deployment.md quotes the current figure; this bound catches a hardening regression.
MAX_EXPOSURE = 2.0

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze missing (apt-get install systemd)"
)


def _host_unit_dir() -> Path:
    for d in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if (d / "sysinit.target").exists():
            return d
    pytest.skip("host has no systemd unit directory (sysinit.target) for verify --root")


def make_verify_root(tmp_path: Path, unit_text: str) -> Path:
    """A root with the host's stock units, our unit and an executable ExecStart.

    verify checks that ExecStart exists and is executable; the real console script of the
    dev venv stands in for /opt/emotion-edge/bin/emotion-edge.
    """
    root = tmp_path / "root"
    shutil.copytree(_host_unit_dir(), root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/emotion-edge.service").write_text(unit_text)
    exe = root / "opt/emotion-edge/bin/emotion-edge"
    exe.parent.mkdir(parents=True)
    shutil.copy2(REPO / ".venv/bin/emotion-edge", exe)
    return root


def verify(root: Path) -> tuple[int, str]:
    proc = subprocess.run(
        [ANALYZE, "verify", f"--root={root}", "/etc/systemd/system/emotion-edge.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def unit_settings(text: str) -> dict[str, list[str]]:
    """KEY -> every value it is given (systemd keys may repeat), comments dropped."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


@needs_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path):
    if not (REPO / ".venv/bin/emotion-edge").exists():
        pytest.skip("dev venv without the emotion-edge console script")
    rc, out = verify(make_verify_root(tmp_path, UNIT.read_text()))
    # verify only warns (exit 0) on unknown keys or bad values: any output is a finding.
    assert rc == 0 and out == "", out


@needs_analyze
def test_verify_catches_a_broken_unit(tmp_path):
    """The check above can fail: a typo'd key and a missing ExecStart are both reported."""
    broken = UNIT.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes")
    rc, out = verify(make_verify_root(tmp_path, broken))
    assert "Unknown key" in out and "NoNewPrivilege" in out, out
    root = make_verify_root(tmp_path / "b", UNIT.read_text())
    (root / "opt/emotion-edge/bin/emotion-edge").unlink()
    rc, out = verify(root)
    assert rc != 0 and "not executable" in out, out


@needs_analyze
def test_security_exposure_is_low(tmp_path):
    root = make_verify_root(tmp_path, UNIT.read_text())
    proc = subprocess.run(
        [
            ANALYZE,
            "security",
            "--offline=true",
            f"--root={root}",
            "--no-pager",
            "/etc/systemd/system/emotion-edge.service",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = proc.stdout + proc.stderr
    m = re.search(r"Overall exposure level for emotion-edge\.service: ([0-9.]+) (\w+)", out)
    assert m, out[-2000:]
    exposure = float(m.group(1))
    print(f"systemd-analyze security: exposure {exposure} {m.group(2)}")
    assert exposure <= MAX_EXPOSURE, out[-4000:]


def test_unit_has_what_the_issue_asks_for():
    s = unit_settings(UNIT.read_text())
    one = {k: v[-1] for k, v in s.items()}
    assert one["Type"] == "notify"
    assert int(one["WatchdogSec"]) >= 10  # the daemon pings at half of it, while frames flow
    assert one["Restart"] in ("on-failure", "on-abnormal", "always")
    assert "network-online.target" in one["After"] and "network-online.target" in one["Wants"]
    assert one["DynamicUser"] == "yes" and "video" in one["SupplementaryGroups"].split()
    assert one["StateDirectory"] == "emotion-edge"
    assert one["ConfigurationDirectory"] == "emotion-edge"
    assert "/etc/emotion-edge/config.toml" in one["ExecStart"]
    assert s["LoadCredential"] and one["EnvironmentFile"].startswith("-/etc/emotion-edge/")
    assert one["DevicePolicy"] == "closed"
    allowed = " ".join(s["DeviceAllow"])
    for dev in ("char-video4linux", "char-media", "char-dma_heap"):
        assert dev in allowed
    for key, want in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
    ]:
        assert one[key] == want, key
    assert "AF_INET" in one["RestrictAddressFamilies"]
    assert one["MemoryMax"] and one["RestartPreventExitStatus"] == "2"
    # PrivateDevices= would hide the camera nodes that DeviceAllow= grants.
    assert one.get("PrivateDevices", "no") == "no"


def _mdwe_preexec() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_mdwe, pr_mdwe_refuse_exec_gain = 65, 1
    if libc.prctl(pr_set_mdwe, pr_mdwe_refuse_exec_gain, 0, 0, 0) != 0:
        os._exit(97)  # kernel < 6.3: no PR_SET_MDWE


def test_daemon_runs_under_memory_deny_write_execute(tmp_path, samples_dir, emotion_model):
    """MemoryDenyWriteExecute=yes would kill a JIT or W+X trampoline at start: run the real
    daemon (LiteRT + XNNPACK, OpenCV, detector, classifier) with the same kernel restriction."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("two_people.jpg", "obama.jpg"):
        shutil.copy(samples_dir / "face_recognition" / name, photos / name)
    probe = subprocess.run(
        [sys.executable, "-c", "import mmap; mmap.mmap(-1, 4096, prot=7)"],
        preexec_fn=_mdwe_preexec,
        capture_output=True,
        text=True,
    )
    if probe.returncode == 97:
        pytest.skip("kernel without PR_SET_MDWE (< 6.3)")
    assert probe.returncode != 0 and "PermissionError" in probe.stderr  # W+X really refused
    proc = subprocess.run(
        [
            str(REPO / ".venv/bin/emotion-edge"),
            "--dry-run",
            "--max-frames",
            "4",
            "--source",
            f"images:{photos}",
            "--model",
            str(emotion_model),
            "--log-level",
            "WARNING",
        ],
        preexec_fn=_mdwe_preexec,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    payloads = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert any(p.get("kind") == "appeared" for p in payloads), proc.stdout[-2000:]


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse_and_have_help(script):
    path = SYSTEMD_DIR / script
    assert os.access(path, os.X_OK), f"{script} not executable"
    subprocess.run(["bash", "-n", str(path)], check=True)
    proc = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stdout + proc.stderr
    if shutil.which("shellcheck"):
        sc = subprocess.run(
            ["shellcheck", "-S", "warning", str(path)], capture_output=True, text=True
        )
        assert sc.returncode == 0, sc.stdout


def test_install_sh_rejects_bad_options():
    proc = subprocess.run(
        [str(SYSTEMD_DIR / "install.sh"), "--frobnicate"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "unknown option" in proc.stderr
    proc = subprocess.run(
        [str(SYSTEMD_DIR / "install.sh"), "--purge"], capture_output=True, text=True
    )
    assert proc.returncode != 0 and ("--purge" in proc.stderr or "root" in proc.stderr)


@pytest.mark.host  # runs the real installer as root on this machine (apt, /opt, /etc)
def test_install_sh_refuses_a_bundle_without_the_project_wheel(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("install.sh checks for root first")
    (tmp_path / "wheels").mkdir()
    proc = subprocess.run(
        [str(SYSTEMD_DIR / "install.sh"), "--offline", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1 and "emotion_edge-*.whl" in proc.stderr, proc.stderr


def test_bundle_and_installer_pin_the_same_raspberry_pi_constraints():
    """picamera2 from apt needs NumPy 1.x: the bundle must download what install.sh allows."""
    pins = re.compile(r"'(numpy<2|opencv-python-headless<[0-9.]+)'")
    inst = set(pins.findall((SYSTEMD_DIR / "install.sh").read_text()))
    bundle = set(pins.findall((SYSTEMD_DIR / "make-bundle.sh").read_text()))
    assert inst and inst == bundle


# -- the kiosk screen (systemd/emotion-edge-kiosk.service, install.sh --kiosk) --------------------

KIOSK_UNIT = SYSTEMD_DIR / "emotion-edge-kiosk.service"


def _verify_kiosk(root: Path) -> tuple[int, str]:
    proc = subprocess.run(
        [ANALYZE, "verify", f"--root={root}", "/etc/systemd/system/emotion-edge-kiosk.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, (proc.stdout + proc.stderr).strip()


@needs_analyze
def test_kiosk_unit_passes_systemd_analyze_verify(tmp_path):
    """Beside the daemon's unit, with stand-ins for cage (apt, on the device) and the venv's
    python (its ExecStartPre waits for /healthz); without cage, verify says so."""
    if not (REPO / ".venv/bin/emotion-edge").exists():
        pytest.skip("dev venv without the emotion-edge console script")
    root = make_verify_root(tmp_path, UNIT.read_text())
    (root / "etc/systemd/system/emotion-edge-kiosk.service").write_text(KIOSK_UNIT.read_text())
    for exe in ("usr/bin/cage", "opt/emotion-edge/bin/python"):
        (root / exe).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(shutil.which("true"), root / exe)
    rc, out = _verify_kiosk(root)
    assert rc == 0 and out == "", out
    (root / "usr/bin/cage").unlink()
    rc, out = _verify_kiosk(root)
    assert rc != 0 and "/usr/bin/cage" in out, out


def test_kiosk_unit_has_what_the_issue_asks_for():
    import importlib.util

    from emotion_edge.config import load_config

    s = unit_settings(KIOSK_UNIT.read_text())
    one = {k: v[-1] for k, v in s.items()}
    assert one["User"] and one["User"] != "root" and "DynamicUser" not in one
    assert one["TTYPath"] == "/dev/tty1" and one["PAMName"]
    assert "getty@tty1.service" in one["Conflicts"]
    assert one["Restart"] == "always" and one["StartLimitIntervalSec"] == "0"
    for key in ("After", "Wants"):  # the page comes from the daemon
        assert "emotion-edge.service" in " ".join(s[key]).split(), key
    # waits for the daemon's /healthz with the helper the package ships
    pre = one["ExecStartPre"]
    assert "-m emotion_edge.web.healthcheck" in pre and "${KIOSK_URL}healthz" in pre
    assert importlib.util.find_spec("emotion_edge.web.healthcheck") is not None
    # cage runs exactly one app: Chromium in kiosk mode on the local page
    start = one["ExecStart"]
    assert start.startswith("/usr/bin/cage ") and " -- ${KIOSK_BROWSER} --kiosk " in start
    assert "--app=${KIOSK_URL}" in start
    env = " ".join(s["Environment"])
    web = load_config(None).web
    assert f"KIOSK_URL=http://127.0.0.1:{web.port}/" in env  # the [web] default, loopback
    assert one["EnvironmentFile"] == "-/etc/emotion-edge/kiosk.env"
    assert one["WantedBy"] == "multi-user.target"
    # the browser may only reach this machine
    assert one["IPAddressDeny"] == "any" and one["IPAddressAllow"] == "localhost"
    # V8 needs W+X pages: the daemon's MemoryDenyWriteExecute must not be copied here
    assert one.get("MemoryDenyWriteExecute", "no") == "no"


def test_install_sh_kiosk_is_offered_and_wired():
    text = (SYSTEMD_DIR / "install.sh").read_text()
    proc = subprocess.run(
        [str(SYSTEMD_DIR / "install.sh"), "--help"], capture_output=True, text=True, timeout=30
    )
    assert "--kiosk" in proc.stdout and "cage" in proc.stdout
    for needle in (
        "emotion-edge-kiosk.service",
        'upsert_key "$CONFIG" web enabled true',
        'upsert_key "$CONFIG" web host \'"127.0.0.1"\'',
        "do_uninstall_kiosk",
    ):
        assert needle in text, needle


def test_install_sh_upsert_key_edits_or_adds_web_keys(tmp_path):
    """The awk that --kiosk uses on an existing config: set a key, add a missing key or table."""
    text = (SYSTEMD_DIR / "install.sh").read_text()
    func = re.search(r"^upsert_key\(\) \{.*?^\}$", text, re.S | re.M).group(0)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[a]\nx = 1\n\n[web]\nenabled = false\nport = 9\n\n[logging]\nlevel = "INFO"\n')
    old = tmp_path / "old.toml"
    old.write_text("[a]\nx = 1\n")
    script = (
        'die() { echo "$*" >&2; exit 1; }\n'
        f"{func}\n"
        f'upsert_key "{cfg}" web enabled true\n'
        f'upsert_key "{cfg}" web host \'"127.0.0.1"\'\n'
        f'upsert_key "{old}" web enabled true\n'
    )
    subprocess.run(["bash", "-c", script], check=True, timeout=30)
    import tomllib

    new = tomllib.loads(cfg.read_text())
    assert new["web"] == {"enabled": True, "port": 9, "host": "127.0.0.1"}
    assert new["logging"] == {"level": "INFO"} and new["a"] == {"x": 1}
    assert tomllib.loads(old.read_text()) == {"a": {"x": 1}, "web": {"enabled": True}}
