"""The synthetic room benchmark's generator and scorer (benchmarks/room/), on a tiny clip.

The clip is rendered from one real face (scikit-image's astronaut, no FER2013 needed) into a
real scikit-image background; the scorer is fed hand-made detections, tracks, events and
timeline samples whose right answers are known, so every metric can be seen to move (and
fail); the daemon run is checked against the real detector on the clip."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `benchmarks` is a top-level folder, not an installed package

from benchmarks.room import daemon_run, scenes, score  # noqa: E402


def tiny_pool(n_per_label: int = 4) -> scenes.FacePool:
    """Stand-in for FER2013: the astronaut's face (scikit-image, public domain) cropped as a
    FER2013 face is framed, in a different brightness per entry."""
    import cv2
    import skimage.data

    gray = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)
    face = cv2.resize(gray[57:179, 164:286], (48, 48), interpolation=cv2.INTER_AREA)
    n = n_per_label * len(scenes.LABELS)
    labels = np.repeat(np.arange(len(scenes.LABELS)), n_per_label)
    gains = np.linspace(0.8, 1.2, n)
    images = np.stack([np.clip(face * g, 0, 255).astype(np.uint8) for g in gains])
    by_label = {lab: [int(i) for i in np.flatnonzero(labels == lab)] for lab in range(7)}
    return scenes.FacePool(images, np.arange(n), labels, by_label)


TINY = scenes.SceneSpec(
    "tiny",
    3.0,
    "brick",
    (
        scenes.PersonSpec(180, 200, 60, sway_x=10),
        scenes.PersonSpec(460, 260, 120, sway_x=20, roll_deg=10),
    ),
    occlusion=scenes.OcclusionSpec(0, 2.0),
    segment_s=(1.0, 1.2),
)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    video = tmp_path_factory.mktemp("room") / "tiny.mp4"
    truth = scenes.render_scene(TINY, tiny_pool(), seed=1, video_path=video)
    return video, truth


def perfect_boxes(truth) -> dict[int, list[tuple]]:
    return {i: [tuple(f[1:5]) for f in faces] for i, faces in enumerate(truth.faces)}


def perfect_tracks(truth, swap_at: int | None = None) -> dict[int, list]:
    """Face id = person + 1; from frame `swap_at` on, the two people's ids are swapped."""
    out = {}
    for i, faces in enumerate(truth.faces):
        rows = []
        for f in faces:
            fid = int(f[0]) + 1
            if swap_at is not None and i >= swap_at:
                fid = 3 - fid
            rows.append((fid, tuple(f[1:5])))
        out[i] = rows
    return out


def test_clip_and_truth_agree(clip):
    from emotion_edge.config import SourceConfig
    from emotion_edge.video.sources import make_source

    video, truth = clip
    assert truth.n_frames == 45 and len(truth.faces) == 45
    # one expression switch per 1-1.2 s for each person: 2 per person in 3 s
    assert len(truth.switches) == 4
    assert all(s["from"] != s["to"] for s in truth.switches)
    # the box rule: a 60 px face sits in a 75 px patch
    f0 = next(f for f in truth.faces[0] if f[0] == 0)
    assert f0[4] == pytest.approx(60, abs=1.5) and f0[3] == f0[4]
    # the occluder hides person 0 around 2.0-2.5 s, and only then
    hidden = [i for i, faces in enumerate(truth.faces) for f in faces if f[0] == 0 and f[6]]
    assert hidden and min(hidden) >= 27 and max(hidden) <= 40
    # the daemon's own video source reads every frame back, at 640x480
    src = make_source(SourceConfig(kind="video", uri=str(video), loop=False))
    src.open()
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    src.close()
    assert len(frames) == truth.n_frames and frames[0].image.shape == (480, 640)


def test_detection_recall_and_precision(clip):
    _, truth = clip
    perfect = score.detection_scores(truth, perfect_boxes(truth))
    assert perfect["40-100"]["recall"] == 1.0 and perfect["100-250"]["recall"] == 1.0
    assert perfect["all"]["precision"] == 1.0 and perfect["all"]["false"] == 0
    # hidden faces are neither missed nor false when boxed
    assert perfect["all"]["faces"] < sum(len(f) for f in truth.faces)
    # boxes 200 px off: every face missed, every box false
    off = {i: [(x + 200, y, w, h) for x, y, w, h in b] for i, b in perfect_boxes(truth).items()}
    bad = score.detection_scores(truth, off)
    assert bad["all"]["recall"] == 0.0 and bad["all"]["precision"] == 0.0
    # nothing found: recall 0, precision undefined
    none = score.detection_scores(truth, {i: [] for i in range(truth.n_frames)})
    assert none["40-100"]["recall"] == 0.0 and none["all"]["precision"] is None
    # a box a little bigger and offset still matches (IoU >= 0.3 or centre inside)
    x, y, w, h = truth.faces[0][0][1:5]
    assert score.match_boxes([(x - 5, y + 8, w * 1.3, h * 1.2)], [(x, y, w, h)]) == [(0, 0)]
    assert score.match_boxes([(x + w / 2 - 3, y + h / 2 - 3, 6, 6)], [(x, y, w, h)]) == []


def test_id_switches(clip):
    _, truth = clip
    steady = score.identity_scores(truth, score.associate(truth, perfect_tracks(truth)))
    assert steady["id_switches"] == 0 and steady["fragments"] == 0
    swapped = score.identity_scores(
        truth, score.associate(truth, perfect_tracks(truth, swap_at=20))
    )
    assert swapped["id_switches"] == 2 and swapped["max_id_switches"] == 1
    # a track that drops out for 5 frames and comes back with its id: one fragment
    gap = perfect_tracks(truth)
    for i in range(10, 15):
        gap[i] = [r for r in gap[i] if r[0] != 2]
    frag = score.identity_scores(truth, score.associate(truth, gap))
    assert frag["id_switches"] == 0 and frag["fragments"] == 1


def changed_event(truth, person: int, frame: int, emotion: str) -> dict:
    return {"kind": "changed", "face_id": person + 1, "emotion": emotion, "frame": frame}


def test_changed_recall_and_false_changes(clip):
    _, truth = clip
    assoc = score.associate(truth, perfect_tracks(truth))
    told = [changed_event(truth, s["person"], s["frame"] + 8, s["to"]) for s in truth.switches]
    res = score.changed_scores(truth, told, assoc)
    assert res["recall"] == 1.0 and res["false_constant"] == 0 and res["in_window_wrong"] == 0
    # each told 8 frames after its frame: the switch time is the fade's middle, within a frame
    fps = truth.fps
    assert all(abs(d - 8 / fps) <= 1 / fps for d in res["delays_s"])
    assert abs(res["delay_median_s"] - 8 / fps) <= 1 / fps
    # one switch not told: recall 3/4
    res = score.changed_scores(truth, told[1:], assoc)
    assert res["told"] == 3 and res["recall"] == 0.75
    # the right label but 3 s late is not a hit: nothing told
    s0 = truth.switches[0]
    late = changed_event(truth, s0["person"], s0["frame"] + 45, s0["to"])
    res = score.changed_scores(truth, [late], assoc)
    assert res["told"] == 0
    # a wrong label right after a switch is wrong, not a hit
    wrong_label = next(lab for lab in scenes.LABELS if lab not in (s0["to"], s0["from"]))
    res = score.changed_scores(
        truth, [changed_event(truth, s0["person"], s0["frame"] + 3, wrong_label)], assoc
    )
    assert res["told"] == 0 and res["in_window_wrong"] == 1
    # a change reported while the expression holds is false, per face-minute
    calm = changed_event(truth, 1, 2, "happy")  # 0.13 s into the clip, no switch near
    res = score.changed_scores(truth, [calm], assoc)
    assert res["false_constant"] == 1 and res["false_per_face_minute"] > 0
    # an event on a face that matches nobody
    ghost = {"kind": "changed", "face_id": 99, "emotion": "sad", "frame": 5}
    assert score.changed_scores(truth, [ghost], assoc)["on_no_one"] == 1


def test_read_right(clip):
    _, truth = clip
    assoc = score.associate(truth, perfect_tracks(truth))
    samples_right, samples_wrong = [], []
    for i in range(0, truth.n_frames, 3):
        faces_r, faces_w = [], []
        for f in truth.faces[i]:
            label = scenes.LABELS[f[5]]
            other = scenes.LABELS[(f[5] + 1) % 7]
            faces_r.append({"face_id": int(f[0]) + 1, "emotion": label})
            faces_w.append({"face_id": int(f[0]) + 1, "emotion": other})
        samples_right.append({"frame": i, "faces": faces_r})
        samples_wrong.append({"frame": i, "faces": faces_w})
    right = score.read_right_scores(truth, samples_right, assoc)["all"]
    wrong = score.read_right_scores(truth, samples_wrong, assoc)["all"]
    assert right["judged"] > 0 and right["rate"] == 1.0
    assert wrong["judged"] == right["judged"] and wrong["rate"] == 0.0


def test_overrides_parse():
    assert daemon_run.parse_override("detector.kind=blazeface_full") == (
        "detector",
        "kind",
        "blazeface_full",
    )
    assert daemon_run.parse_override("tracking.hold_s=1.5") == ("tracking", "hold_s", 1.5)
    assert daemon_run.parse_override("pipeline.adaptive=false")[2] is False
    with pytest.raises(daemon_run.UsageError):
        daemon_run.parse_override("hold_s=1")


def test_daemon_run_sees_every_frame_on_clip_time(clip):
    """The harness: the real pipeline gets every frame, in order, stamped with clip time."""
    video, truth = clip
    pins, _, _ = daemon_run.before_pins()
    cfg = daemon_run.make_config(video, False, pins)
    rec, pipe = daemon_run.run_clip(cfg, truth.fps)
    assert rec.frames == truth.n_frames
    assert sorted(rec.tracks) == list(range(truth.n_frames))
    assert sorted(rec.boxes) == list(range(truth.n_frames))  # detection on every frame
    assert pipe.clock() == pytest.approx(daemon_run.T0 + (truth.n_frames - 1) / truth.fps)
    assert rec.detector == "blazeface"
    # the real detector finds the 120 px person where the ground truth says it is
    found = score.detection_scores(truth, rec.boxes)
    assert found["100-250"]["recall"] >= 0.9 and found["all"]["false"] == 0


def test_switch_readable_is_the_ceiling_for_changed(clip):
    """Switches whose new label the smoothed timeline showed within 2 s, told or not."""
    _, truth = clip
    assoc = score.associate(truth, perfect_tracks(truth))

    def samples(shown):
        out = []
        for i in range(truth.n_frames):
            faces = [
                {"face_id": int(f[0]) + 1, "emotion": shown(int(f[0]), i)} for f in truth.faces[i]
            ]
            out.append({"frame": i, "faces": faces})
        return out

    truthful = samples(lambda p, i: score.label_at(truth, p, i)[0])
    stuck = samples(lambda p, i: truth.persons[p]["segments"][0]["label"])
    assert score.switch_readable_scores(truth, truthful, assoc)["readable"] == 4
    # a label stuck at the first expression shows no later switch (a switch back to the
    # first label would count: it is shown)
    back = sum(
        s["to"] == truth.persons[s["person"]]["segments"][0]["label"] for s in truth.switches
    )
    assert score.switch_readable_scores(truth, stuck, assoc)["readable"] == back


def test_before_ref_resolves_commits_only():
    from benchmarks.room import old_code

    assert all(c in "0123456789abcdef" for c in old_code.resolve("HEAD"))
    with pytest.raises(daemon_run.UsageError, match="not a commit"):
        old_code.resolve("no-such-ref-anywhere")


def test_replayed_detections_give_the_same_run(clip, tmp_path):
    """The second run replays the first one's detections (same detector code, settings and
    clip) and the tracker, events and timeline come out the same; other settings do not."""
    video, truth = clip
    pins, _, _ = daemon_run.before_pins()
    cfg = daemon_run.make_config(video, False, pins)
    first, _ = daemon_run.run_clip(cfg, truth.fps, tmp_path, truth.params)
    second, _ = daemon_run.run_clip(cfg, truth.fps, tmp_path, truth.params)
    assert not first.replayed and second.replayed
    assert sum(map(len, first.boxes.values())) > 0  # something to replay
    assert second.boxes == first.boxes and second.tracks == first.tracks
    assert [e["kind"] for e in second.events] == [e["kind"] for e in first.events]
    other = daemon_run.make_config(video, False, pins, {"detector": {"min_score": 0.6}})
    third, _ = daemon_run.run_clip(other, truth.fps, tmp_path, truth.params)
    assert not third.replayed


def test_table_marks_targets():
    from benchmarks.synthetic_room import meets

    assert meets("0.92 (90/98)", ">= 0.90").endswith("✓")
    assert meets("0.89 (89/100)", ">= 0.90").endswith("✗")
    assert meets("2 (mean 0.50; 4/4)", "<= 1").endswith("✗")
    assert meets("0.40 (2 in 5.0 min)", "<= 0.5").endswith("✓")
    assert meets("-", ">= 0.90") == "-" and meets("0.5", "") == "0.5"


def test_occluded_face_keeps_or_loses_its_id(clip):
    _, truth = clip
    steady = score.associate(truth, perfect_tracks(truth))
    assert score.occlusion_scores(truth, steady) == {"occlusions": 1, "kept_id": 1}
    hidden_until = max(i for i, fs in enumerate(truth.faces) for f in fs if f[0] == 0 and f[6])
    renamed = perfect_tracks(truth)
    for i in range(hidden_until + 1, truth.n_frames):
        renamed[i] = [(7 if fid == 1 else fid, b) for fid, b in renamed[i]]
    lost = score.associate(truth, renamed)
    assert score.occlusion_scores(truth, lost) == {"occlusions": 1, "kept_id": 0}


def test_generation_is_deterministic(clip, tmp_path):
    import hashlib

    video, truth = clip
    again = scenes.render_scene(TINY, tiny_pool(), seed=1, video_path=tmp_path / "again.mp4")
    assert again.to_json() == truth.to_json()
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (video, tmp_path / "again.mp4")]
    assert digest[0] == digest[1]
    other = scenes.render_scene(TINY, tiny_pool(), seed=2, video_path=tmp_path / "other.mp4")
    assert other.faces != truth.faces  # another seed, other motion and faces


@pytest.mark.slow
@pytest.mark.realdata
def test_face_pool_is_publictest_with_clear_ferplus_majorities(data_dir):
    from emotion_edge_train.data import USAGES, ferplus_majority, load_fer

    pool = scenes.load_face_pool(data_dir, seed=0)
    ds = load_fer(data_dir)
    assert set(ds.usage[pool.rows].tolist()) == {USAGES.index("PublicTest")}
    votes = ds.ferplus_votes[pool.rows]
    assert (ferplus_majority(votes) == pool.labels).all()
    assert (votes.max(axis=1) >= scenes.MIN_VOTE_SHARE * votes.sum(axis=1)).all()
    assert (pool.images == ds.images[pool.rows]).all()
    # scenes draw from disjoint shares: no face is in two scenes
    shares = [pool.for_scene(k, 3) for k in range(3)]
    sets = [{i for q in s.by_label.values() for i in q} for s in shares]
    assert not (sets[0] & sets[1]) and not (sets[1] & sets[2]) and not (sets[0] & sets[2])


def test_detection_gaps(clip):
    _, truth = clip
    boxes = perfect_boxes(truth)
    assert score.detection_gaps(truth, boxes) == {
        "gaps_over_s": 0,
        "over_s": 1.0,
        "longest_s": 0.0,
    }
    for i in range(5, 25):  # person 1 (the second box) missed for 20 frames = 1.33 s
        boxes[i] = [b for b, f in zip(boxes[i], truth.faces[i], strict=True) if f[0] != 1]
    gaps = score.detection_gaps(truth, boxes)
    assert gaps["gaps_over_s"] == 1 and gaps["longest_s"] == pytest.approx(20 / 15, abs=0.01)


@pytest.mark.parametrize(
    "bad",
    [["--variant", "bad"], ["--variant", "x=tracking.nope=1"], ["--scenes", "hall"]],
)
def test_bad_arguments_exit_2_before_any_work(bad, tmp_path, capsys):
    from benchmarks.synthetic_room import main

    assert main([*bad, "--out", str(tmp_path), "--clips", str(tmp_path / "clips")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("synthetic_room: " in err or "--scenes: " in err)
    assert not (tmp_path / "clips").exists()


def test_report_from_a_scored_run(clip):
    """score_clip -> pooled -> markdown/variants_note on a real (tiny) run: the table shows
    the figures and marks them against the targets."""
    from benchmarks import synthetic_room as sr

    video, truth = clip
    pins, _, _ = daemon_run.before_pins()
    rec, _ = daemon_run.run_clip(daemon_run.make_config(video, False, pins), truth.fps)
    per_clip = {"tiny": sr.score_clip(truth, rec)}
    result = {
        "clips": {"tiny": {"frames": truth.n_frames, "switches": 4, "persons": 2}},
        "seconds": 1.0,
        "variants": {
            "before": {
                "overrides": pins,
                "detector": rec.detector,
                "model_version": rec.model_version,
                "room": sr.pooled(per_clip),
                "clips": per_clip,
            }
        },
    }
    table = sr.markdown(result)
    row = next(r for r in table.splitlines() if r.startswith("| detector recall, faces 100-250"))
    assert "✓" in row and "(" in row
    assert "| tiny | before |" in sr.clip_table(result)
    assert "`before`: detector.kind=blazeface" in sr.variants_note(result)
