"""A recording host (issue 42): systemd/emotion-edge-record.service checked with systemd's own
tools, systemd/mosquitto-recorder.conf run by a real mosquitto, and the pieces of
`install.sh --recorder` that can run without root or a network (the full install is the same
code path as the daemon's, tests/test_install_arm64.py)."""

from __future__ import annotations

import getpass
import re
import shutil
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from mqtt_broker import MOSQUITTO, MOSQUITTO_PASSWD, _accepts, free_port
from test_systemd_unit import ANALYZE, REPO, needs_analyze, unit_settings

SYSTEMD_DIR = REPO / "systemd"
UNIT = SYSTEMD_DIR / "emotion-edge-record.service"
MOSQ_CONF = SYSTEMD_DIR / "mosquitto-recorder.conf"
INSTALL = SYSTEMD_DIR / "install.sh"


def verify_root(tmp_path: Path) -> Path:
    host = next(
        (d for d in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if d.is_dir()),
        None,
    )
    if host is None or not (host / "sysinit.target").exists():
        pytest.skip("host has no systemd unit directory (sysinit.target) for verify --root")
    root = tmp_path / "root"
    shutil.copytree(host, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/emotion-edge-record.service").write_text(UNIT.read_text())
    exe = root / "opt/emotion-edge/bin/emotion-edge-record"
    exe.parent.mkdir(parents=True)
    shutil.copy2(shutil.which("true"), exe)
    return root


@needs_analyze
def test_record_unit_verifies_and_is_hardened(tmp_path):
    root = verify_root(tmp_path)
    unit = "/etc/systemd/system/emotion-edge-record.service"
    p = subprocess.run(
        [ANALYZE, "verify", f"--root={root}", unit], capture_output=True, text=True, timeout=60
    )
    out = (p.stdout + p.stderr).strip()
    assert p.returncode == 0 and out == "", out
    p = subprocess.run(
        [ANALYZE, "security", "--offline=true", f"--root={root}", "--no-pager", unit],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for emotion-edge-record\.service: ([0-9.]+)", p.stdout)
    assert m, (p.stdout + p.stderr)[-2000:]
    print(f"systemd-analyze security emotion-edge-record: {m.group(1)}")
    assert float(m.group(1)) <= 2.0


def test_record_unit_has_what_the_issue_asks_for():
    s = unit_settings(UNIT.read_text())
    one = {k: v[-1] for k, v in s.items()}
    assert one["DynamicUser"] == "yes" and one["StateDirectory"] == "emotion-edge-record"
    assert one["Restart"] == "always" and one["RestartPreventExitStatus"] == "2"
    assert one["EnvironmentFile"] == "/etc/emotion-edge/record.env"
    start = one["ExecStart"]
    assert start.startswith("/opt/emotion-edge/bin/emotion-edge-record --db ")
    # no secret and no fixed client id on the command line (the default is per database)
    assert "password" not in start.lower() and "--client-id" not in start
    assert "mosquitto.service" in one["After"]


def _passwd(path: Path, user: str, password: str) -> None:
    if MOSQUITTO_PASSWD is None:
        pytest.skip("mosquitto_passwd not found")
    path.touch(mode=0o600)
    subprocess.run(
        [MOSQUITTO_PASSWD, str(path), user],
        input=f"{password}\n{password}\n",
        text=True,
        check=True,
        capture_output=True,
    )


def test_recommended_mosquitto_conf_runs_and_refuses_anonymous(tmp_path):
    """The shipped file, included as on Debian (a main file with persistence_location and
    include_dir), with the test's port and password file in place of the system paths."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto not installed")
    port = free_port()
    passwd = tmp_path / "emotion-edge.passwd"
    _passwd(passwd, "recorder", "s3cret")
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    text = MOSQ_CONF.read_text()
    assert "persistence true" in text and "max_queued_messages" in text
    text = text.replace("listener 1883", f"listener {port} 127.0.0.1")
    text = text.replace("/etc/mosquitto/emotion-edge.passwd", str(passwd))
    (conf_d / "emotion-edge.conf").write_text(text)
    main = tmp_path / "mosquitto.conf"
    main.write_text(
        f"user {getpass.getuser()}\npersistence_location {tmp_path}/\n"
        f"log_dest file {tmp_path}/mosquitto.log\ninclude_dir {conf_d}\n"
    )
    proc = subprocess.Popen([MOSQUITTO, "-c", str(main)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not _accepts("127.0.0.1", port):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.05)

        def connect(user: str | None, password: str | None) -> int:
            c = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
            if user:
                c.username_pw_set(user, password)
            codes = []
            c.on_connect = lambda cl, u, f, rc, p: codes.append(rc.value)
            c.connect("127.0.0.1", port)
            deadline = time.monotonic() + 5
            while not codes and time.monotonic() < deadline:
                c.loop(0.1)
            c.disconnect()
            return codes[0] if codes else -1

        assert connect("recorder", "s3cret") == 0
        assert connect(None, None) != 0  # anonymous refused
        assert connect("recorder", "wrong") != 0
    finally:
        proc.terminate()
        proc.wait(10)
    # a clean stop saves the state: persistence is on
    assert (tmp_path / "mosquitto.db").is_file()


def _install_functions() -> str:
    text = INSTALL.read_text()
    out = []
    for name in ("split_db_url", "sq"):
        m = re.search(rf"^{name}\(\) \{{\n.*?^\}}\n", text, re.S | re.M)
        assert m, name
        out.append(m.group(0))
    return 'die() { echo "die: $*"; exit 1; }\n' + "".join(out)


@pytest.mark.parametrize(
    ("url", "bare", "password"),
    [
        (
            "postgresql://rec:p%40ss%2Fw@db.lan:5432/emo",
            "postgresql://rec@db.lan:5432/emo",
            "p@ss/w",
        ),
        ("postgresql://rec@db.lan/emo", "postgresql://rec@db.lan/emo", ""),
        ("/var/lib/emotion-edge-record/recording.sqlite", None, ""),
    ],
)
def test_install_splits_the_database_password_off_the_url(url, bare, password):
    script = _install_functions() + f'split_db_url "{url}"\n'
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split("\n")
    assert lines[0] == (bare or url) and lines[1] == password


def test_install_sh_offers_recorder_and_checks_its_options():
    p = subprocess.run([str(INSTALL), "--help"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "--recorder" in p.stdout and "--db URL" in p.stdout
    p = subprocess.run(
        [str(INSTALL), "--db", "x.sqlite"], capture_output=True, text=True, timeout=30
    )
    assert p.returncode != 0 and (
        "--db only goes with --recorder" in p.stderr or "root" in p.stderr
    )
    text = INSTALL.read_text()
    # the MQTT password goes to mosquitto_passwd through stdin, never as an argument
    code = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    assert "mosquitto_passwd -b" not in code
    assert "install -m 0600" in text and "PGPASSWORD" in text
