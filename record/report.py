"""`emotion-edge-report`: CSV files, PNG plots and one self-contained HTML page from a recording.

Reads a recorder database (SQLite or PostgreSQL, the same queries) and writes into one folder:

  timeline.csv   one row per face per timeline sample: time, device, session (with its
                 participant and group), stimulus, seconds since the session start, face id,
                 the photo's file name (photo folders), every label's probability, the top
                 emotion and its confidence
  events.csv     one row per event, with the session and stimulus it fell in
  *.png          per session a stacked emotion timeline with the stimulus spans shaded; per
                 stimulus the mean emotion profile across sessions (error bars: standard
                 error over sessions); the groups compared where sessions carry a group; per
                 device the mood over the day (mean probabilities by hour)
  report.html    all of it on one page, the plots embedded (no other file needed)

Sessions and stimuli are spans built from the markers by time, per device: a session runs
from its start marker to its end marker (or the next session start); a stimulus from its
start to its end marker with the same label (or the end of its session). A row belongs to
the span that contains its time (the latest started one where stimuli overlap). Rows are
streamed from the database, so a long recording is not held in memory.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import logging
import math
import os
import shutil
import tempfile
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from emotion_edge.track.events import iso_utc
from emotion_edge_record.analysis.options import SMALL_N, StatsOptions
from emotion_edge_record.analysis.plots import group_stimulus_plot
from emotion_edge_record.payloads import LABELS
from emotion_edge_record.store import (
    Store,
    StoreError,
    _short,
    events,
    markers,
    samples,
    timeline_faces,
)
from emotion_edge_record.timebase import NO_CLOCK_END, NO_CLOCK_EPOCH
from sqlalchemy import and_, func, select
from sqlalchemy import exc as sa_exc

log = logging.getLogger(__name__)
NO_SESSION = ""
MAX_SESSION_PLOTS = 60
MAX_DEVICE_PLOTS = 30
BINS_PER_SESSION = 400
# plot colours per label, fixed so every figure reads the same
COLORS = {
    "angry": "#d62728",
    "disgust": "#8c564b",
    "fear": "#9467bd",
    "happy": "#f2c200",
    "sad": "#1f77b4",
    "surprise": "#ff7f0e",
    "neutral": "#9a9a9a",
}
PROB_COLS = [f"p_{lab}" for lab in LABELS]


@dataclass(frozen=True)
class Filters:
    devices: tuple[str, ...] = ()
    sessions: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None


@dataclass
class Span:
    device: str
    kind: str  # session | stimulus
    label: str
    start: float
    end: float = math.inf
    session: str | None = None
    participant: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


@dataclass
class ReportResult:
    out: Path
    html: Path | None
    counts: dict[str, int]
    pngs: list[Path]
    warnings: list[str] = field(default_factory=list)


# -- spans from markers -------------------------------------------------------------------------


def build_spans(rows) -> tuple[dict[str, list[Span]], dict[str, list[Span]]]:
    """(sessions, stimuli) per device from marker rows (any order)."""
    sessions: dict[str, list[Span]] = defaultdict(list)
    stimuli: dict[str, list[Span]] = defaultdict(list)
    by_dev: dict[str, list] = defaultdict(list)
    for r in rows:
        by_dev[r.device_id].append(r)
    for dev, ms in by_dev.items():
        ms.sort(key=lambda r: (r.ts, r.action != "end"))  # an end before a start at one time
        open_session: Span | None = None
        open_stim: dict[str, Span] = {}
        for m in ms:
            tags = json.loads(m.tags) if m.tags else []
            meta = _meta(m)
            if m.kind == "session":
                if m.action == "start":
                    if open_session is not None:
                        open_session.end = m.ts
                    open_session = Span(
                        dev,
                        "session",
                        m.label,
                        m.ts,
                        session=m.label,
                        participant=m.participant,
                        group=m.group_name,
                        tags=tags,
                        meta=meta,
                    )
                    sessions[dev].append(open_session)
                elif open_session is not None and open_session.label == m.label:
                    open_session.end = m.ts
                    open_session.participant = open_session.participant or m.participant
                    open_session.group = open_session.group or m.group_name
                    open_session.meta = {**meta, **open_session.meta}
                    open_session = None
                elif open_session is None and not any(
                    s.label == m.label for s in sessions[dev]
                ):  # an end whose start was not recorded: a session up to here
                    sessions[dev].append(
                        Span(
                            dev,
                            "session",
                            m.label,
                            -math.inf,
                            m.ts,
                            m.label,
                            m.participant,
                            m.group_name,
                            tags,
                            meta,
                        )
                    )
            else:
                if m.action == "start":
                    prev = open_stim.get(m.label)
                    if prev is not None:
                        prev.end = m.ts
                    span = Span(dev, "stimulus", m.label, m.ts, session=m.session, tags=tags)
                    open_stim[m.label] = span
                    stimuli[dev].append(span)
                else:
                    span = open_stim.pop(m.label, None)
                    if span is not None:
                        span.end = m.ts
        # a stimulus left open ends with the session it started in
        for span in open_stim.values():
            s = _find(sessions.get(dev, []), span.start)
            if s is not None:
                span.end = s.end
        sessions[dev].sort(key=lambda s: s.start)
        stimuli[dev].sort(key=lambda s: s.start)
    return dict(sessions), dict(stimuli)


def _meta(m) -> dict:
    raw = getattr(m, "meta", None)
    try:
        d = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return d if isinstance(d, dict) else {}


def session_overlaps(rows) -> list[tuple[str, str, str, float]]:
    """(device, session a, session b, seconds) for every two sessions of one device whose
    start-end marker pairs overlap: a row in the overlap cannot be told apart, so the later
    start wins in the report and the overlap is reported, never silently cut."""
    pairs: dict[tuple[str, str], list[float]] = {}
    for m in rows:
        if m.kind != "session":
            continue
        lo_hi = pairs.setdefault((m.device_id, m.label), [math.inf, -math.inf])
        if m.action == "start":
            lo_hi[0] = min(lo_hi[0], m.ts)
        else:
            lo_hi[1] = max(lo_hi[1], m.ts)
    by_dev: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for (dev, label), (lo, hi) in pairs.items():
        if math.isfinite(lo) and math.isfinite(hi) and hi > lo:
            by_dev[dev].append((lo, hi, label))
    out = []
    for dev, spans in by_dev.items():
        spans.sort()
        for i, (_lo, hi, a) in enumerate(spans):
            for lo2, hi2, b in spans[i + 1 :]:
                if lo2 >= hi:
                    break
                out.append((dev, a, b, round(min(hi, hi2) - lo2, 3)))
    return out


def _find(spans: list[Span], ts: float) -> Span | None:
    """The latest-started span containing ts (spans sorted by start)."""
    i = bisect_right([s.start for s in spans], ts) - 1
    while i >= 0:
        s = spans[i]
        if s.start <= ts < s.end:
            return s
        i -= 1
    return None


class SpanIndex:
    """Fast lookups of (device, ts) -> span."""

    def __init__(self, spans: dict[str, list[Span]]):
        self.spans = spans
        self.starts = {d: [s.start for s in ss] for d, ss in spans.items()}
        self._max_len = {
            d: max((s.end - s.start for s in ss), default=0) for d, ss in spans.items()
        }

    def find(self, device: str, ts: float) -> Span | None:
        ss = self.spans.get(device)
        if not ss:
            return None
        i = bisect_right(self.starts[device], ts) - 1
        while i >= 0:
            s = ss[i]
            if s.start <= ts < s.end:
                return s
            if ts - s.start > self._max_len[device]:
                return None
            i -= 1
        return None


# -- aggregation --------------------------------------------------------------------------------


class _Acc:
    """Sum of probability vectors and their count."""

    __slots__ = ("sum", "n")

    def __init__(self) -> None:
        self.sum = np.zeros(len(LABELS))
        self.n = 0

    def add(self, probs: np.ndarray) -> None:
        self.sum += probs
        self.n += 1

    def mean(self) -> np.ndarray:
        return self.sum / self.n if self.n else np.zeros(len(LABELS))


@dataclass
class _SessionPlot:
    span: Span
    t0: float
    t1: float
    width: float
    bins: dict[int, _Acc] = field(default_factory=lambda: defaultdict(_Acc))


def _session_key(span: Span | None, device: str) -> tuple[str, str]:
    return (device, span.label if span is not None else NO_SESSION)


# the leading columns of timeline.csv and events.csv: when, where, and in which session/stimulus
CONTEXT_COLUMNS = ("time", "ts", "device", "session", "participant", "group", "stimulus")


@dataclass(frozen=True)
class _RowContext:
    device: str
    ts: float
    session: Span | None
    stimulus: Span | None

    @classmethod
    def of(cls, device: str, ts: float, sessions: SpanIndex, stimuli: SpanIndex) -> _RowContext:
        return cls(device, ts, sessions.find(device, ts), stimuli.find(device, ts))

    @property
    def label(self) -> str:
        return self.session.label if self.session is not None else NO_SESSION

    def cells(self) -> list[str]:
        sess = self.session
        return [
            iso_utc(self.ts),
            f"{self.ts:.3f}",
            self.device,
            self.label,
            (sess.participant or "") if sess else "",
            (sess.group or "") if sess else "",
            self.stimulus.label if self.stimulus else "",
        ]


# -- the report ---------------------------------------------------------------------------------


def _where(table, ts_col, f: Filters):
    cond = []
    if f.devices:
        cond.append(table.c.device_id.in_(f.devices))
    if f.since is not None:
        cond.append(ts_col >= f.since)
    if f.until is not None:
        cond.append(ts_col < f.until)
    return and_(*cond) if cond else None


def _stream(conn, stmt, chunk: int = 5000):
    res = conn.execution_options(stream_results=True, yield_per=chunk).execute(stmt)
    yield from res


TIMELINE_COLUMNS = [
    *CONTEXT_COLUMNS,
    "session_offset_s",
    "stimulus_offset_s",
    "face_id",
    "main_face",
    "file",
    "box_x",
    "box_y",
    "box_w",
    "box_h",
    *PROB_COLS,
    "emotion",
    "confidence",
]
SESSION_COLUMNS = [
    "device",
    "session",
    "participant",
    "group",
    "start",
    "end",
    "start_ts",
    "end_ts",
    "duration_s",
    "face_rows",
    "main_face_rows",
    "tags",
    "overlaps",
]


def make_report(
    store: Store,
    out: Path,
    filters: Filters = Filters(),
    *,
    utc: bool = False,
    plots: bool = True,
    options: StatsOptions | None = None,
) -> ReportResult:
    """Write the report into a fresh folder beside `out` that replaces `out` only once every
    file is written: a damaged database leaves the earlier report (or nothing) in place."""
    out = Path(out)
    tmp = _staging_dir(out)
    try:
        try:
            res = _make_report(store, tmp, filters, utc, plots, options or StatsOptions())
        except sa_exc.DBAPIError as exc:
            raise StoreError(
                f"cannot read the recording: {_short(exc)} (the database is damaged?); "
                "no report written"
            ) from None
        _swap(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ReportResult(
        out,
        out / res.html.name if res.html else None,
        res.counts,
        [out / p.name for p in res.pngs],
        res.warnings,
    )


REPORT_MARKERS = ("report.html", "timeline.csv")


def _staging_dir(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not any((out / m).exists() for m in REPORT_MARKERS):
        raise ValueError(
            f"--out {out}: a folder holding other files (it would be replaced): "
            "give a new folder or an earlier report's"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


def _swap(tmp: Path, out: Path) -> None:
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.rename(out, old / out.name)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


@dataclass
class _Photo:
    device: str
    file: str
    ts: float
    faces: int
    session: str = ""
    emotions: list[str] = field(default_factory=list)


def _make_report(
    store: Store, out: Path, filters: Filters, utc: bool, plots: bool, opts: StatsOptions
) -> ReportResult:
    tz = timezone.utc if utc else datetime.now().astimezone().tzinfo
    warn: list[str] = []
    with store.engine.connect() as conn:
        mq = select(markers)
        if filters.devices:
            mq = mq.where(markers.c.device_id.in_(filters.devices))
        marker_rows = conn.execute(mq).all()
        sessions, stimuli = build_spans(marker_rows)
        overlaps = session_overlaps(marker_rows)
        for dev, a, b, sec in overlaps:
            warn.append(
                f"device {dev}: sessions {a!r} and {b!r} overlap by {sec:.3f} s; the rows in "
                f"the overlap are given to {b!r} (record each file under its own device id, "
                "or give --start)"
            )
        s_index, st_index = SpanIndex(sessions), SpanIndex(stimuli)
        # data range per device: the ends of open sessions in plots
        w = _where(timeline_faces, timeline_faces.c.captured_ts, filters)
        q = select(
            timeline_faces.c.device_id,
            func.min(timeline_faces.c.captured_ts),
            func.max(timeline_faces.c.captured_ts),
        ).group_by(timeline_faces.c.device_id)
        if w is not None:
            q = q.where(w)
        ranges = {d: (lo, hi) for d, lo, hi in conn.execute(q)}
        photos = _photos(conn, filters, s_index)

        plots_by_session: dict[tuple[str, str], _SessionPlot] = {}
        stim_session: dict[tuple[str, tuple[str, str]], _Acc] = defaultdict(_Acc)
        session_all: dict[tuple[str, str], _Acc] = defaultdict(_Acc)
        session_stim: dict[tuple[str, str], _Acc] = defaultdict(_Acc)
        face_rows: dict[tuple[str, str], int] = defaultdict(int)
        hours: dict[str, dict[int, _Acc]] = defaultdict(lambda: defaultdict(_Acc))
        session_info: dict[tuple[str, str], Span | None] = {}
        n_rows = 0

        def session_plot(key, span: Span | None, device: str) -> _SessionPlot:
            sp = plots_by_session.get(key)
            if sp is None:
                lo, hi = ranges.get(device, (0.0, 0.0))
                t0 = span.start if span is not None and math.isfinite(span.start) else lo
                t1 = span.end if span is not None and math.isfinite(span.end) else hi
                t1 = max(t1, t0 + 1e-3)
                sp = plots_by_session[key] = _SessionPlot(
                    span or Span(device, "session", NO_SESSION, lo, hi),
                    t0,
                    t1,
                    max((t1 - t0) / BINS_PER_SESSION, 1e-3),
                )
            return sp

        cols = [timeline_faces.c[c] for c in ("captured_ts", "device_id", "face_id", "file_name")]
        boxes = [timeline_faces.c[c] for c in ("box_x", "box_y", "box_w", "box_h")]
        tq = select(
            *cols,
            *boxes,
            *[timeline_faces.c[c] for c in PROB_COLS],
            timeline_faces.c.emotion,
            timeline_faces.c.confidence,
        )
        if w is not None:
            tq = tq.where(w)
        tq = tq.order_by(
            timeline_faces.c.device_id, timeline_faces.c.captured_ts, timeline_faces.c.face_id
        )
        n_p = len(LABELS)
        with open(out / "timeline.csv", "w", newline="", encoding="utf-8") as f:
            wr = csv.writer(f)
            wr.writerow(TIMELINE_COLUMNS)

            def emit(r, main: bool) -> None:
                nonlocal n_rows
                ts, dev = r[0], r[1]
                ctx = _RowContext.of(dev, ts, s_index, st_index)
                if filters.sessions and ctx.label not in filters.sessions:
                    return
                sess, label, stim = ctx.session, ctx.label, ctx.stimulus
                probs = np.array(r[8 : 8 + n_p], dtype=float)
                key = (dev, label)
                session_info[key] = sess
                offset = ts - sess.start if sess is not None and math.isfinite(sess.start) else None
                stim_off = ts - stim.start if stim is not None else None
                wr.writerow(
                    [
                        *ctx.cells(),
                        "" if offset is None else f"{offset:.3f}",
                        "" if stim_off is None else f"{stim_off:.3f}",
                        r[2],
                        int(main),
                        r[3] or "",
                        *(f"{v:.1f}" for v in r[4:8]),
                        *(f"{p:.4f}" for p in probs),
                        r[-2],
                        f"{r[-1]:.4f}",
                    ]
                )
                n_rows += 1
                face_rows[key] += 1
                if not (main or opts.all_faces):
                    return
                session_all[key].add(probs)
                if stim is not None:
                    stim_session[(stim.label, key)].add(probs)
                    session_stim[key].add(probs)
                sp = session_plot(key, sess, dev)
                sp.bins[int((ts - sp.t0) // sp.width)].add(probs)
                hours[dev][datetime.fromtimestamp(ts, tz).hour].add(probs)
                ph = photos.get((dev, r[3])) if r[3] else None
                if ph is not None:
                    ph.emotions.append(f"{r[-2]} {r[-1]:.2f}")

            # the faces of one sample arrive together (ordered by device, time, face id): the
            # largest box is the sample's main face (the participant nearest the camera)
            pending: list = []
            for r in _stream(conn, tq):
                if pending and (r[0] != pending[0][0] or r[1] != pending[0][1]):
                    _flush(pending, emit)
                pending.append(r)
            _flush(pending, emit)

        n_events, kinds = _events_csv(conn, out / "events.csv", filters, s_index, st_index)

    if photos:
        _photos_csv(out / "photos.csv", photos)
    n_sessions = _sessions_csv(out / "sessions.csv", sessions, filters, face_rows, overlaps)
    analysis = _analysis(out, sessions, stimuli, s_index, opts, warn)
    for line in warn:
        log.warning("%s", line)
    counts = {
        "timeline_rows": n_rows,
        "events": n_events,
        "sessions": n_sessions,
        "participants": analysis.participants,
        "stimuli": len({s for s, _ in stim_session}),
        "devices": len(hours),
        "photos": len(photos),
    }
    pngs: list[Path] = []
    page = None
    if plots:
        import matplotlib

        matplotlib.use("Agg")
        photo_devs = {d for d, _ in photos}
        day_devs = {
            d
            for d, (lo, hi) in ranges.items()
            if d not in photo_devs and hi - lo > DAY_PLOT_MIN_SPAN_S and lo >= NO_CLOCK_END
        }
        figs = _figures(
            out,
            plots_by_session,
            stimuli,
            stim_session,
            session_stim if stim_session else session_all,
            session_info,
            {d: h for d, h in hours.items() if d in day_devs},
            tz,
            frozenset(photo_devs),
        )
        if not analysis.by_group.empty:
            png = group_stimulus_plot(analysis.by_group, out / "stimulus_by_group.png")
            if png is not None:
                figs.append(("group_stimulus", "Group means per stimulus (95 % CI)", png))
        pngs = [p for _, _, p in figs]
        page = _html(
            out,
            figs,
            counts,
            kinds,
            session_all,
            session_info,
            stim_session,
            filters,
            analysis,
            photos,
            warn,
        )
    return ReportResult(out, page, counts, pngs, warn)


DAY_PLOT_MIN_SPAN_S = 3600.0


def _flush(pending: list, emit) -> None:
    if not pending:
        return
    main = max(range(len(pending)), key=lambda i: (pending[i][6] * pending[i][7], -pending[i][2]))
    for i, r in enumerate(pending):
        emit(r, i == main)
    pending.clear()


def _photos(conn, filters: Filters, s_index: SpanIndex) -> dict[tuple[str, str], _Photo]:
    """Every photo of photo-folder runs (those without a face too), from the samples table."""
    w = _where(samples, samples.c.captured_ts, filters)
    q = select(
        samples.c.device_id, samples.c.file_name, samples.c.captured_ts, samples.c.face_count
    ).where(samples.c.file_name.is_not(None))
    if w is not None:
        q = q.where(w)
    out: dict[tuple[str, str], _Photo] = {}
    for dev, name, ts, n in conn.execute(q.order_by(samples.c.device_id, samples.c.captured_ts)):
        span = s_index.find(dev, ts)
        label = span.label if span is not None else NO_SESSION
        if filters.sessions and label not in filters.sessions:
            continue
        out[(dev, name)] = _Photo(dev, name, ts, n, label)
    return out


def photo_time(ts: float) -> str:
    """The capture time of a photo, or '' where it had none (timebase.NO_CLOCK_EPOCH)."""
    return "" if NO_CLOCK_EPOCH <= ts < NO_CLOCK_END else iso_utc(ts)


def _photos_csv(path: Path, photos: dict[tuple[str, str], _Photo]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        wr = csv.writer(f)
        wr.writerow(["device", "session", "file", "capture_time", "faces", "emotions"])
        for ph in photos.values():
            wr.writerow(
                [
                    ph.device,
                    ph.session,
                    ph.file,
                    photo_time(ph.ts),
                    ph.faces,
                    "; ".join(ph.emotions),
                ]
            )


def _sessions_csv(path, sessions, filters: Filters, face_rows, overlaps) -> int:
    over: dict[tuple[str, str], list[str]] = defaultdict(list)
    for dev, a, b, sec in overlaps:
        over[(dev, a)].append(f"{b} ({sec:.3f} s)")
        over[(dev, b)].append(f"{a} ({sec:.3f} s)")
    rows = []
    for dev, spans in sorted(sessions.items()):
        if filters.devices and dev not in filters.devices:
            continue
        for s in spans:
            if filters.sessions and s.label not in filters.sessions:
                continue
            if filters.since is not None and s.end < filters.since:
                continue
            if filters.until is not None and s.start >= filters.until:
                continue
            rows.append(s)
    keys = sorted({k for s in rows for k in s.meta})
    meta_cols = [k if k not in SESSION_COLUMNS else f"meta_{k}" for k in keys]
    with open(path, "w", newline="", encoding="utf-8") as f:
        wr = csv.writer(f)
        wr.writerow([*SESSION_COLUMNS, *meta_cols])
        for s in rows:
            fin = [math.isfinite(s.start), math.isfinite(s.end)]
            n = face_rows.get((s.device, s.label), 0)
            wr.writerow(
                [
                    s.device,
                    s.label,
                    s.participant or "",
                    s.group or "",
                    _fmt_ts(s.start) if fin[0] else "",
                    _fmt_ts(s.end) if fin[1] else "",
                    f"{s.start:.3f}" if fin[0] else "",
                    f"{s.end:.3f}" if fin[1] else "",
                    f"{s.end - s.start:.3f}" if all(fin) else "",
                    n,
                    "",  # filled below from the analysis table when it exists
                    ";".join(s.tags),
                    "; ".join(over.get((s.device, s.label), [])),
                    *(_cell(s.meta.get(k)) for k in keys),
                ]
            )
    return len(rows)


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


@dataclass
class _Analysis:
    participants: int = 0
    by_participant: object = None  # pandas DataFrame
    by_group: object = None
    mixed: object = None
    options: StatsOptions = field(default_factory=StatsOptions)


def _analysis(out: Path, sessions, stimuli, s_index, opts: StatsOptions, warn: list) -> _Analysis:
    """participant_stimulus.csv, stimulus_by_group.csv (and mixed_model.csv), from timeline.csv
    read back with pandas; sessions.csv gains the main-face row counts and overlaps."""
    import pandas as pd
    from emotion_edge_record.analysis.stats import (
        group_stimulus,
        mixed_models,
        participant_id,
        participant_stimulus,
    )

    tl = pd.read_csv(
        out / "timeline.csv",
        usecols=["ts", "device", "session", "participant", "group", "stimulus", "main_face"]
        + PROB_COLS,
        dtype={k: str for k in ("device", "session", "participant", "group", "stimulus")},
        keep_default_na=False,
    )
    occ = pd.DataFrame(
        [
            (dev, _session_label(s_index, dev, st.start), st.label, st.start, st.end)
            for dev, spans in stimuli.items()
            for st in spans
        ],
        columns=["device", "session", "stimulus", "start", "end"],
    )
    ps = participant_stimulus(tl, occ, opts)
    gs = group_stimulus(ps, opts)
    small = sorted({f"{r.group} ({r.stimulus})" for r in gs.itertuples() if r.n < SMALL_N})
    if small:
        warn.append(
            f"group x stimulus: fewer than {SMALL_N} participants in {', '.join(small[:10])}"
            f"{' ...' if len(small) > 10 else ''}: intervals and tests are unreliable"
        )
    mm = mixed_models(ps, opts)
    ps.to_csv(out / "participant_stimulus.csv", index=False, float_format="%.6g")
    gs.to_csv(out / "stimulus_by_group.csv", index=False, float_format="%.6g")
    if not mm.empty:
        mm.to_csv(out / "mixed_model.csv", index=False, float_format="%.6g")
    # sessions.csv: main-face rows and overlaps, now that the timeline is known
    sess = pd.read_csv(out / "sessions.csv", dtype=str, keep_default_na=False)
    if len(sess):
        main = tl[tl["main_face"] == 1].groupby(["device", "session"]).size()
        sess["main_face_rows"] = [
            int(main.get((d, s), 0)) for d, s in zip(sess["device"], sess["session"], strict=True)
        ]
        sess.to_csv(out / "sessions.csv", index=False)
    _parquet(out, tl, ps, gs, sess)
    pids = participant_id(tl[tl["session"] != ""]) if len(tl) else []
    return _Analysis(len(set(pids)), ps, gs, mm, opts)


def _session_label(s_index: SpanIndex, dev: str, ts: float) -> str:
    s = s_index.find(dev, ts)
    return s.label if s is not None else NO_SESSION


def _parquet(out: Path, tl, ps, gs, sess) -> None:
    """Parquet copies beside the CSV files where pyarrow is installed (typed, compressed)."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return
    import pandas as pd

    full = pd.read_csv(
        out / "timeline.csv",
        dtype={k: str for k in ("device", "session", "participant", "group", "stimulus", "file")},
        keep_default_na=False,
    )
    for name, df in (
        ("timeline", full),
        ("participant_stimulus", ps),
        ("stimulus_by_group", gs),
        ("sessions", sess),
    ):
        df.to_parquet(out / f"{name}.parquet", index=False)


def _events_csv(conn, path: Path, filters: Filters, s_index, st_index) -> tuple[int, dict]:
    w = _where(events, events.c.captured_ts, filters)
    q = select(
        events.c.captured_ts,
        events.c.device_id,
        events.c.event_id,
        events.c.face_id,
        events.c.kind,
        events.c.emotion,
        events.c.confidence,
        events.c.previous_emotion,
        events.c.duration_s,
    ).order_by(events.c.device_id, events.c.captured_ts, events.c.event_id)
    if w is not None:
        q = q.where(w)
    n = 0
    kinds: dict[str, int] = defaultdict(int)
    with open(path, "w", newline="", encoding="utf-8") as f:
        wr = csv.writer(f)
        wr.writerow(
            [
                *CONTEXT_COLUMNS,
                "event_id",
                "face_id",
                "kind",
                "emotion",
                "confidence",
                "previous_emotion",
                "duration_s",
            ]
        )
        for r in _stream(conn, q):
            ctx = _RowContext.of(r[1], r[0], s_index, st_index)
            if filters.sessions and ctx.label not in filters.sessions:
                continue
            wr.writerow(
                [
                    *ctx.cells(),
                    r[2],
                    r[3],
                    r[4],
                    r[5],
                    f"{r[6]:.4f}",
                    r[7] or "",
                    "" if r[8] is None else f"{r[8]:.3f}",
                ]
            )
            n += 1
            kinds[r[4]] += 1
    return n, dict(kinds)


# -- plots --------------------------------------------------------------------------------------


def _safe(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return keep.strip("._")[:80] or "x"


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _legend_handles():
    from matplotlib.patches import Patch

    return [Patch(color=COLORS[lab], label=lab) for lab in LABELS]


def _figures(
    out,
    plots_by_session,
    stimuli,
    stim_session,
    session_all,
    session_info,
    hours,
    tz,
    no_timeline=frozenset(),
):
    """[(section, title, png path)]; no session timeline for the devices in `no_timeline`
    (photo folders: photos are not a timeline)."""
    import matplotlib.pyplot as plt

    figs = []
    keys = sorted(
        (k for k in plots_by_session if k[0] not in no_timeline),
        key=lambda k: (plots_by_session[k].t0, k),
    )
    if len(keys) > MAX_SESSION_PLOTS:
        log.warning("%d sessions: plotting the first %d", len(keys), MAX_SESSION_PLOTS)
    for n, key in enumerate(keys[:MAX_SESSION_PLOTS]):
        sp = plots_by_session[key]
        dev, label = key
        # every bin from the first to the last; bins between samples (sampled more sparsely
        # than the bins) hold the previous value, a real absence (a gap of more than twice
        # the usual spacing) stays blank
        filled = np.array(sorted(sp.bins))
        gap = float(np.median(np.diff(filled))) if len(filled) > 1 else 1.0
        idx = np.arange(filled[0], filled[-1] + 1)
        means = np.zeros((len(idx), len(LABELS)))
        last, last_i = None, None
        for j, i in enumerate(idx):
            if i in sp.bins:
                last, last_i = sp.bins[i].mean(), i
                means[j] = last
            elif last is not None and i - last_i <= 2 * gap:
                means[j] = last
        x = (idx + 0.5) * sp.width
        fig, ax = plt.subplots(figsize=(11, 3.6))
        if len(x) == 1:  # one sample (a photo): a bar, a stack needs two points
            x = np.array([x[0] - sp.width / 2, x[0] + sp.width / 2])
            means = np.repeat(means, 2, axis=0)
        ax.stackplot(x, means.T, colors=[COLORS[lab] for lab in LABELS], step="mid", zorder=2)
        # stimuli: a band above the data and thin edges, so no emotion changes its colour
        for st in stimuli.get(dev, []):
            a, b = max(st.start, sp.t0), min(st.end, sp.t1)
            if b <= a:
                continue
            ax.axvspan(a - sp.t0, b - sp.t0, ymin=1 / 1.08, ymax=1.0, color="#555", alpha=0.35)
            for edge in (a, b):
                ax.axvline(edge - sp.t0, ymax=1 / 1.08, color="black", lw=0.6, ls=":", zorder=3)
            ax.text(
                a - sp.t0,
                1.04,
                " " + st.label,
                fontsize=8,
                va="center",
                ha="left",
                clip_on=True,
            )
        ax.set_xlim(0, sp.t1 - sp.t0)
        ax.set_ylim(0, 1.08)
        ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
        origin = datetime.fromtimestamp(sp.t0, tz)
        ax.set_xlabel(
            f"seconds from {origin.strftime('%Y-%m-%d %H:%M:%S')}.{origin.microsecond // 1000:03d}"
            if sp.t0 >= NO_CLOCK_END
            else "seconds from the start (no clock time recorded)"
        )
        ax.set_ylabel("mean probability")
        span = session_info.get(key)
        who = ", ".join(
            x for x in ((span.participant if span else None), (span.group if span else None)) if x
        )
        title = f"{dev} - session {label}" if label else f"{dev} - no session"
        ax.set_title(title + (f" ({who})" if who else ""), fontsize=10, pad=14)
        ax.legend(
            handles=_legend_handles(), loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8
        )
        figs.append(
            (
                "sessions",
                title,
                _save(fig, out / f"session_{n:03d}_{_safe(dev)}_{_safe(label or 'none')}.png"),
            )
        )

    # per stimulus: mean profile across sessions, error bars = standard error over sessions
    by_stim: dict[str, list[np.ndarray]] = defaultdict(list)
    for (stim, _key), acc in stim_session.items():
        if acc.n:
            by_stim[stim].append(acc.mean())
    if by_stim:
        names = sorted(by_stim)
        figs.append(
            (
                "stimuli",
                "Emotion profile per stimulus (mean over sessions, 95 % t CI)",
                _save(_bars(names, by_stim, "stimulus"), out / "stimuli_profile.png"),
            )
        )

    # groups: sessions with a group tag, each session weighted once, over the stimuli's time
    # where there are stimuli (the time between clips is no one's response)
    by_group: dict[str, list[np.ndarray]] = defaultdict(list)
    for key, acc in session_all.items():
        span = session_info.get(key)
        if span is not None and span.group and acc.n:
            by_group[span.group].append(acc.mean())
    if by_group:
        names = sorted(by_group)
        figs.append(
            (
                "groups",
                "Emotion profile per group (mean over sessions, stimulus time only where "
                "stimuli exist; 95 % t CI)",
                _save(_bars(names, by_group, "group"), out / "groups_profile.png"),
            )
        )

    # per device: the mood over the day
    devs = sorted(hours)
    for dev in devs[:MAX_DEVICE_PLOTS]:
        hs = hours[dev]
        fig, ax = plt.subplots(figsize=(11, 3.4))
        bottom = np.zeros(24)
        means = np.array([hs[h].mean() if h in hs else np.zeros(len(LABELS)) for h in range(24)])
        for j, lab in enumerate(LABELS):
            ax.bar(range(24), means[:, j], bottom=bottom, color=COLORS[lab], width=0.9, label=lab)
            bottom += means[:, j]
        for h in range(24):
            if h in hs:
                ax.text(h, 1.01, str(hs[h].n), fontsize=6, ha="center", va="bottom")
        ax.set_xticks(range(24))
        ax.set_xlim(-0.6, 23.6)
        ax.set_ylim(0, 1.08)
        ax.set_xlabel("hour of day" + (" (UTC)" if tz == timezone.utc else " (local time)"))
        ax.set_ylabel("mean probability")
        ax.set_title(f"{dev} - mood over the day (numbers: face samples per hour)", fontsize=10)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        figs.append(
            (
                "devices",
                f"{dev} - mood over the day",
                _save(fig, out / f"device_{_safe(dev)}_day.png"),
            )
        )
    return figs


def _bars(names: list[str], profiles: dict[str, list[np.ndarray]], what: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4))
    width = 0.8 / max(1, len(names))
    x = np.arange(len(LABELS))
    cmap = plt.get_cmap("tab10")
    for i, name in enumerate(names):
        arr = np.array(profiles[name])
        mean = arr.mean(axis=0)
        if len(arr) > 1:
            from scipy import stats

            err = stats.sem(arr, axis=0) * stats.t.ppf(0.975, len(arr) - 1)
        else:  # one: its value, no interval (a zero-length bar would claim certainty)
            err = np.full_like(mean, np.nan)
        ax.bar(
            x + (i - (len(names) - 1) / 2) * width,
            mean,
            width,
            yerr=err,
            capsize=3,
            color=cmap(i % 10),
            label=f"{name} (n={len(arr)})",
        )
    ax.set_xticks(x, LABELS)
    ax.set_ylabel("mean probability")
    ax.set_ylim(0, 1)
    ax.legend(title=what, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


# -- HTML ---------------------------------------------------------------------------------------


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _table(head: list[str], rows: list[list]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _fmt_ts(ts: float) -> str:
    return iso_utc(ts) if math.isfinite(ts) else "-"


def _html(
    out,
    figs,
    counts,
    kinds,
    session_all,
    session_info,
    stim_session,
    filters,
    analysis=None,
    photos=None,
    warn=(),
) -> Path:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>emotion-edge report</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "img{max-width:100%;border:1px solid #ddd;margin:.5em 0}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
        "padding:2px 8px;font-size:13px;text-align:left}th{background:#f3f3f3}"
        ".warn{color:#a00;font-weight:bold}</style>",
        "</head><body><h1>emotion-edge report</h1>",
    ]
    f = filters
    flt = [
        f"devices: {', '.join(f.devices)}" if f.devices else "",
        f"sessions: {', '.join(f.sessions)}" if f.sessions else "",
        f"since {_fmt_ts(f.since)}" if f.since is not None else "",
        f"until {_fmt_ts(f.until)}" if f.until is not None else "",
    ]
    flt = [x for x in flt if x]
    parts.append(
        f"<p>Made {html.escape(iso_utc(datetime.now().timestamp()))}; filters: "
        f"{html.escape('; '.join(flt) or 'none')}. Data: "
        + ", ".join(
            f"<a href='{n}'>{n}</a>"
            for n in (
                "timeline.csv",
                "events.csv",
                "sessions.csv",
                "participant_stimulus.csv",
                "stimulus_by_group.csv",
                "mixed_model.csv",
                "photos.csv",
            )
            if (out / n).exists()
        )
        + ".</p>"
    )
    for line in warn:
        parts.append(f"<p class='warn'>warning: {html.escape(line)}</p>")
    parts.append(
        _table(
            ["what", "count"],
            [[k, v] for k, v in counts.items()]
            + [[f"events {k}", v] for k, v in sorted(kinds.items())],
        )
    )
    rows = []
    for key, acc in sorted(session_all.items()):
        span = session_info.get(key)
        m = acc.mean()
        rows.append(
            [
                key[0],
                key[1] or "(none)",
                (span.participant or "") if span else "",
                (span.group or "") if span else "",
                _fmt_ts(span.start) if span else "",
                _fmt_ts(span.end) if span else "",
                acc.n,
                LABELS[int(np.argmax(m))] if acc.n else "",
            ]
        )
    parts.append("<h2>Sessions</h2>")
    parts.append(
        _table(
            [
                "device",
                "session",
                "participant",
                "group",
                "start",
                "end",
                "face samples",
                "top emotion",
            ],
            rows,
        )
    )
    if stim_session:
        per: dict[str, list] = defaultdict(list)
        for (stim, _key), acc in stim_session.items():
            per[stim].append(acc)
        srows = []
        for stim in sorted(per):
            prof = np.mean([a.mean() for a in per[stim]], axis=0)
            srows.append(
                [stim, len(per[stim]), sum(a.n for a in per[stim]), *(f"{p:.3f}" for p in prof)]
            )
        parts.append("<h2>Stimuli</h2>")
        parts.append(_table(["stimulus", "sessions", "face samples", *LABELS], srows))
    if analysis is not None and analysis.by_group is not None and not analysis.by_group.empty:
        parts.append("<h2>Group x stimulus</h2>")
        parts.append(_group_html(analysis))
    if photos:
        parts.append("<h2>Photos</h2>")
        parts.append(
            _table(
                ["device", "file", "capture time (EXIF)", "faces", "emotions (main face first)"],
                [
                    [ph.device, ph.file, photo_time(ph.ts) or "-", ph.faces, "; ".join(ph.emotions)]
                    for ph in photos.values()
                ],
            )
        )
    titles = {
        "group_stimulus": "Group means per stimulus",
        "sessions": "Session timelines",
        "stimuli": "Per stimulus",
        "groups": "Groups",
        "devices": "Mood over the day per device",
    }
    for section, head in titles.items():
        these = [(t, p) for s, t, p in figs if s == section]
        if not these:
            continue
        parts.append(f"<h2>{head}</h2>")
        for title, p in these:
            parts.append(f"<h3>{html.escape(title)}</h3>{_img(p)}")
    parts.append("</body></html>")
    page = out / "report.html"
    page.write_text("\n".join(parts), encoding="utf-8")
    return page


def _f(v, fmt: str = ".3f") -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def _group_html(analysis) -> str:
    gs, opts = analysis.by_group, analysis.options
    first = gs.iloc[0]
    faces = "every face" if opts.all_faces else "the main face of each sample"
    tests = (
        "Welch t / one-way ANOVA"
        if opts.test == "parametric"
        else "Mann-Whitney U / Kruskal-Wallis"
    )
    head = (
        f"<p>Unit: participant ({faces}). Measure: {html.escape(str(first['measure']))}. "
        f"Interval: {html.escape(str(first['ci_method']))}. Between groups: {tests}"
        f", p adjusted by {html.escape(opts.correction)} over every stimulus x emotion. "
        "See stimulus_by_group.csv.</p>"
    )
    rows = []
    for r in gs.itertuples():
        rows.append(
            [
                r.stimulus,
                r.emotion,
                r.group,
                r.n,
                _f(r.mean),
                f"[{_f(r.ci_low)}, {_f(r.ci_high)}]" if math.isfinite(r.ci_low) else "-",
                r.test or "-",
                _f(r.p, ".3g"),
                _f(r.p_adjusted, ".3g"),
                f"{_f(r.effect_size)} {r.effect_size_kind}".strip(),
                r.note,
            ]
        )
    return head + _table(
        [
            "stimulus",
            "emotion",
            "group",
            "n",
            "mean",
            "95 % CI",
            "test",
            "p",
            "p adjusted",
            "effect size",
            "note",
        ],
        rows,
    )
