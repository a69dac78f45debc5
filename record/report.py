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
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from emotion_edge.track.events import iso_utc
from emotion_edge_record.payloads import LABELS
from emotion_edge_record.store import Store, events, markers, timeline_faces
from sqlalchemy import and_, func, select

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


@dataclass
class ReportResult:
    out: Path
    html: Path | None
    counts: dict[str, int]
    pngs: list[Path]


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
                    )
                    sessions[dev].append(open_session)
                elif open_session is not None and open_session.label == m.label:
                    open_session.end = m.ts
                    open_session.participant = open_session.participant or m.participant
                    open_session.group = open_session.group or m.group_name
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


def make_report(
    store: Store, out: Path, filters: Filters = Filters(), *, utc: bool = False, plots: bool = True
) -> ReportResult:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tz = timezone.utc if utc else datetime.now().astimezone().tzinfo
    with store.engine.connect() as conn:
        mq = select(markers)
        if filters.devices:
            mq = mq.where(markers.c.device_id.in_(filters.devices))
        sessions, stimuli = build_spans(conn.execute(mq).all())
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

        plots_by_session: dict[tuple[str, str], _SessionPlot] = {}
        stim_session: dict[tuple[str, tuple[str, str]], _Acc] = defaultdict(_Acc)
        session_all: dict[tuple[str, str], _Acc] = defaultdict(_Acc)
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
        tq = select(
            *cols,
            *[timeline_faces.c[c] for c in PROB_COLS],
            timeline_faces.c.emotion,
            timeline_faces.c.confidence,
        )
        if w is not None:
            tq = tq.where(w)
        tq = tq.order_by(
            timeline_faces.c.device_id, timeline_faces.c.captured_ts, timeline_faces.c.face_id
        )
        with open(out / "timeline.csv", "w", newline="", encoding="utf-8") as f:
            wr = csv.writer(f)
            wr.writerow(
                [
                    *CONTEXT_COLUMNS,
                    "session_offset_s",
                    "face_id",
                    "file",
                    *PROB_COLS,
                    "emotion",
                    "confidence",
                ]
            )
            for r in _stream(conn, tq):
                ts, dev = r[0], r[1]
                ctx = _RowContext.of(dev, ts, s_index, st_index)
                if filters.sessions and ctx.label not in filters.sessions:
                    continue
                sess, label, stim = ctx.session, ctx.label, ctx.stimulus
                probs = np.array(r[4 : 4 + len(LABELS)], dtype=float)
                key = (dev, label)
                session_info[key] = sess
                offset = ts - sess.start if sess is not None and math.isfinite(sess.start) else ""
                wr.writerow(
                    [
                        *ctx.cells(),
                        f"{offset:.3f}" if offset != "" else "",
                        r[2],
                        r[3] or "",
                        *(f"{p:.4f}" for p in probs),
                        r[-2],
                        f"{r[-1]:.4f}",
                    ]
                )
                n_rows += 1
                session_all[key].add(probs)
                if stim is not None:
                    stim_session[(stim.label, key)].add(probs)
                sp = session_plot(key, sess, dev)
                sp.bins[int((ts - sp.t0) // sp.width)].add(probs)
                hours[dev][datetime.fromtimestamp(ts, tz).hour].add(probs)

        n_events, kinds = _events_csv(conn, out / "events.csv", filters, s_index, st_index)

    counts = {
        "timeline_rows": n_rows,
        "events": n_events,
        "sessions": sum(1 for k in session_all if k[1] != NO_SESSION),
        "stimuli": len({s for s, _ in stim_session}),
        "devices": len(hours),
    }
    pngs: list[Path] = []
    page = None
    if plots:
        import matplotlib

        matplotlib.use("Agg")
        figs = _figures(
            out, plots_by_session, stimuli, stim_session, session_all, session_info, hours, tz
        )
        pngs = [p for _, _, p in figs]
        page = _html(out, figs, counts, kinds, session_all, session_info, stim_session, filters)
    return ReportResult(out, page, counts, pngs)


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


def _figures(out, plots_by_session, stimuli, stim_session, session_all, session_info, hours, tz):
    """[(section, title, png path)]"""
    import matplotlib.pyplot as plt

    figs = []
    keys = sorted(plots_by_session, key=lambda k: (plots_by_session[k].t0, k))
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
        ax.stackplot(x, means.T, colors=[COLORS[lab] for lab in LABELS], step="mid")
        for st in stimuli.get(dev, []):
            a, b = max(st.start, sp.t0), min(st.end, sp.t1)
            if b <= a:
                continue
            ax.axvspan(a - sp.t0, b - sp.t0, color="black", alpha=0.12, lw=0)
            ax.axvline(a - sp.t0, color="black", lw=0.8)
            ax.text(
                a - sp.t0,
                1.01,
                st.label,
                fontsize=8,
                va="bottom",
                ha="left",
                transform=ax.get_xaxis_transform(),
                clip_on=False,
            )
        ax.set_xlim(0, sp.t1 - sp.t0)
        ax.set_ylim(0, 1)
        ax.set_xlabel(
            f"seconds from {datetime.fromtimestamp(sp.t0, tz).strftime('%Y-%m-%d %H:%M:%S')}"
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
                "Emotion profile per stimulus (mean over sessions, ± s.e.)",
                _save(_bars(names, by_stim, "stimulus"), out / "stimuli_profile.png"),
            )
        )

    # groups: sessions with a group tag, each session weighted once
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
                "Emotion profile per group (mean over sessions, ± s.e.)",
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
        err = arr.std(axis=0, ddof=1) / math.sqrt(len(arr)) if len(arr) > 1 else np.zeros_like(mean)
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


def _html(out, figs, counts, kinds, session_all, session_info, stim_session, filters) -> Path:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>emotion-edge report</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "img{max-width:100%;border:1px solid #ddd;margin:.5em 0}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
        "padding:2px 8px;font-size:13px;text-align:left}th{background:#f3f3f3}</style>",
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
        "<a href='timeline.csv'>timeline.csv</a>, <a href='events.csv'>events.csv</a>.</p>"
    )
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
    titles = {
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
