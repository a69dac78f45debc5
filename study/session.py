"""One participant's run: what the page reports, turned into markers at device-clock times.

The page converts every moment it reports (a media event's or a presented frame's
`performance.now()` time) to the device's clock with the offset it measured against this
server (`POST /api/clock`, the sample with the shortest round trip; its half round trip
bounds the error) and sends epoch seconds. This object adds who and what (session id,
participant, group) and hands complete marker payloads to the sink.

Session markers: `start` when the participant accepts the consent text (meta: study, consent
with the text's SHA-256, the researcher's metadata fields, the clip order and seed, the
clock offset and its round trip, the browser), `end` with tag and meta.status `completed`,
`aborted` (page closed, heartbeat lost, researcher) or `declined` (consent refused).
Stimulus markers: one start/end pair per stretch a clip was really playing; pauses and
stalls close the stretch (end tagged paused/stalled) and the resume opens a new one (start
tagged resumed); a clip that fails is a start/end pair at the failure time tagged `skipped`
with the error; ratings are their own stimulus `rating:<clip>` whose end carries the answers.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from emotion_edge_record.payloads import marker_payload
from emotion_edge_study.sinks import MarkerSink
from emotion_edge_study.studyfile import Clip, Study

log = logging.getLogger(__name__)
SOURCE = "emotion-edge-study"
STIMULUS_TAGS = frozenset({"paused", "stalled", "resumed", "skipped", "aborted", "rating"})
MAX_CLOCK_SKEW_S = 120.0  # a page time further from this clock is a bug, not a moment


class SessionError(Exception):
    """A request that does not fit the session's state (HTTP 409); bad values are
    ValueError (HTTP 400)."""


@dataclass
class Session:
    study: Study
    device_id: str
    session_id: str
    token: str
    participant: str
    group: str | None
    fields: dict[str, str]
    order: list[Clip]
    sink: MarkerSink
    created: float = field(default_factory=time.time)
    state: str = "created"  # created -> running -> ended
    status: str = ""  # completed | aborted | declined
    paused: bool = False
    last_seen: float = field(default_factory=time.monotonic)
    clock: dict = field(default_factory=dict)
    open_stimuli: dict[str, float] = field(default_factory=dict)
    markers: list[dict] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- helpers ---------------------------------------------------------------------------

    def _send(self, kind: str, action: str, label: str, ts: float, tags=(), meta=None) -> dict:
        m = marker_payload(
            self.device_id,
            kind,
            action,
            label,
            ts,
            session=self.session_id,
            participant=self.participant,
            group=self.group,
            tags=tuple(tags),
            meta=meta or {},
            source=SOURCE,
        )
        self.sink.send(m)
        self.markers.append(m)
        log.info("marker %s %s %s at %s %s", kind, action, label, m["at"], list(tags) or "")
        return m

    @staticmethod
    def _check_ts(ts) -> float:
        if isinstance(ts, bool) or not isinstance(ts, (int, float)):
            raise ValueError("ts must be epoch seconds")
        if abs(ts - time.time()) > MAX_CLOCK_SKEW_S:
            raise ValueError(f"ts {ts} is more than {MAX_CLOCK_SKEW_S:g} s from this clock")
        return float(ts)

    def config(self) -> dict:
        """What the page needs to run the session."""
        return {
            "session": self.session_id,
            "study": self.study.name,
            "participant": self.participant,
            "state": self.state,
            "consent": self.study.consent,
            "thanks": self.study.thanks,
            "fixation_s": self.study.fixation_s,
            "ratings": [r.as_dict() for r in self.study.ratings],
            "clips": [
                {"name": c.name, "url": f"/clips/{self.token}/{i}{c.path.suffix.lower()}"}
                for i, c in enumerate(self.order)
            ],
        }

    # -- what the page reports --------------------------------------------------------------

    def consent(self, accepted: bool, ts: float, clock: dict, user_agent: str) -> None:
        ts = self._check_ts(ts)
        with self._lock:
            if self.state != "created":
                raise SessionError(f"session {self.session_id} is {self.state}")
            self.clock = {
                "offset_s": float(clock.get("offset_s", 0.0)),
                "rtt_ms": float(clock.get("rtt_ms", -1.0)),
                "user_agent": str(user_agent)[:200],
            }
            consent = {
                "accepted": bool(accepted),
                "at": ts,
                "text_sha256": self.study.consent_sha256(),
            }
            meta = {
                "study": self.study.name,
                "status": "started",
                "consent": consent,
                "clock": self.clock,
            }
            if accepted:
                meta.update(
                    fields=self.fields,
                    order=[c.name for c in self.order],
                    order_kind=self.study.order,
                    seed=self.study.seed,
                )
            self.state = "running"
            self._send("session", "start", self.session_id, ts, meta=meta)
            if not accepted:  # nothing else about someone who declined is kept
                self._end_locked(ts, "declined")

    def stimulus(self, action: str, label: str, ts: float, tags=(), meta=None) -> None:
        ts = self._check_ts(ts)
        tags = [t for t in tags if t in STIMULUS_TAGS]
        if action not in ("start", "end"):
            raise ValueError("action must be start or end")
        names = {c.name for c in self.order}
        base = label[len("rating:") :] if label.startswith("rating:") else label
        if base not in names:
            raise ValueError(f"{label!r} is not a clip of this session")
        meta = {k: v for k, v in (meta or {}).items() if isinstance(k, str)}
        with self._lock:
            if self.state != "running":
                raise SessionError(f"session {self.session_id} is {self.state}")
            if action == "start":
                self.open_stimuli[label] = ts
            else:
                self.open_stimuli.pop(label, None)
            self._send("stimulus", action, label, ts, tags, meta)

    def heartbeat(self) -> dict:
        self.last_seen = time.monotonic()
        return {"state": self.state, "paused": self.paused}

    def set_paused(self, paused: bool) -> None:
        with self._lock:
            if self.state == "ended":
                raise SessionError(f"session {self.session_id} has ended")
            self.paused = bool(paused)

    def end(self, ts: float | None, status: str) -> bool:
        """End the session (False if it had ended already)."""
        if status not in ("completed", "aborted"):
            raise ValueError("status must be completed or aborted")
        ts = time.time() if ts is None else self._check_ts(ts)
        with self._lock:
            if self.state == "ended":
                return False
            if self.state == "created":  # closed before consent: nothing to record
                self.state, self.status = "ended", status
                return True
            self._end_locked(ts, status)
            return True

    def _end_locked(self, ts: float, status: str) -> None:
        for label, start in list(self.open_stimuli.items()):
            self._send("stimulus", "end", label, max(ts, start), ["aborted"], {"reason": status})
        self.open_stimuli.clear()
        self._send("session", "end", self.session_id, ts, [status], {"status": status})
        self.state, self.status = "ended", status
