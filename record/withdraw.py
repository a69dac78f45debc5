"""The right to withdraw: remove every row of one participant from a recording.

A participant's rows are their session markers (the participant code is on them), every
marker of those sessions (by session id, and by time on that device: a stimulus marker sent
without a session id still falls inside the session), and everything the camera recorded on
that device while a session of theirs ran: events, timeline samples and their faces. A
session runs from its start marker to its end marker; one without an end runs to the next
session's start on that device, or to its own last marker. All in one transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from emotion_edge_record.store import Store, events, markers, samples, timeline_faces
from sqlalchemy import and_, delete, or_, select

log = logging.getLogger(__name__)


@dataclass
class Withdrawal:
    participant: str
    sessions: list[str] = field(default_factory=list)
    deleted: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"participant": self.participant, "sessions": self.sessions, **self.deleted}


def _spans(conn, code: str) -> dict[tuple[str, str], tuple[float, float]]:
    """(device, session id) -> (start, end) of every session of this participant."""
    rows = conn.execute(
        select(markers.c.device_id, markers.c.label, markers.c.action, markers.c.ts).where(
            markers.c.kind == "session", markers.c.participant == code
        )
    ).all()
    found: dict[tuple[str, str], dict[str, float]] = {}
    for dev, label, action, ts in rows:
        d = found.setdefault((dev, label), {})
        d[action] = min(ts, d.get(action, ts)) if action == "start" else max(ts, d.get(action, ts))
    spans = {}
    for (dev, label), d in found.items():
        own = conn.execute(
            select(markers.c.ts).where(markers.c.device_id == dev, markers.c.session == label)
        ).scalars()
        own_ts = list(own)
        start = d.get("start", min(own_ts, default=d.get("end")))
        end = d.get("end")
        if end is None:
            nxt = conn.execute(
                select(markers.c.ts)
                .where(
                    markers.c.device_id == dev,
                    markers.c.kind == "session",
                    markers.c.action == "start",
                    markers.c.label != label,
                    markers.c.ts > start,
                )
                .order_by(markers.c.ts)
                .limit(1)
            ).scalar()
            # up to, not including, the next session's start
            end = nxt - 1e-6 if nxt is not None else max(own_ts, default=start)
        spans[(dev, label)] = (start, end)
    return spans


def delete_participant(store: Store, code: str) -> Withdrawal:
    """Delete every row of participant `code` (see the module docstring)."""
    if not code or not code.strip():
        raise ValueError("--delete-participant needs a participant code")
    out = Withdrawal(code)
    with store.engine.begin() as conn:
        spans = _spans(conn, code)
        out.sessions = sorted({label for _, label in spans})
        by_time = [
            (dev, start, end) for (dev, _), (start, end) in spans.items() if start is not None
        ]

        def in_spans(table, ts_col):
            return or_(
                *[and_(table.c.device_id == d, ts_col >= s, ts_col <= e) for d, s, e in by_time]
            )

        counts = {}
        if by_time:
            for name, table, col in (
                ("timeline_faces", timeline_faces, timeline_faces.c.captured_ts),
                ("samples", samples, samples.c.captured_ts),
                ("events", events, events.c.captured_ts),
            ):
                counts[name] = conn.execute(delete(table).where(in_spans(table, col))).rowcount
        marker_match = [markers.c.participant == code]
        if out.sessions:
            marker_match.append(markers.c.session.in_(out.sessions))
        if by_time:
            marker_match.append(in_spans(markers, markers.c.ts))
        counts["markers"] = conn.execute(delete(markers).where(or_(*marker_match))).rowcount
        out.deleted = {k: max(0, v) for k, v in counts.items()}
    log.info(
        "participant %s withdrawn: %d session(s), rows deleted %s",
        code,
        len(out.sessions),
        out.deleted,
    )
    return out
