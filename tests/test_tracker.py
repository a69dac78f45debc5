"""IoU tracker, EMA smoothing and the event engine's hysteresis."""

from __future__ import annotations

import numpy as np
import pytest
from emotion_edge.config import TrackingConfig
from emotion_edge.preprocess import FER2013_LABELS
from emotion_edge.tools.payload_schema import validate
from emotion_edge.track.events import EventEngine, FaceObservation, state_payload
from emotion_edge.track.smoothing import EmaSmoother
from emotion_edge.track.tracker import IouTracker, iou


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_ids_stable_while_faces_move():
    tr = IouTracker(TrackingConfig(iou_threshold=0.3, max_missed=2))
    a, b = [100.0, 100.0, 80.0, 80.0], [400.0, 120.0, 60.0, 60.0]
    tracks, removed = tr.update([tuple(a), tuple(b)])
    ids = {t.track_id for t in tracks}
    assert ids == {1, 2} and removed == []
    for _ in range(20):
        a[0] += 6  # moves right, overlap with the previous box stays high
        b[1] += 4
        # detector order changes every frame: ids must follow boxes, not list positions
        tracks, removed = tr.update([tuple(b), tuple(a)])
        assert removed == []
        by_id = {t.track_id: t.box for t in tracks}
        assert by_id[1] == tuple(a) and by_id[2] == tuple(b)
    assert {t.hits for t in tracks} == {21}


def test_missed_faces_disappear_after_max_missed():
    tr = IouTracker(TrackingConfig(max_missed=2))
    tr.update([(0.0, 0.0, 50.0, 50.0)])
    for expected_missed in (1, 2):
        tracks, removed = tr.update([])
        assert removed == [] and tracks[0].missed == expected_missed and not tracks[0].visible
    tracks, removed = tr.update([])
    assert removed == [1] and tracks == []


def test_reappearing_face_within_max_missed_keeps_id():
    tr = IouTracker(TrackingConfig(max_missed=3))
    tr.update([(10.0, 10.0, 50.0, 50.0)])
    tr.update([])
    tracks, _ = tr.update([(12.0, 10.0, 50.0, 50.0)])
    assert [t.track_id for t in tracks] == [1] and tracks[0].visible


def test_new_face_gets_new_id_and_far_box_does_not_steal():
    tr = IouTracker()
    tr.update([(0.0, 0.0, 50.0, 50.0)])
    tracks, _ = tr.update([(300.0, 300.0, 50.0, 50.0)])
    assert sorted(t.track_id for t in tracks) == [1, 2]
    assert {t.track_id: t.missed for t in tracks} == {1: 1, 2: 0}


def test_predict_moves_boxes_between_detections():
    tr = IouTracker(TrackingConfig(velocity_alpha=1.0))
    tr.update([(100.0, 100.0, 50.0, 50.0)])
    tr.update([(110.0, 100.0, 50.0, 50.0)])  # +10 px/frame
    t = tr.predict()[0]
    assert t.box[0] == pytest.approx(120.0)
    tr.predict()
    # detection after two predicted frames: velocity is per frame, not per detection run
    tracks, _ = tr.update([(140.0, 100.0, 50.0, 50.0)])
    assert tracks[0].velocity[0] == pytest.approx(10.0)


def test_greedy_matching_prefers_highest_iou():
    tr = IouTracker(TrackingConfig(iou_threshold=0.1))
    tr.update([(0.0, 0.0, 100.0, 100.0)])
    tracks, _ = tr.update([(60.0, 0.0, 100.0, 100.0), (5.0, 0.0, 100.0, 100.0)])
    by_id = {t.track_id: t.box for t in tracks}
    assert by_id[1] == (5.0, 0.0, 100.0, 100.0)


def test_ema_smoother_time_based():
    sm = EmaSmoother(tau_s=1.0)
    a = np.array([1.0, 0.0])
    b = np.array([0.0, 1.0])  # noqa: E702
    np.testing.assert_allclose(sm.update(1, a, 0.0), a)
    out = sm.update(1, b, 1.0)  # dt = tau: alpha = 1 - e^-1
    alpha = 1 - np.exp(-1.0)
    np.testing.assert_allclose(out, [1 - alpha, alpha], rtol=1e-5)
    # a long gap forgets the past almost completely
    np.testing.assert_allclose(sm.update(1, a, 100.0), a, atol=1e-6)
    sm.forget([1])
    assert sm.get(1) is None and len(sm) == 0
    assert np.allclose(EmaSmoother(0).update(2, b, 0.0), b)


def _probs(label: str, p: float) -> np.ndarray:
    n = len(FER2013_LABELS)
    out = np.full(n, (1 - p) / (n - 1), np.float32)
    out[FER2013_LABELS.index(label)] = p
    return out


def _engine(**kw) -> EventEngine:
    cfg = TrackingConfig(
        **{
            "min_hits": 2,
            "min_confidence": 0.4,
            "hysteresis": 0.1,
            "min_dwell_s": 0.5,
            "top_k": 3,
            **kw,
        }
    )
    return EventEngine(cfg, FER2013_LABELS, "dev1", "v1")


def _obs(fid: int, probs, hits: int) -> FaceObservation:
    return FaceObservation(fid, (10.0, 20.0, 50.0, 60.0), hits, probs)


def test_appeared_after_min_hits_then_changed_with_dwell_then_disappeared():
    eng = _engine()
    ev = eng.update([_obs(1, _probs("neutral", 0.6), 1)], [], 0, (640, 480), 0.0)
    assert ev == []  # one detection is not enough
    ev = eng.update([_obs(1, _probs("neutral", 0.6), 2)], [], 1, (640, 480), 0.1)
    assert [e.kind for e in ev] == ["appeared"] and ev[0].emotion == "neutral"
    # happy leads, but not long enough yet
    ev = eng.update([_obs(1, _probs("happy", 0.7), 3)], [], 2, (640, 480), 0.2)
    assert ev == []
    ev = eng.update([_obs(1, _probs("happy", 0.7), 4)], [], 3, (640, 480), 0.5)
    assert ev == []
    ev = eng.update([_obs(1, _probs("happy", 0.7), 5)], [], 4, (640, 480), 0.75)
    assert [e.kind for e in ev] == ["changed"]
    assert ev[0].emotion == "happy" and ev[0].previous_emotion == "neutral"
    assert ev[0].top[0] == {"emotion": "happy", "confidence": pytest.approx(0.7, abs=1e-4)}
    ev = eng.update([], [1], 5, (640, 480), 1.0)
    assert [e.kind for e in ev] == ["disappeared"] and ev[0].emotion == "happy"
    assert ev[0].duration_s == pytest.approx(0.75)
    assert eng.state_faces() == []


def test_noise_below_hysteresis_or_confidence_does_not_spam():
    eng = _engine(min_dwell_s=0.0)
    eng.update([_obs(1, _probs("neutral", 0.5), 2)], [], 0, (640, 480), 0.0)
    rng = np.random.default_rng(0)
    events = []
    for i in range(200):
        # neutral and sad alternate within 0.05 of each other: under the hysteresis margin
        p = np.full(7, 0.05, np.float32)
        p[6], p[4] = 0.35 + rng.uniform(-0.02, 0.02), 0.38
        events += eng.update([_obs(1, p / p.sum(), 3 + i)], [], i + 1, (640, 480), i * 0.1)
    assert events == []
    # a clear winner below min_confidence is ignored too
    p = _probs("surprise", 0.35)
    p[6] = 0.05
    assert eng.update([_obs(1, p / p.sum(), 500)], [], 300, (640, 480), 40.0) == []


def test_candidate_reset_when_it_stops_leading():
    eng = _engine(min_dwell_s=0.5)
    eng.update([_obs(1, _probs("neutral", 0.6), 2)], [], 0, (640, 480), 0.0)
    eng.update([_obs(1, _probs("happy", 0.7), 3)], [], 1, (640, 480), 0.1)
    eng.update([_obs(1, _probs("neutral", 0.7), 4)], [], 2, (640, 480), 0.4)
    # happy again: the dwell clock restarts, so 0.3 s later is still too early
    assert eng.update([_obs(1, _probs("happy", 0.7), 5)], [], 3, (640, 480), 0.5) == []
    assert eng.update([_obs(1, _probs("happy", 0.7), 6)], [], 4, (640, 480), 0.8) == []
    assert len(eng.update([_obs(1, _probs("happy", 0.7), 7)], [], 5, (640, 480), 1.0)) == 1


def test_unannounced_face_disappears_silently():
    eng = _engine(min_hits=3)
    eng.update([_obs(1, _probs("sad", 0.9), 1)], [], 0, (640, 480), 0.0)
    assert eng.update([], [1], 1, (640, 480), 0.1) == []


def test_event_and_state_payloads_are_schema_valid():
    eng = _engine()
    eng.update(
        [_obs(1, _probs("fear", 0.5), 1), _obs(2, _probs("sad", 0.8), 1)], [], 0, (640, 480), 1000.0
    )
    evs = eng.update(
        [_obs(1, _probs("fear", 0.5), 2), _obs(2, _probs("sad", 0.8), 2)], [], 1, (640, 480), 1000.1
    )
    assert len(evs) == 2
    ids = set()
    for e in evs:
        payload = e.to_payload(1000.2)
        validate(payload, "event")
        ids.add(payload["event_id"])
        assert payload["captured_at"] == "1970-01-01T00:16:40.100Z"
        assert payload["device_id"] == "dev1" and payload["model_version"] == "v1"
        assert len(payload["top"]) == 3
    assert len(ids) == 2
    st = state_payload("dev1", "v1", eng.state_faces(), 1, 1000.2)
    validate(st, "state")
    assert st["face_count"] == 2 and st["dominant_emotion"] in ("fear", "sad")
    empty = state_payload("dev1", "v1", [], -1)
    validate(empty, "state")
    assert empty["dominant_emotion"] is None


# -- issue 39: tracks held through misses, truthful disappeared, the room ----------------------


def test_a_missed_face_keeps_its_id_until_hold_s_and_max_missed_have_passed():
    tr = IouTracker(TrackingConfig(max_missed=2, hold_s=1.0))
    box = (100.0, 100.0, 40.0, 40.0)
    tr.update([box], ts=0.0)
    # missed on 5 runs within 0.5 s (more than max_missed, less than hold_s): held
    for k in range(1, 6):
        tracks, removed = tr.update([], ts=0.1 * k)
        assert removed == [] and not tracks[0].visible
    tracks, removed = tr.update([(104.0, 100.0, 40.0, 40.0)], ts=0.6)
    assert [t.track_id for t in tracks] == [1] and tracks[0].visible
    # now missed for longer than hold_s: gone on the first run past it
    for k in range(1, 11):
        _, removed = tr.update([], ts=0.6 + 0.1 * k)
        assert removed == []
    _, removed = tr.update([], ts=1.75)
    assert removed == [1]


def test_a_small_moving_face_is_matched_by_centre_distance_not_a_new_id():
    tr = IouTracker(TrackingConfig(iou_threshold=0.3, max_jump=0.6))
    tr.update([(100.0, 100.0, 20.0, 20.0)], ts=0.0)
    # 10 px right: IoU 0.33 -> 0.2 after the next step, under the threshold
    tracks, _ = tr.update([(110.0, 100.0, 20.0, 20.0)], ts=0.1)
    tracks, _ = tr.update([(121.0, 101.0, 20.0, 20.0)], ts=0.2)
    assert [t.track_id for t in tracks] == [1]
    # a face far away (5 face sizes) is someone else
    tracks, _ = tr.update([(121.0, 101.0, 20.0, 20.0), (300.0, 100.0, 20.0, 20.0)], ts=0.3)
    assert sorted(t.track_id for t in tracks) == [1, 2]
    # and a box of another size beside it (not around it) is not the same face either
    tr2 = IouTracker(TrackingConfig(iou_threshold=0.9))
    tr2.update([(100.0, 100.0, 20.0, 20.0)], ts=0.0)
    tracks, _ = tr2.update([(125.0, 95.0, 40.0, 40.0)], ts=0.1)
    assert sorted(t.track_id for t in tracks) == [1, 2]


def test_one_face_framed_tight_and_loose_by_two_views_stays_one_track():
    tr = IouTracker(TrackingConfig(iou_threshold=0.3, max_jump=0.6))
    tr.update([(491.0, 119.0, 61.0, 61.0)], ts=0.0)
    # the next view frames the same face at half the size, on the same centre: matched
    tracks, _ = tr.update([(504.0, 139.0, 31.0, 31.0)], ts=0.1)
    assert [t.track_id for t in tracks] == [1]
    # two tracks that end up on one face (one inside the other) merge into the older id
    tr2 = IouTracker(TrackingConfig(iou_threshold=0.9, max_jump=0.0))
    tr2.update([(100.0, 100.0, 60.0, 60.0)], ts=0.0)
    tracks, removed = tr2.update([(110.0, 115.0, 36.0, 36.0)], ts=0.1)
    assert [t.track_id for t in tracks] == [1] and removed == [2]
    assert tracks[0].visible and tracks[0].box == (110.0, 115.0, 36.0, 36.0)


def test_a_small_face_inside_a_close_faces_box_is_another_person():
    """A person behind, seen within the corner of a close face's (loose) box, keeps an id of
    its own, and a miss of the close face does not hand its id to the small one."""
    tr = IouTracker(TrackingConfig(iou_threshold=0.3, max_jump=0.6, max_missed=2, hold_s=2.0))
    big, small = (54.0, 64.0, 380.0, 380.0), (408.0, 70.0, 24.0, 24.0)
    tr.update([big, small], ts=0.0)
    tracks, removed = tr.update([big, small], ts=0.1)
    assert sorted(t.track_id for t in tracks) == [1, 2] and removed == []
    # the close face missed for a run: it is carried, the small face stays id 2
    tracks, removed = tr.update([small], ts=0.2)
    by_id = {t.track_id: t for t in tracks}
    assert removed == [] and by_id[1].box == big and by_id[2].box == small
    tracks, _ = tr.update([big, small], ts=0.3)
    assert {t.track_id: t.box for t in tracks} == {1: big, 2: small}


def test_carried_face_changes_nothing_and_disappeared_tells_stable_and_dominant_emotion():
    eng = _engine(min_dwell_s=0.2)
    eng.update([_obs(1, _probs("happy", 0.6), 1)], [], 0, (640, 480), 0.0)
    (ev,) = eng.update([_obs(1, _probs("happy", 0.6), 2)], [], 1, (640, 480), 0.1)
    assert ev.kind == "appeared"
    t = 0.1
    for _ in range(30):  # 3 s happy
        t += 0.1
        eng.update([_obs(1, _probs("happy", 0.6), 3)], [], 2, (640, 480), t)
    # carried (not detected) with other probabilities: no change is judged on them
    carried = FaceObservation(1, (10.0, 20.0, 50.0, 60.0), 3, _probs("fear", 0.9), detected=False)
    for _ in range(5):
        t += 0.1
        assert eng.update([carried], [], 3, (640, 480), t) == []
    assert eng.state_faces()[0]["detected"] is False
    # then 1 s of sad, reported as a change
    evs = []
    for _ in range(10):
        t += 0.1
        evs += eng.update([_obs(1, _probs("sad", 0.7), 4)], [], 4, (640, 480), t)
    assert [e.kind for e in evs] == ["changed"] and evs[0].emotion == "sad"
    # the last smoothed probabilities lean to angry when the face goes
    eng.update([_obs(1, _probs("angry", 0.45), 5)], [], 5, (640, 480), t + 0.1)
    (gone,) = eng.update([], [1], 6, (640, 480), t + 0.2)
    payload = gone.to_payload(t + 0.3)
    validate(payload, "event")
    # the stable emotion with the confidence it was reported with, not angry's last value
    assert payload["emotion"] == "sad" and payload["confidence"] == pytest.approx(0.7, abs=1e-3)
    assert payload["top"][0]["emotion"] == "angry"
    # happy led 3 of the ~4.6 tracked seconds
    assert payload["dominant_emotion"] == "happy"
    assert 0.6 < payload["dominant_share"] < 0.75


def test_state_room_is_the_mean_over_faces_in_view():
    eng = _engine()
    a, b = _probs("happy", 0.8), _probs("sad", 0.5)
    eng.update([_obs(1, a, 2), _obs(2, b, 2)], [], 0, (640, 480), 0.0)
    room = eng.room()
    assert room["face_count"] == 2 and room["emotion"] == "happy"
    assert room["probabilities"]["sad"] == pytest.approx((a[4] + b[4]) / 2, abs=1e-4)
    assert room["confidence"] == pytest.approx((a[3] + b[3]) / 2, abs=1e-4)
    st = state_payload("dev1", "v1", eng.state_faces(), 1, 5.0, room=room)
    validate(st, "state")
    empty = state_payload("dev1", "v1", [], 1, 5.0)
    validate(empty, "state")
    assert empty["room"] == {
        "face_count": 0,
        "emotion": None,
        "confidence": None,
        "probabilities": {},
    }
