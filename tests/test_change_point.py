"""Change points of a face's raw evidence: found at a step, not in flicker or drift; the
smoother restarts there, and the event engine's margin is the lower one just after."""

from __future__ import annotations

import numpy as np
from emotion_edge.config import TrackingConfig
from emotion_edge.preprocess import FER2013_LABELS
from emotion_edge.track.change_point import ChangePointDetector
from emotion_edge.track.events import EventEngine, FaceObservation
from emotion_edge.track.smoothing import EmotionSmoother

FPS = 15.0


def _probs(**mass: float) -> np.ndarray:
    """A distribution with the named labels' mass, the rest spread over the others."""
    out = np.zeros(len(FER2013_LABELS), np.float32)
    for lab, p in mass.items():
        out[FER2013_LABELS.index(lab)] = p
    rest = [i for i, v in enumerate(out) if v == 0]
    out[rest] = (1.0 - out.sum()) / len(rest)
    return out


def test_a_step_is_one_change_point_with_the_new_evidence():
    det = ChangePointDetector(0.3)
    before, after = _probs(angry=0.7, neutral=0.15), _probs(fear=0.48, angry=0.25)
    found = []
    for i in range(int(4 * FPS)):
        ts = i / FPS
        out = det.update(1, before if ts < 2.0 else after, ts)
        if out is not None:
            found.append((ts, out))
    assert len(found) == 1  # told once, not on every frame of the new expression
    ts, now = found[0]
    assert 2.0 <= ts <= 2.0 + 0.4  # within the recent window of the step
    # the recent evidence it returns has moved away from the old expression
    assert 0.5 * float(np.abs(now - before).sum()) >= 0.3
    assert det.last(1) == ts
    det.forget([1])
    assert det.last(1) is None


def test_flicker_and_slow_drift_are_no_change_point():
    det = ChangePointDetector(0.3)
    rng = np.random.default_rng(0)
    for i in range(int(20 * FPS)):
        ts = i / FPS
        # neutral and sad trade places every frame, and sad slowly gains over 20 s
        drift = 0.2 * ts / 20.0
        p = _probs(neutral=0.4 - drift + rng.uniform(-0.08, 0.08), sad=0.3 + drift)
        assert det.update(1, p, ts) is None, ts
    assert det.last(1) is None


def test_at_a_low_frame_rate_the_windows_stretch_to_hold_the_evidence():
    for fps in (4.0, 2.0):
        det = ChangePointDetector(0.3)
        found = []
        for i in range(int(8 * fps)):
            ts = i / fps
            p = _probs(happy=0.8) if ts < 4.0 else _probs(sad=0.7, happy=0.1)
            if det.update(1, p, ts) is not None:
                found.append(ts)
        assert len(found) == 1 and 4.0 <= found[0] <= 4.0 + 2.5 / fps, (fps, found)


def test_distance_one_turns_change_points_off():
    det = ChangePointDetector(1.0)
    for i in range(60):
        p = _probs(happy=0.9) if i < 30 else _probs(sad=0.9)
        assert det.update(1, p, i / FPS) is None


def test_smoother_restarts_at_the_step_instead_of_carrying_the_old_expression():
    plain, restarting = EmotionSmoother(1.0, 1.0), EmotionSmoother(1.0, 0.3)
    before, after = _probs(angry=0.8), _probs(fear=0.6)
    for i in range(int(2.6 * FPS)):
        ts = i / FPS
        p = before if ts < 2.0 else after
        a, b = plain.update(1, p, ts), restarting.update(1, p, ts)
    fear, angry = FER2013_LABELS.index("fear"), FER2013_LABELS.index("angry")
    assert a[angry] > a[fear]  # tau 1 s: half a second after the step the old one still leads
    assert b[fear] > b[angry] + 0.2
    assert restarting.last_change(1) is not None and plain.last_change(1) is None
    restarting.forget([1])
    assert restarting.get(1) is None and restarting.last_change(1) is None


def _engine() -> EventEngine:
    cfg = TrackingConfig(
        min_hits=1,
        min_confidence=0.3,
        hysteresis=0.5,
        hysteresis_after_change=0.0,
        after_change_s=1.5,
        min_dwell_s=0.2,
    )
    return EventEngine(cfg, FER2013_LABELS, "dev", "v")


def _run(engine: EventEngine, probs: np.ndarray, t0: float, t1: float, change_ts) -> list:
    events = []
    for i in range(int(t0 * FPS), int(t1 * FPS)):
        ts = i / FPS
        ob = FaceObservation(1, (0.0, 0.0, 50.0, 50.0), 5, probs, change_ts=change_ts)
        events += engine.update([ob], [], i, (640, 480), ts)
    return events


def test_a_lead_under_hysteresis_is_told_only_just_after_a_change_point():
    start, lead = _probs(angry=0.7), _probs(fear=0.45, angry=0.25)
    # no change point: a 0.2 lead never reaches hysteresis 0.5
    eng = _engine()
    assert [e.kind for e in _run(eng, start, 0.0, 1.0, None)] == ["appeared"]
    assert _run(eng, lead, 1.0, 6.0, None) == []
    # the same lead right after a change point: told after the dwell
    eng = _engine()
    _run(eng, start, 0.0, 1.0, None)
    ev = _run(eng, lead, 1.0, 3.0, 1.0)
    assert [(e.kind, e.emotion, e.previous_emotion) for e in ev] == [("changed", "fear", "angry")]
    assert 1.2 <= ev[0].captured_ts <= 1.3
    # a change point long ago no longer lowers the margin
    eng = _engine()
    _run(eng, start, 0.0, 1.0, None)
    assert _run(eng, lead, 3.0, 6.0, 1.0) == []
