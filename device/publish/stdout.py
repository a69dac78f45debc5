"""Where payloads go: stdout JSON lines (demo, --dry-run, piping) or MQTT.

Both implement `publish.base.Output`; this module is the stdout one.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from typing import IO

log = logging.getLogger(__name__)


class StdoutOutput:
    """One JSON object per line, written straight to the stream (not through logging, which
    goes to stderr), flushed per line so `| jq` or a supervisor sees events at once.

    Each payload names its kind in its "schema" field. With `include_state=False` (the default
    in a terminal demo it is on) state lines can be left out.
    """

    mode = "stdout"

    def __init__(
        self, stream: IO[str] | None = None, include_state: bool = True, include_stats: bool = True
    ):
        self._stream = stream if stream is not None else sys.stdout
        self.include_state = include_state
        self.include_stats = include_stats
        self._lock = threading.Lock()
        self.lines = 0
        self.events = 0
        self.broken = False  # the reader went away (EPIPE): the pipeline stops

    def start(self) -> None:
        pass

    def _write(self, payload: dict) -> None:
        if self.broken:
            return
        line = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        with self._lock:
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
                self.lines += 1
            except BrokenPipeError:
                self.broken = True
                log.warning("stdout reader went away; stopping")
            except ValueError:  # stream closed
                self.broken = True

    def publish_event(self, payload: dict) -> None:
        self._write(payload)
        self.events += 1

    def publish_state(self, payload: dict) -> None:
        if self.include_state:
            self._write(payload)

    def publish_stats(self, payload: dict) -> None:
        if self.include_stats:
            self._write(payload)

    def publish_timeline(self, payload: dict) -> None:
        self._write(payload)

    def healthy(self) -> bool:
        return True  # no background thread: writes happen on the caller's thread

    def delivery_summary(self) -> str:
        return ""

    def stats(self) -> dict:
        return {"lines_written": self.lines, "events_written": self.events, "broken": self.broken}

    def stop(self, timeout: float = 5.0) -> None:
        del timeout
        with self._lock:
            try:
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                pass
