"""The researcher's answer: a study of 5 participants in 2 groups and 2 clips whose timeline
samples carry set probabilities (the participant's face large, a bystander's small, the
participant's track broken mid-clip), recorded through the real recorder into real SQLite
and PostgreSQL; the report's participant x stimulus and group x stimulus tables are checked
against numbers computed here from the design (numpy and the t distribution's quantile)."""

from __future__ import annotations

import csv
import json
import math
import subprocess

import numpy as np
import pytest

pytest.importorskip("sqlalchemy", reason="the recorder needs the [record] extra")
pytest.importorskip("pandas", reason="the report's analysis needs pandas")
pytest.importorskip("scipy", reason="the report's analysis needs SciPy")

from emotion_edge.preprocess import FER2013_LABELS  # noqa: E402
from emotion_edge.track.events import FaceObservation  # noqa: E402
from emotion_edge.track.timeline import timeline_payload  # noqa: E402
from emotion_edge_record.payloads import marker_payload  # noqa: E402
from scipy import stats  # noqa: E402
from test_record_mqtt import exe  # noqa: E402

DEV = "lab-1"
T0 = 1_780_000_000.0
LABELS = list(FER2013_LABELS)
HAPPY, SAD = LABELS.index("happy"), LABELS.index("sad")
# participant -> (group, social_media_h, happy at rest, happy in clip-A, happy in clip-B)
DESIGN = {
    "P1": ("heavy", 6, 0.10, 0.30, 0.20),
    "P2": ("heavy", 5, 0.20, 0.50, 0.20),
    "P3": ("heavy", 7, 0.10, 0.40, 0.30),
    "P4": ("light", 1, 0.10, 0.60, 0.10),
    "P5": ("light", 0, 0.20, 0.70, 0.30),
}
SESSION_S = 20.0
CLIPS = {"clip-A": (4.0, 10.0), "clip-B": (14.0, 20.0)}  # offsets in each session
STEP = 0.5


def probs(happy: float) -> np.ndarray:
    """happy as given, sad 0.2, the rest shared evenly (exact at 4 decimals)."""
    rest = round((1.0 - happy - 0.2) / 5, 4)
    p = np.full(len(LABELS), rest)
    p[HAPPY], p[SAD] = happy, 0.2
    return p


BYSTANDER = np.eye(len(LABELS))[LABELS.index("angry")]


def study_jsonl(path) -> None:
    lines = []
    for k, (pid, (group, hours, rest, a, b)) in enumerate(DESIGN.items()):
        start = T0 + k * 100  # one device, sessions one after another
        meta = {"social_media_h": hours}
        lines.append(
            marker_payload(
                DEV, "session", "start", f"S-{pid}", start, participant=pid, group=group, meta=meta
            )  # fmt: skip
        )
        lines.append(marker_payload(DEV, "session", "end", f"S-{pid}", start + SESSION_S))
        for clip, (lo, hi) in CLIPS.items():
            lines.append(marker_payload(DEV, "stimulus", "start", clip, start + lo))
            lines.append(marker_payload(DEV, "stimulus", "end", clip, start + hi))
        for i in range(int(SESSION_S / STEP)):
            off = i * STEP
            value = a if 4 <= off < 10 else b if 14 <= off < 20 else rest
            # the participant's track breaks at 7 s: face id 1, then 9; the bystander is small
            main_id = 1 if off < 7 else 9
            faces = [
                FaceObservation(main_id, (100.0, 80.0, 120.0, 120.0), 3, probs(value)),
                FaceObservation(2, (10.0, 10.0, 30.0, 30.0), 3, BYSTANDER),
            ]
            lines.append(
                timeline_payload(DEV, "sim", LABELS, faces, i, (640, 480), start + off, start)
            )
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")


def run(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*exe(name), *args], capture_output=True, text=True, timeout=300)


def read_csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def expected_group(values: list[float]) -> dict:
    """mean and 95 % t interval computed here: mean +- t(0.975, n-1) * sd / sqrt(n)."""
    v = np.array(values, float)
    n, m = len(v), float(v.mean())
    if n < 2:
        return {"n": n, "mean": m, "lo": math.nan, "hi": math.nan}
    half = stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n)
    return {"n": n, "mean": m, "lo": m - half, "hi": m + half}


def welch_p(a: list[float], b: list[float]) -> float:
    """Welch's t-test written out (Welch-Satterthwaite df), two-sided."""
    a, b = np.array(a, float), np.array(b, float)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(2 * stats.t.sf(abs(t), df))


def bh(p: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p values, written out."""
    p = np.array(p, float)
    order = np.argsort(p)
    m = len(p)
    adj = np.empty(m)
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p[i] * m / rank)
        adj[i] = running
    return adj.tolist()


def record_and_report(db: str, src, out, *extra: str) -> subprocess.CompletedProcess:
    p = run("emotion-edge-record", "--db", db, "--jsonl", str(src))
    assert p.returncode == 0, p.stderr
    return run("emotion-edge-report", db, "--out", str(out), "--utc", *extra)


def check_study(out, baseline: bool) -> None:
    # participant x stimulus: the main face only (no bystander, no split at the track break)
    ps = read_csv(out / "participant_stimulus.csv")
    assert {(r["participant"], r["stimulus"]) for r in ps} == {
        (p, c) for p in DESIGN for c in CLIPS
    }
    for r in ps:
        group, _h, rest, a, b = DESIGN[r["participant"]]
        want = a if r["stimulus"] == "clip-A" else b
        assert r["group"] == group
        assert int(r["n_samples"]) == 12  # 6 s at 0.5 s
        assert float(r["p_happy"]) == pytest.approx(want, abs=1e-9)
        assert float(r["p_angry"]) == pytest.approx(probs(want)[0], abs=1e-9)  # no bystander
        if baseline:
            assert int(r["n_baseline"]) == 4  # the 2 s before the clip at 0.5 s
            assert float(r["d_happy"]) == pytest.approx(want - rest, abs=1e-9)
    # group x stimulus against the design
    gs = read_csv(out / "stimulus_by_group.csv")
    assert {r["emotion"] for r in gs} == set(LABELS)
    happy = [r for r in gs if r["emotion"] == "happy"]
    assert len(happy) == 4
    pvals, keys = [], []
    for clip in CLIPS:
        vals = {}
        for g in ("heavy", "light"):
            vals[g] = [
                (d[3] if clip == "clip-A" else d[4]) - (d[2] if baseline else 0.0)
                for d in DESIGN.values()
                if d[0] == g
            ]
            row = next(r for r in happy if r["stimulus"] == clip and r["group"] == g)
            want = expected_group(vals[g])
            assert int(row["n"]) == want["n"]
            assert float(row["mean"]) == pytest.approx(want["mean"], abs=1e-6)
            assert float(row["ci_low"]) == pytest.approx(want["lo"], abs=1e-5)
            assert float(row["ci_high"]) == pytest.approx(want["hi"], abs=1e-5)
            assert row["ci_method"].startswith("t (95%")
            assert row["test"] == "Welch t"
            # light has 2 participants: said on every row of that comparison
            assert "n < 3 in light" in row["note"]
        p = welch_p(vals["heavy"], vals["light"])
        assert float(row["p"]) == pytest.approx(p, rel=1e-4)
        pvals.append(p)
        keys.append(clip)
    # every stimulus x emotion with a finite p is corrected together: rebuild that list
    all_p = {}
    for r in gs:
        if r["p"]:
            all_p[(r["stimulus"], r["emotion"])] = float(r["p"])
    names = sorted(all_p)
    adj = dict(zip(names, bh([all_p[k] for k in names]), strict=True))
    for r in gs:
        if r["p"]:
            assert float(r["p_adjusted"]) == pytest.approx(
                adj[(r["stimulus"], r["emotion"])], rel=1e-4
            )
    # sessions.csv: one row per session, --meta keys as columns
    sess = read_csv(out / "sessions.csv")
    assert [r["participant"] for r in sess] == list(DESIGN)
    assert [int(r["social_media_h"]) for r in sess] == [d[1] for d in DESIGN.values()]
    assert all(int(r["main_face_rows"]) == 40 and int(r["face_rows"]) == 80 for r in sess)
    # timeline.csv: stimulus offsets and boxes
    tl = read_csv(out / "timeline.csv")
    inside = [r for r in tl if r["stimulus"] == "clip-A" and r["main_face"] == "1"]
    assert [float(r["stimulus_offset_s"]) for r in inside[:3]] == [0.0, 0.5, 1.0]
    assert all(r["box_w"] == "120.0" for r in inside)
    assert all(r["stimulus_offset_s"] == "" for r in tl if not r["stimulus"])


def test_group_by_stimulus_statistics_match_the_design(tmp_path):
    src = tmp_path / "study.jsonl"
    study_jsonl(src)
    out = tmp_path / "rep"
    p = record_and_report(str(tmp_path / "s.sqlite"), src, out, "--baseline", "pre:2")
    assert p.returncode == 0, p.stderr
    assert "fewer than 3 participants in light" in p.stderr  # the n < 3 warning, logged
    check_study(out, baseline=True)
    page = (out / "report.html").read_text()
    assert "Group x stimulus" in page and "stimulus_by_group.png" in page
    assert "fewer than 3 participants" in page
    # raw means (no baseline) from the same recording
    out2 = tmp_path / "raw"
    p = run("emotion-edge-report", str(tmp_path / "s.sqlite"), "--out", str(out2), "--no-plots")
    assert p.returncode == 0, p.stderr
    check_study(out2, baseline=False)
    # --all-faces keeps the bystander: clip-A's angry mean is pulled towards 1
    out3 = tmp_path / "all"
    p = run(
        "emotion-edge-report", str(tmp_path / "s.sqlite"), "--out", str(out3), "--no-plots",
        "--all-faces",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    ps = read_csv(out3 / "participant_stimulus.csv")
    r = next(r for r in ps if r["participant"] == "P1" and r["stimulus"] == "clip-A")
    assert float(r["p_angry"]) == pytest.approx((probs(0.30)[0] + 1.0) / 2)


def test_three_groups_anova_and_rank_tests():
    """The table functions alone, 3 groups: one-way ANOVA and Kruskal-Wallis with their effect
    sizes computed here."""
    import pandas as pd
    from emotion_edge_record.analysis.stats import StatsOptions, group_stimulus

    vals = {"a": [0.1, 0.2, 0.3], "b": [0.4, 0.5, 0.7], "c": [0.2, 0.25, 0.3, 0.35]}
    rows = [
        {"participant": f"{g}{i}", "group": g, "stimulus": "s", "p_happy": v}
        for g, vs in vals.items()
        for i, v in enumerate(vs)
    ]
    ps = pd.DataFrame(rows)
    for lab in LABELS:
        ps[f"p_{lab}"] = ps.get(f"p_{lab}", 0.1)
    gs = group_stimulus(ps, StatsOptions())
    h = gs[gs["emotion"] == "happy"]
    allv = np.concatenate([np.array(v) for v in vals.values()])
    ss_between = sum(len(v) * (np.mean(v) - allv.mean()) ** 2 for v in vals.values())
    ss_total = ((allv - allv.mean()) ** 2).sum()
    assert (h["test"] == "one-way ANOVA").all()
    assert h["effect_size"].iloc[0] == pytest.approx(ss_between / ss_total)
    k = len(vals)
    ss_within = ss_total - ss_between
    f = (ss_between / (k - 1)) / (ss_within / (len(allv) - k))
    assert h["statistic"].iloc[0] == pytest.approx(f)
    assert h["p"].iloc[0] == pytest.approx(stats.f.sf(f, k - 1, len(allv) - k))
    gr = group_stimulus(ps, StatsOptions(test="rank"))
    hr = gr[gr["emotion"] == "happy"]
    assert (hr["test"] == "Kruskal-Wallis H").all()
    assert hr["effect_size"].iloc[0] == pytest.approx(hr["statistic"].iloc[0] / (len(allv) - 1))
    # constant emotions (all 0.1): no spread, no p value, nothing corrected for them
    flat = gs[gs["emotion"] == "angry"]
    assert flat["p"].isna().all() and flat["p_adjusted"].isna().all()
    assert (flat["ci_low"] == flat["mean"]).all()
    boot = group_stimulus(ps, StatsOptions(ci="bootstrap"))
    hb = boot[(boot["emotion"] == "happy") & (boot["group"] == "c")].iloc[0]
    assert hb["ci_low"] < hb["mean"] < hb["ci_high"] and "bootstrap" in hb["ci_method"]


def test_baseline_and_option_errors_are_one_line(tmp_path):
    from emotion_edge_record.analysis.stats import Baseline

    assert Baseline.parse("pre:5") == Baseline("pre", seconds=5.0)
    assert Baseline.parse("session").kind == "session"
    assert Baseline.parse("calm-clip") == Baseline("stimulus", stimulus="calm-clip")
    src = tmp_path / "study.jsonl"
    study_jsonl(src)
    db = str(tmp_path / "s.sqlite")
    assert run("emotion-edge-record", "--db", db, "--jsonl", str(src)).returncode == 0
    for bad in (["--baseline", "pre:-1"], ["--correction", "magic"]):
        p = run("emotion-edge-report", db, "--out", str(tmp_path / "x"), *bad)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    # a named baseline stimulus: clip-A's mean is the baseline, so clip-A minus it is 0
    out = tmp_path / "named"
    p = run("emotion-edge-report", db, "--out", str(out), "--no-plots", "--baseline", "clip-A")
    assert p.returncode == 0, p.stderr
    for r in read_csv(out / "participant_stimulus.csv"):
        _g, _h, _rest, a, b = DESIGN[r["participant"]]
        want = 0.0 if r["stimulus"] == "clip-A" else b - a
        assert float(r["d_happy"]) == pytest.approx(want, abs=1e-9)


def test_postgres_gives_the_same_tables(tmp_path):
    """The same study through a real PostgreSQL (tests/pg_cluster.py): identical tables."""
    from pg_cluster import PgCluster

    cluster = PgCluster.create()
    try:
        url = cluster.new_database()
        src = tmp_path / "study.jsonl"
        study_jsonl(src)
        outs = {}
        for name, db in (("sqlite", str(tmp_path / "s.sqlite")), ("pg", url)):
            outs[name] = tmp_path / name
            p = record_and_report(db, src, outs[name], "--baseline", "pre:2", "--no-plots")
            assert p.returncode == 0, p.stderr
        for f in ("participant_stimulus.csv", "stimulus_by_group.csv", "sessions.csv"):
            assert (outs["pg"] / f).read_text() == (outs["sqlite"] / f).read_text(), f
        check_study(outs["pg"], baseline=True)
    finally:
        cluster.destroy()


def test_mood_over_the_day_only_for_recordings_over_an_hour(tmp_path):
    """A device recorded for 2 hours gets its mood-over-the-day plot; the 5 x 20 s study of
    the other tests does not (see tests/test_record.py check_report_files)."""
    from test_record_mqtt import make_sample

    t0 = 1_780_000_000.0
    lines = [make_sample("kiosk", i, t0 + i * 600, faces=1) for i in range(13)]  # 0 to 2 h
    src = tmp_path / "day.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "rep"
    p = record_and_report(str(tmp_path / "d.sqlite"), src, out)
    assert p.returncode == 0, p.stderr
    assert [x.name for x in out.glob("device_*.png")] == ["device_kiosk_day.png"]
    assert "Mood over the day" in (out / "report.html").read_text()
