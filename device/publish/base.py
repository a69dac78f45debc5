"""The seam between the pipeline and wherever payloads go (stdout, MQTT)."""

from __future__ import annotations

import re
from typing import Protocol

_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def safe_id(text: str) -> str:
    """`text` with every character a file name or a Home Assistant id may not hold as `_`."""
    return _UNSAFE_ID_CHARS.sub("_", text)


class Output(Protocol):
    """What the pipeline calls; `broken` True means the output is gone for good (stdout's
    reader left) and the pipeline stops."""

    @property
    def broken(self) -> bool: ...

    def start(self) -> None: ...
    def publish_event(self, payload: dict) -> None: ...
    def publish_state(self, payload: dict) -> None: ...
    def publish_stats(self, payload: dict) -> None: ...
    def publish_timeline(self, payload: dict) -> None: ...  # emotion-edge/timeline/1
    def stats(self) -> dict: ...
    # False when a background thread died or is stuck (then no systemd watchdog ping)
    def healthy(self) -> bool: ...
    # one line for the final log: where every event went ("" when there is nothing to say)
    def delivery_summary(self) -> str: ...
    def stop(self, timeout: float = 5.0) -> None: ...
