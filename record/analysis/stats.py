"""Per participant x stimulus means, baseline correction and group x stimulus statistics.

The unit of analysis is the participant (a session's participant, or the session itself when
no participant was given): every participant contributes one mean per stimulus and emotion,
so a participant watched for longer does not weigh more in a group.

- participant_stimulus(): the mean probability of each emotion over the participant's face
  samples inside each stimulus, its baseline (see `Baseline`) and the difference.
- group_stimulus(): per stimulus, emotion and group: n participants, mean, standard deviation
  and a 95 % confidence interval (Student's t over participants, or a BCa bootstrap), and per
  stimulus and emotion a between-group test (Welch's t-test / Mann-Whitney U for two groups,
  one-way ANOVA / Kruskal-Wallis for more) with an effect size and p values corrected for the
  number of tests (Benjamini-Hochberg by default, statsmodels' multipletests).
- mixed_models(): a linear mixed model per emotion (participant as a random intercept) where
  statsmodels is installed: it uses every stimulus of a participant at once.

The statistics are SciPy's and statsmodels'; only the effect sizes are written out here
(Hedges' g, rank-biserial r, eta squared, epsilon squared), each a one-line textbook formula.
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pandas as pd
from emotion_edge_record.analysis.options import SMALL_N, Baseline, StatsOptions
from emotion_edge_record.payloads import LABELS
from scipy import stats

__all__ = ["Baseline", "StatsOptions", "SMALL_N"]

log = logging.getLogger(__name__)
PROB_COLS = [f"p_{lab}" for lab in LABELS]


def participant_id(df: pd.DataFrame) -> pd.Series:
    """The participant, or `device/session` when a session names none."""
    who = df["participant"].fillna("").astype(str)
    fallback = df["device"].astype(str) + "/" + df["session"].fillna("").astype(str)
    return who.where(who != "", fallback)


def _faces(df: pd.DataFrame, opts: StatsOptions) -> pd.DataFrame:
    d = df[df["session"].fillna("") != ""]
    if not opts.all_faces:
        d = d[d["main_face"] == 1]
    d = d.copy()
    d["pid"] = participant_id(d)
    return d


def participant_groups(d: pd.DataFrame) -> pd.Series:
    """pid -> group (the most frequent non-empty one; '' when none)."""
    g = d[["pid", "group"]].copy()
    g["group"] = g["group"].fillna("").astype(str)
    g = g[g["group"] != ""]
    if g.empty:
        return pd.Series(dtype=object)
    return g.groupby("pid")["group"].agg(lambda s: s.value_counts().index[0])


def participant_stimulus(
    df: pd.DataFrame, occurrences: pd.DataFrame, opts: StatsOptions | None = None
) -> pd.DataFrame:
    """One row per participant x stimulus (see the module docstring).

    df: timeline rows with ts, device, session, participant, group, stimulus, main_face, p_*.
    occurrences: the stimulus spans, columns device, session, stimulus, start, end."""
    opts = opts or StatsOptions()
    d = _faces(df, opts)
    cols = ["participant", "group", "stimulus", "sessions", "n_samples", *PROB_COLS]
    if d.empty:
        return pd.DataFrame(columns=cols)
    groups = participant_groups(d)
    inside = d[d["stimulus"].fillna("") != ""]
    agg = inside.groupby(["pid", "stimulus"]).agg(
        sessions=("session", "nunique"),
        n_samples=("ts", "size"),
        **{c: (c, "mean") for c in PROB_COLS},
    )
    out = agg.reset_index().rename(columns={"pid": "participant"})
    out.insert(1, "group", out["participant"].map(groups).fillna(""))
    b = opts.baseline
    if b.active:
        base, nbase = _baselines(d, occurrences, out, b)
        out["n_baseline"] = nbase
        for c, lab in zip(PROB_COLS, LABELS, strict=True):
            out[f"base_{lab}"] = base[c].to_numpy()
            out[f"d_{lab}"] = out[c] - out[f"base_{lab}"]
        missing = out["n_baseline"] == 0
        if missing.any():
            log.warning(
                "%d participant x stimulus rows have no baseline samples (%s): left empty",
                int(missing.sum()),
                b.describe(),
            )
    return out.sort_values(["stimulus", "group", "participant"]).reset_index(drop=True)


def _baselines(d, occurrences, out, b: Baseline) -> tuple[pd.DataFrame, np.ndarray]:
    """Per row of `out` (participant, stimulus): the baseline mean per label and its n."""
    rows = []
    empty = d.iloc[0:0]
    by_pid = dict(tuple(d.groupby("pid")))  # one pass, not one mask per row
    outside_by_pid = {p: f[f["stimulus"].fillna("") == ""] for p, f in by_pid.items()}
    for pid, stim in zip(out["participant"], out["stimulus"], strict=True):
        mine_all = by_pid.get(pid, empty)
        if b.kind == "session":
            sel = outside_by_pid.get(pid, empty)
        elif b.kind == "stimulus":
            sel = mine_all[mine_all["stimulus"] == b.stimulus]
        else:  # pre:S before every occurrence of this stimulus in this participant's sessions
            mine = outside_by_pid.get(pid, empty)
            sessions = set(zip(mine["device"], mine["session"], strict=True))
            occ = occurrences[occurrences["stimulus"] == stim]
            mask = np.zeros(len(mine), dtype=bool)
            ts, dev = mine["ts"].to_numpy(), mine["device"].to_numpy()
            ses = mine["session"].to_numpy()
            for o in occ.itertuples():
                if (o.device, o.session) in sessions:
                    win = (ts >= o.start - b.seconds) & (ts < o.start)
                    mask |= (dev == o.device) & (ses == o.session) & win
            sel = mine[mask]
        rows.append((sel[PROB_COLS].mean() if len(sel) else pd.Series(np.nan, PROB_COLS), len(sel)))
    base = pd.DataFrame([r[0] for r in rows], columns=PROB_COLS)
    return base, np.array([r[1] for r in rows], dtype=int)


def value_columns(ps: pd.DataFrame, opts: StatsOptions) -> dict[str, str]:
    """emotion -> the participant_stimulus column the group statistics use."""
    prefix = "d_" if opts.baseline.active else "p_"
    return {lab: f"{prefix}{lab}" for lab in LABELS if f"{prefix}{lab}" in ps.columns}


GROUP_COLUMNS = [
    "stimulus",
    "emotion",
    "measure",
    "group",
    "n",
    "mean",
    "sd",
    "ci_low",
    "ci_high",
    "ci_method",
    "test",
    "statistic",
    "p",
    "p_adjusted",
    "correction",
    "effect_size",
    "effect_size_kind",
    "note",
]


def group_stimulus(ps: pd.DataFrame, opts: StatsOptions | None = None) -> pd.DataFrame:
    """One row per stimulus x emotion x group (GROUP_COLUMNS); the test columns repeat on the
    group rows of one stimulus x emotion. Participants without a group are left out."""
    opts = opts or StatsOptions()
    rows: list[dict] = []
    tests: list[dict] = []
    d = ps[ps["group"].fillna("") != ""]
    measure = opts.baseline.describe()
    ci_method = (
        f"t ({opts.confidence:.0%}, df = n - 1)"
        if opts.ci == "t"
        else f"BCa bootstrap ({opts.confidence:.0%}, 9999 resamples)"
    )
    for stim, sd in d.groupby("stimulus", sort=True):
        names = sorted(sd["group"].unique())
        for lab, col in value_columns(ps, opts).items():
            samples = {g: sd.loc[sd["group"] == g, col].dropna().to_numpy(float) for g in names}
            t = _compare(samples, opts)
            t.update(stimulus=stim, emotion=lab)
            tests.append(t)
            for g in names:
                v = samples[g]
                lo, hi = confidence_interval(v, opts)
                rows.append(
                    {
                        "stimulus": stim,
                        "emotion": lab,
                        "measure": measure,
                        "group": g,
                        "n": len(v),
                        "mean": float(np.mean(v)) if len(v) else math.nan,
                        "sd": float(np.std(v, ddof=1)) if len(v) > 1 else math.nan,
                        "ci_low": lo,
                        "ci_high": hi,
                        "ci_method": ci_method,
                    }
                )
    if not rows:
        return pd.DataFrame(columns=GROUP_COLUMNS)
    tdf = pd.DataFrame(tests)
    tdf["p_adjusted"] = adjust_p(tdf["p"].to_numpy(float), opts.correction)
    tdf["correction"] = opts.correction
    out = pd.DataFrame(rows).merge(tdf, on=["stimulus", "emotion"], how="left")
    return out[GROUP_COLUMNS]


def confidence_interval(v: np.ndarray, opts: StatsOptions) -> tuple[float, float]:
    n = len(v)
    if n < 2:
        return math.nan, math.nan
    mean = float(np.mean(v))
    if float(np.ptp(v)) == 0.0:  # no spread: the interval is the value itself
        return mean, mean
    if opts.ci == "t":
        lo, hi = stats.t.interval(opts.confidence, n - 1, loc=mean, scale=stats.sem(v))
        return float(lo), float(hi)
    res = stats.bootstrap(
        (v,),
        np.mean,
        confidence_level=opts.confidence,
        n_resamples=9999,
        method="BCa",
        rng=np.random.default_rng(0),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _compare(samples: dict[str, np.ndarray], opts: StatsOptions) -> dict:
    names = list(samples)
    small = [g for g in names if len(samples[g]) < SMALL_N]
    note = f"n < {SMALL_N} in {', '.join(small)}: interval and test unreliable" if small else ""
    empty = {"test": "", "statistic": math.nan, "p": math.nan}
    empty.update(effect_size=math.nan, effect_size_kind="", note=note)
    if len(names) < 2:
        empty["note"] = "one group: no comparison" + (f"; {note}" if note else "")
        return empty
    if any(len(samples[g]) < 2 for g in names):
        empty["note"] = "a group has fewer than 2 participants: no test" + (
            f"; {note}" if note else ""
        )
        return empty
    vals = [samples[g] for g in names]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant data: nan, reported as such
        if len(names) == 2:
            a, b = vals
            if opts.test == "parametric":
                r = stats.ttest_ind(a, b, equal_var=False)
                test, es, kind = "Welch t", hedges_g(a, b), f"Hedges g ({names[0]} - {names[1]})"
            else:
                r = stats.mannwhitneyu(a, b, alternative="two-sided")
                test = "Mann-Whitney U"
                es = 2.0 * float(r.statistic) / (len(a) * len(b)) - 1.0
                kind = f"rank-biserial r ({names[0]} vs {names[1]})"
        elif opts.test == "parametric":
            r = stats.f_oneway(*vals)
            test, es, kind = "one-way ANOVA", eta_squared(vals), "eta squared"
        else:
            r = stats.kruskal(*vals)
            n = sum(len(v) for v in vals)
            test, es, kind = "Kruskal-Wallis H", float(r.statistic) / (n - 1), "epsilon squared"
    return {
        "test": test,
        "statistic": float(r.statistic),
        "p": float(r.pvalue),
        "effect_size": float(es),
        "effect_size_kind": kind,
        "note": note,
    }


def hedges_g(a: np.ndarray, b: np.ndarray) -> float:
    n1, n2 = len(a), len(b)
    pooled = math.sqrt(
        ((n1 - 1) * np.var(a, ddof=1) + (n2 - 1) * np.var(b, ddof=1)) / (n1 + n2 - 2)
    )
    if pooled == 0:
        return math.nan
    return float((np.mean(a) - np.mean(b)) / pooled * (1 - 3 / (4 * (n1 + n2) - 9)))


def eta_squared(vals: list[np.ndarray]) -> float:
    allv = np.concatenate(vals)
    total = float(((allv - allv.mean()) ** 2).sum())
    between = sum(len(v) * (v.mean() - allv.mean()) ** 2 for v in vals)
    return float(between / total) if total > 0 else math.nan


def adjust_p(p: np.ndarray, method: str) -> np.ndarray:
    """p values corrected for the number of tests (NaN stays NaN, and is not counted)."""
    out = np.full(len(p), np.nan)
    ok = np.isfinite(p)
    if not ok.any():
        return out
    try:
        from statsmodels.stats.multitest import multipletests
    except ImportError:
        if method != "fdr_bh":
            raise ValueError(f"--correction {method}: needs statsmodels") from None
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
        return out
    out[ok] = multipletests(p[ok], method=method)[1]
    return out


def mixed_models(ps: pd.DataFrame, opts: StatsOptions | None = None) -> pd.DataFrame:
    """Per emotion: value ~ group * stimulus with a random intercept per participant
    (statsmodels MixedLM, REML). Empty where statsmodels is missing or the design is too
    small (fewer than 2 groups, 2 stimuli or 4 participants) or the fit fails."""
    opts = opts or StatsOptions()
    cols = ["emotion", "term", "coef", "se", "z", "p", "converged", "n_obs", "n_participants"]
    try:
        import statsmodels.formula.api as smf
    except ImportError:
        return pd.DataFrame(columns=cols)
    d = ps[ps["group"].fillna("") != ""]
    if d["group"].nunique() < 2 or d["stimulus"].nunique() < 2 or d["participant"].nunique() < 4:
        return pd.DataFrame(columns=cols)
    rows = []
    for lab, col in value_columns(ps, opts).items():
        m = d[["participant", "group", "stimulus", col]].dropna().rename(columns={col: "y"})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small designs: convergence talk, not news
            try:
                fit = smf.mixedlm("y ~ C(group) * C(stimulus)", m, groups=m["participant"]).fit(
                    reml=True
                )
                rows += [
                    {
                        "emotion": lab,
                        "term": term,
                        "coef": float(fit.fe_params[term]),
                        "se": float(fit.bse_fe[term]),
                        "z": float(fit.tvalues[term]),
                        "p": float(fit.pvalues[term]),
                        "converged": bool(fit.converged),
                        "n_obs": len(m),
                        "n_participants": m["participant"].nunique(),
                    }
                    for term in fit.fe_params.index
                ]
            except Exception as exc:  # noqa: BLE001 - a singular design is a finding
                log.warning("mixed model for %s not fitted: %s", lab, exc)
    return pd.DataFrame(rows, columns=cols)
