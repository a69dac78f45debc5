"""sd_notify over a real datagram socket, as systemd provides it."""

from __future__ import annotations

import os
import socket

import pytest
from emotion_edge.systemd_notify import SystemdNotifier


@pytest.fixture
def notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def _recv(sock) -> str:
    return sock.recv(4096).decode()


def test_ready_watchdog_stopping(notify_socket):
    path, sock = notify_socket
    n = SystemdNotifier(socket_path=path, watchdog_usec="2000000", watchdog_pid="")
    assert n.enabled and n.watchdog_interval_s == pytest.approx(1.0)
    assert n.ready("running")
    assert _recv(sock) == "READY=1\nSTATUS=running"
    assert n.watchdog(now=100.0)
    assert _recv(sock) == "WATCHDOG=1"
    # rate-limited to half the watchdog timeout
    assert not n.watchdog(now=100.5)
    assert n.watchdog(now=101.1)
    assert _recv(sock) == "WATCHDOG=1"
    assert n.stopping()
    assert _recv(sock) == "STOPPING=1"
    n.close()


def test_env_and_abstract_socket(monkeypatch):
    name = f"emotion-edge-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        monkeypatch.setenv("WATCHDOG_USEC", "10000000")
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
        n = SystemdNotifier()
        assert n.watchdog_interval_s == pytest.approx(5.0)
        assert n.ready()
        assert _recv(sock) == "READY=1"
    finally:
        sock.close()


def test_watchdog_for_another_pid_is_ignored(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert SystemdNotifier(socket_path="/nonexistent").watchdog_interval_s is None


def test_disabled_without_socket(monkeypatch, caplog):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = SystemdNotifier()
    assert not n.enabled
    assert not n.ready() and not n.watchdog() and not n.stopping()
    # a socket that vanished: a warning, never an exception in the main loop
    n2 = SystemdNotifier(socket_path="/nonexistent/notify.sock")
    assert not n2.ready()
    assert "sd_notify" in caplog.text
