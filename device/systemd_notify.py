"""sd_notify over $NOTIFY_SOCKET with a plain datagram socket (no libsystemd dependency).

Without NOTIFY_SOCKET (not under systemd, or Type=simple) every call is a no-op. The daemon
sends READY=1 once the pipeline runs, WATCHDOG=1 from the main loop only while frames flow (so
systemd restarts a daemon whose camera stays dead or whose loop hangs), and STOPPING=1 on
shutdown.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class SystemdNotifier:
    def __init__(
        self,
        socket_path: str | None = None,
        watchdog_usec: str | None = None,
        watchdog_pid: str | None = None,
    ):
        path = os.environ.get("NOTIFY_SOCKET", "") if socket_path is None else socket_path
        if path.startswith("@"):  # abstract namespace
            path = "\0" + path[1:]
        self._path = path
        self._sock: socket.socket | None = None
        usec = os.environ.get("WATCHDOG_USEC", "") if watchdog_usec is None else watchdog_usec
        pid = os.environ.get("WATCHDOG_PID", "") if watchdog_pid is None else watchdog_pid
        self.watchdog_interval_s: float | None = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            # ping at half the timeout, as sd_watchdog_enabled(3) advises
            self.watchdog_interval_s = int(usec) / 1e6 / 2
        self._last_ping = 0.0
        self.sent: list[str] = []  # kept short; handy when debugging a unit

    @property
    def enabled(self) -> bool:
        return bool(self._path)

    def notify(self, message: str) -> bool:
        if not self._path:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto(message.encode(), self._path)
        except OSError as exc:
            log.warning("sd_notify %r to %s failed: %s", message, self._path.lstrip("\0"), exc)
            return False
        self.sent = (self.sent + [message])[-20:]
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog(self, now: float | None = None) -> bool:
        """WATCHDOG=1, rate-limited to the interval systemd asked for (5 s if it did not say)."""
        if not self._path:
            return False
        now = time.monotonic() if now is None else now
        interval = self.watchdog_interval_s or 5.0
        if now - self._last_ping < interval:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
