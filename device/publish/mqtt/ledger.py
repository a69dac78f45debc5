"""The publisher's books: how many events went where, the errors of the moment, and the
log lines for drops and refusals (the first of a burst in full, then one summary a minute).

Every other part of the publisher writes here under the publisher's one lock, so `stats()`
and `ledger()` never see half an update.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)

SUMMARY_EVERY_S = 60.0  # drops and refusals after the first: one summary line a minute


class DeliveryLedger:
    """Counters, errors by kind, and rate-limited drop lines; see the module docstring."""

    def __init__(self, lock: threading.Condition):
        self.lock = lock
        self.counts = {
            "reconnects": 0,
            "events_published": 0,
            "events_acked": 0,
            "events_created": 0,
            "events_carried_over": 0,
            "events_rejected": 0,
            "events_dropped": 0,
            "takeovers": 0,
            "acked_no_subscriber": 0,
            "no_subscriber_retries": 0,
        }
        # one line per kind; stats()["last_error"] joins those that are set
        self.errors = {"connection": "", "storage": "", "broker": "", "sender": ""}
        # require_subscriber: events the broker answered "no matching subscribers" (queued)
        self.waiting_subscriber: set[str] = set()
        self._tally: dict[str, int] = {}  # "N dropped (why)" since the last summary line
        self._tally_next = 0.0

    def error_text(self) -> str:
        return "; ".join(e for e in self.errors.values() if e)

    def dropped(self, ids: list[str], what: str, first: str = "") -> None:
        """Queued events given up (spool or memory queue full): counted and noted."""
        with self.lock:
            self.counts["events_dropped"] += len(ids)
            self.waiting_subscriber.difference_update(ids)
            self.note(what, len(ids), example=ids[0], first=first)

    def note(
        self,
        what: str,
        n: int,
        example: str = "",
        first: str = "",
        log_first: bool = True,
    ) -> None:
        """Log the first of a burst in full, then one summary line a minute (`flush_tally`)."""
        now = time.monotonic()
        if log_first and not self._tally and now >= self._tally_next:
            self._tally_next = now + SUMMARY_EVERY_S
            text = first or f"{n} event(s) {what}, e.g. {example}"
            log.warning("MQTT: %s; more are summarized once a minute", text)
            return
        self._tally[what] = self._tally.get(what, 0) + n
        if not self._tally_next:
            self._tally_next = now + SUMMARY_EVERY_S

    def flush_tally(self, now: float, force: bool = False) -> None:
        with self.lock:
            if not self._tally or (now < self._tally_next and not force):
                return
            parts = ", ".join(f"{n} event(s) {what}" for what, n in self._tally.items())
            self._tally = {}
            self._tally_next = now + SUMMARY_EVERY_S
            c = self.counts
            totals = (c["events_dropped"], c["events_rejected"])
        log.warning(
            "MQTT: since the last report: %s (so far %d dropped, %d refused by the broker)",
            parts,
            *totals,
        )
