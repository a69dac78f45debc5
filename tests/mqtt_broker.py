"""A real mosquitto broker for tests, on free loopback ports, configured in a temp folder.

    broker = Broker(tmp_path, users={"alice": "secret"}, tls=True)
    broker.start()            # waits until the port accepts connections
    broker.stop(kill=True)    # SIGKILL, like a crash
    broker.restart()          # same ports (clients reconnect to the same address)

TLS certificates (a CA, a server cert for 127.0.0.1/localhost, a client cert) are made at
test time with the `openssl` command line; nothing is checked in. With `persistence=True`
the broker saves its state after every change, so persistent subscriber sessions survive a
SIGKILL (tests that kill the broker need that to not lose messages on the subscriber side).
`acl="..."` installs an `acl_file` with that text (e.g. one that denies a topic), and
`connections(client_id)` counts the connections the broker logged for a client id. The
`mqtt_broker` fixture (registered in conftest.py) gives a started broker; pass options
with `@pytest.mark.parametrize("mqtt_broker", [{"tls": True}], indirect=True)`.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
OPENSSL = shutil.which("openssl")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certs(folder: Path, name: str = "test") -> Certs:
    """CA + server cert (SAN 127.0.0.1, localhost) + client cert, EC P-256 (fast to make)."""
    if OPENSSL is None:
        pytest.skip("openssl command not found (needed to make TLS test certificates)")
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([OPENSSL, *args], check=True, capture_output=True, cwd=d)

    def key(path: str) -> None:
        run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)

    key("ca.key")
    run(
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-days",
        "2",
        "-subj",
        f"/CN={name} test CA",
        "-out",
        "ca.crt",
    )
    for who, cn, ext in (
        (
            "server",
            "localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "emotion-edge-test-client", "extendedKeyUsage=clientAuth\n"),
    ):
        key(f"{who}.key")
        run("req", "-new", "-key", f"{who}.key", "-subj", f"/CN={cn}", "-out", f"{who}.csr")
        (d / f"{who}.ext").write_text(ext)
        run(
            "x509",
            "-req",
            "-in",
            f"{who}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            f"{who}.ext",
            "-out",
            f"{who}.crt",
        )
    return Certs(
        d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key"
    )


class Broker:
    """One mosquitto process; see the module docstring."""

    def __init__(
        self,
        workdir: Path,
        *,
        users: dict[str, str] | None = None,
        tls: bool = False,
        require_client_cert: bool = False,
        persistence: bool = True,
        acl: str | None = None,
    ):
        if MOSQUITTO is None:
            pytest.skip("mosquitto not installed (apt-get install mosquitto mosquitto-clients)")
        self.dir = Path(workdir) / f"mosquitto-{free_port()}"
        self.dir.mkdir(parents=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.users = dict(users or {})
        self.tls_port = free_port() if tls else None
        self.certs = make_certs(self.dir / "certs") if tls else None
        self.require_client_cert = require_client_cert
        self.persistence = persistence
        self.acl = acl
        self.conf = self.dir / "mosquitto.conf"
        self.log_path = self.dir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None
        self._write_conf()

    def _write_conf(self) -> None:
        lines = [
            "per_listener_settings false",
            # stay the user running the tests (as root, mosquitto would switch to `mosquitto`,
            # which cannot read the temp folder)
            f"user {getpass.getuser()}",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            f"listener {self.port} {self.host}",
        ]
        if self.tls_port is not None:
            c = self.certs
            lines += [
                f"listener {self.tls_port} {self.host}",
                f"cafile {c.ca}",
                f"certfile {c.server_cert}",
                f"keyfile {c.server_key}",
                f"require_certificate {'true' if self.require_client_cert else 'false'}",
            ]
        if self.users:
            pw = self.dir / "passwd"
            pw.touch(mode=0o600)
            for user, password in self.users.items():
                if MOSQUITTO_PASSWD is None:
                    pytest.skip("mosquitto_passwd not found (apt-get install mosquitto)")
                subprocess.run(
                    [MOSQUITTO_PASSWD, "-b", str(pw), user, password],
                    check=True,
                    capture_output=True,
                )
            lines += [f"password_file {pw}", "allow_anonymous false"]
        else:
            lines += ["allow_anonymous true"]
        if self.acl is not None:
            acl = self.dir / "acl"
            acl.write_text(self.acl.strip() + "\n")
            lines += [f"acl_file {acl}"]
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.dir}/",
                "autosave_on_changes true",
                "autosave_interval 1",
            ]
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> Broker:
        assert not self.running, "broker already running"
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        ports = [p for p in (self.port, self.tls_port) if p is not None]
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(
                    f"mosquitto exited with {self.proc.returncode}: {err}\n{self.log_text()}"
                )
            if all(_accepts(self.host, p) for p in ports):
                return self
            time.sleep(0.02)
        self.stop(kill=True)
        raise RuntimeError(
            f"mosquitto did not listen on {ports} within {timeout} s\n{self.log_text()}"
        )

    def stop(self, kill: bool = False, timeout: float = 5.0) -> None:
        """SIGTERM (clean) or SIGKILL (crash); waits for the process to end."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def restart(self, kill: bool = False) -> Broker:
        self.stop(kill=kill)
        return self.start()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def connections(self, client_id: str) -> int:
        """How many times the broker logged `New client connected ... as <client_id>`."""
        return sum(
            1
            for line in self.log_text().splitlines()
            if "New client connected" in line and f" as {client_id} " in line
        )


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture
def mqtt_broker(request, tmp_path):
    """A started mosquitto on a free loopback port; options via indirect parametrization."""
    broker = Broker(tmp_path, **getattr(request, "param", {}))
    broker.start()
    yield broker
    broker.stop()
