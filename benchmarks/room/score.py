"""Scoring a daemon run against a synthetic room's ground truth (pure functions, no I/O).

Inputs are what the run recorded: the detector's raw boxes per frame, the tracked faces per
frame (face_id, box), the `changed` events and the timeline samples. Matching a box to a
ground-truth face: IoU >= 0.3, or the box's centre inside the true box with heights within a
factor of 2 (a detector and a labeller frame a face differently, both right); one to one,
greedy by IoU. A box matching an *ignored* face (mostly out of frame or under the occluder)
counts neither as a hit nor as a false positive, and an ignored face is never a miss.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from emotion_edge.geometry import iou

from benchmarks.room.scenes import Truth

Box = tuple[float, float, float, float]  # x, y, w, h

# face-height buckets (px, by the ground-truth box); "<24" is below the target range
BUCKETS = (
    ("<24", 0, 24),
    ("24-40", 24, 40),
    ("40-100", 40, 100),
    ("100-250", 100, 250),
    (">250", 250, 1e9),
)
IOU_MIN = 0.3
CHANGED_WINDOW_S = 2.0  # a switch is told when a `changed` comes within this after it
CHANGED_EARLY_S = 0.2  # ... or this before (the cross-fade starts before the switch)
SETTLE_S = 1.0  # timeline samples this soon after a switch are not judged (smoothing lag)


def bucket_of(height: float) -> str:
    for name, lo, hi in BUCKETS:
        if lo <= height < hi:
            return name
    return BUCKETS[-1][0]


def _centre_inside(det: Box, gt: Box) -> bool:
    cx, cy = det[0] + det[2] / 2, det[1] + det[3] / 2
    inside = gt[0] <= cx <= gt[0] + gt[2] and gt[1] <= cy <= gt[1] + gt[3]
    ratio = det[3] / gt[3] if gt[3] > 0 else 0.0
    return inside and 0.5 <= ratio <= 2.0


def match_boxes(dets: Sequence[Box], gts: Sequence[Box]) -> list[tuple[int, int]]:
    """One-to-one (det index, gt index) pairs: IoU >= 0.3 or centre inside (see module doc),
    greedy by IoU, highest first."""
    cands = []
    for di, d in enumerate(dets):
        for gi, g in enumerate(gts):
            v = iou(d, g)
            if v >= IOU_MIN or _centre_inside(d, g):
                cands.append((v, di, gi))
    cands.sort(key=lambda c: -c[0])
    used_d, used_g, pairs = set(), set(), []
    for _, di, gi in cands:
        if di in used_d or gi in used_g:
            continue
        used_d.add(di)
        used_g.add(gi)
        pairs.append((di, gi))
    return pairs


@dataclass
class FrameMatch:
    """One frame's matching: det index -> person, misses (persons), false boxes (det idx)."""

    matched: dict[int, int]
    missed: list[int]
    false: list[int]


def match_frame(dets: Sequence[Box], truth_faces: list[list]) -> FrameMatch:
    gts = [tuple(f[1:5]) for f in truth_faces]
    pairs = match_boxes(dets, gts)
    matched = {di: int(truth_faces[gi][0]) for di, gi in pairs}
    hit_g = {gi for _, gi in pairs}
    missed = [int(f[0]) for gi, f in enumerate(truth_faces) if gi not in hit_g and not f[6]]
    ignored_hits = {di for di, gi in pairs if truth_faces[gi][6]}
    false = [di for di in range(len(dets)) if di not in matched]
    return FrameMatch({di: p for di, p in matched.items() if di not in ignored_hits}, missed, false)


def detection_scores(truth: Truth, boxes_per_frame: dict[int, list[Box]]) -> dict:
    """Recall and precision per face-height bucket over the frames in `boxes_per_frame`
    (frames missing from it were not looked at, e.g. skipped detection runs)."""
    tp, fn, fp = Counter(), Counter(), Counter()
    for i, dets in boxes_per_frame.items():
        if i >= truth.n_frames:
            continue
        faces = truth.faces[i]
        height = {int(f[0]): f[4] for f in faces}
        m = match_frame(dets, faces)
        for p in m.matched.values():
            tp[bucket_of(height[p])] += 1
        for p in m.missed:
            fn[bucket_of(height[p])] += 1
        for di in m.false:
            fp[bucket_of(dets[di][3])] += 1
    out = {}
    for name, _, _ in BUCKETS:
        out[name] = _pr(tp[name], fn[name], fp[name])
    out["all"] = _pr(sum(tp.values()), sum(fn.values()), sum(fp.values()))
    out["40+"] = _pr(
        sum(tp[b] for b in ("40-100", "100-250", ">250")),
        sum(fn[b] for b in ("40-100", "100-250", ">250")),
        sum(fp[b] for b in ("40-100", "100-250", ">250")),
    )
    return out


def detection_gaps(
    truth: Truth, boxes_per_frame: dict[int, list[Box]], long_s: float = 1.0
) -> dict:
    """Runs of frames in which a visible person was not detected: how many lasted longer
    than `long_s` (a track holding `hold_s` = 1 s loses its id over such a gap) and the
    longest, in seconds. Frames where the face is ignored (hidden) neither end nor extend a
    run; frames that were not detected on (not in `boxes_per_frame`) do not count."""
    runs: dict[int, int] = defaultdict(int)
    longest, n_long = 0, 0
    limit = long_s * truth.fps

    def close(p):
        nonlocal longest, n_long
        longest = max(longest, runs[p])
        n_long += runs[p] > limit
        runs[p] = 0

    for i in range(truth.n_frames):
        if i not in boxes_per_frame:
            continue
        faces = truth.faces[i]
        m = match_frame(boxes_per_frame[i], faces)
        hit = set(m.matched.values())
        for f in faces:
            p = int(f[0])
            if f[6]:
                continue
            if p in hit:
                close(p)
            else:
                runs[p] += 1
        for p in [p for p in runs if p not in {int(f[0]) for f in faces}]:
            close(p)  # the person left the frame
    for p in list(runs):
        close(p)
    return {"gaps_over_s": n_long, "over_s": long_s, "longest_s": round(longest / truth.fps, 2)}


def _pr(tp: int, fn: int, fp: int) -> dict:
    return {
        "faces": tp + fn,
        "hits": tp,
        "false": fp,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
    }


def associate(truth: Truth, tracks_per_frame: dict[int, list[tuple[int, Box]]]) -> dict:
    """frame -> {face_id: person} for tracked faces matched to a true face that frame."""
    out: dict[int, dict[int, int]] = {}
    for i, tracks in tracks_per_frame.items():
        if i >= truth.n_frames:
            continue
        m = match_frame([b for _, b in tracks], truth.faces[i])
        out[i] = {tracks[di][0]: p for di, p in m.matched.items()}
    return out


def identity_scores(truth: Truth, assoc: dict[int, dict[int, int]]) -> dict:
    """Per person: ID switches (matched to a different face_id than the last matched one),
    distinct face_ids, fragments (tracking resumed after a gap while the face was there)."""
    present: dict[int, list[int]] = defaultdict(list)  # person -> frames it is to be tracked
    for i, faces in enumerate(truth.faces):
        for f in faces:
            if not f[6]:
                present[int(f[0])].append(i)
    per = {}
    for p, frames in sorted(present.items()):
        last_id, switches, ids, fragments, was_tracked = None, 0, set(), 0, False
        at: list[int] = []  # frames where the id changed (for looking at them)
        for i in frames:
            fid = next((fid for fid, q in assoc.get(i, {}).items() if q == p), None)
            if fid is None:
                was_tracked = False
                continue
            if last_id is not None and fid != last_id:
                switches += 1
                at.append(i)
            elif last_id is not None and not was_tracked:
                fragments += 1
            was_tracked, last_id = True, fid
            ids.add(fid)
        per[p] = {
            "id_switches": switches,
            "ids": len(ids),
            "fragments": fragments,
            "switch_frames": at,
        }
    n = len(per)
    total = sum(v["id_switches"] for v in per.values())
    return {
        "persons": n,
        "persons_tracked": sum(1 for v in per.values() if v["ids"]),  # ever given a face_id
        "id_switches": total,
        "id_switches_per_person": round(total / n, 3) if n else None,
        "max_id_switches": max((v["id_switches"] for v in per.values()), default=0),
        "fragments": sum(v["fragments"] for v in per.values()),
        "per_person": per,
    }


def _first_id(assoc: dict[int, dict[int, int]], person: int, frames) -> int | None:
    """The face_id matched to `person` in the first of `frames` that has one."""
    return next((f for i in frames for f, q in assoc.get(i, {}).items() if q == person), None)


def occlusion_scores(truth: Truth, assoc: dict[int, dict[int, int]]) -> dict:
    """Whether each occluded person has the same face_id after the occluder as before it
    (the last matched id before the hidden frames against the first one after)."""
    kept = lost = 0
    for occ in truth.occlusions:
        p = occ["person"]
        hidden = [i for i, faces in enumerate(truth.faces) for f in faces if f[0] == p and f[6]]
        if not hidden:
            continue

        before = _first_id(assoc, p, range(min(hidden) - 1, max(-1, min(hidden) - 16), -1))
        after = _first_id(assoc, p, range(max(hidden) + 1, min(truth.n_frames, max(hidden) + 16)))
        if before is not None and before == after:
            kept += 1
        else:
            lost += 1
    return {"occlusions": kept + lost, "kept_id": kept}


def _event_person(ev: dict, assoc: dict[int, dict[int, int]], truth: Truth) -> int | None:
    """The person an event's face is: by the face_id's match at the event frame (or the
    nearest frame within 0.5 s), else by the event's box."""
    i = int(ev["frame"])
    span = int(truth.fps / 2)
    for d in sorted(range(-span, span + 1), key=abs):
        p = assoc.get(i + d, {}).get(int(ev["face_id"]))
        if p is not None:
            return p
    if 0 <= i < truth.n_frames and ev.get("box") is not None:
        b = ev["box"]
        m = match_frame([(b["x"], b["y"], b["w"], b["h"])], truth.faces[i])
        if m.matched:
            return next(iter(m.matched.values()))
    return None


def changed_scores(truth: Truth, events: list[dict], assoc: dict[int, dict[int, int]]) -> dict:
    """How `changed` events tell the true switches.

    `events`: {"kind", "face_id", "emotion", "frame", "box"} (frame = the clip's frame index).
    A switch is told by the first `changed` of that person naming the new label from 0.2 s
    before to 2 s after it. A `changed` that tells no switch is *false*; "false per face-
    minute" divides those outside every switch window by the time tracked faces held an
    expression (matched to a person, not within 2 s after a switch). Wrong-label or repeated
    events inside a window are counted apart (`in_window_wrong`), events on faces that are no
    one apart too."""
    fps = truth.fps
    switches = [dict(s, told=False) for s in truth.switches]
    changed = [e for e in events if e["kind"] == "changed"]
    false_constant = in_window_wrong = on_no_one = 0
    delays: list[float] = []  # seconds from a told switch to its `changed`
    for ev in sorted(changed, key=lambda e: e["frame"]):
        t = ev["frame"] / fps
        p = _event_person(ev, assoc, truth)
        if p is None:
            on_no_one += 1
            continue
        windows = [
            s
            for s in switches
            if s["person"] == p and s["t_s"] - CHANGED_EARLY_S <= t <= s["t_s"] + CHANGED_WINDOW_S
        ]
        hit = next((s for s in windows if not s["told"] and s["to"] == ev["emotion"]), None)
        if hit is not None:
            hit["told"] = True
            delays.append(round(t - hit["t_s"], 3))
        elif windows:
            in_window_wrong += 1
        else:
            false_constant += 1
    # time tracked faces held an expression (outside switch windows): a face nobody tracks
    # cannot be told wrong, so it does not dilute the rate
    constant_frames = 0
    win = defaultdict(list)
    for s in truth.switches:
        win[s["person"]].append((s["t_s"] - CHANGED_EARLY_S, s["t_s"] + CHANGED_WINDOW_S))
    for i, faces in enumerate(truth.faces):
        t = i / fps
        tracked = set(assoc.get(i, {}).values())
        for f in faces:
            p = int(f[0])
            if f[6] or p not in tracked:
                continue
            if not any(a <= t <= b for a, b in win[p]):
                constant_frames += 1
    minutes = constant_frames / fps / 60.0
    told = sum(s["told"] for s in switches)
    return {
        "switches": len(switches),
        "told": told,
        "recall": round(told / len(switches), 4) if switches else None,
        "changed_events": len(changed),
        "false_constant": false_constant,
        "face_minutes_constant": round(minutes, 3),
        "false_per_face_minute": round(false_constant / minutes, 3) if minutes else None,
        "in_window_wrong": in_window_wrong,
        "on_no_one": on_no_one,
        "delays_s": delays,
        "delay_median_s": round(statistics.median(delays), 3) if delays else None,
    }


def switch_readable_scores(
    truth: Truth, samples: list[dict], assoc: dict[int, dict[int, int]]
) -> dict:
    """Switches after which the face's smoothed leading label (timeline samples) showed the
    new label within 2 s: the most `changed` could tell with this classifier and smoothing.
    A switch that is readable but not told was held back by the event rules."""
    by_person: dict[int, list[tuple[float, str]]] = defaultdict(list)
    for s in samples:
        i = int(s["frame"])
        for face in s["faces"]:
            p = assoc.get(i, {}).get(int(face["face_id"]))
            if p is not None:
                by_person[p].append((i / truth.fps, face["emotion"]))
    readable = 0
    for sw in truth.switches:
        t0, t1 = sw["t_s"] - CHANGED_EARLY_S, sw["t_s"] + CHANGED_WINDOW_S
        if any(t0 <= t <= t1 and lab == sw["to"] for t, lab in by_person[sw["person"]]):
            readable += 1
    n = len(truth.switches)
    return {"switches": n, "readable": readable, "rate": round(readable / n, 4) if n else None}


def label_at(truth: Truth, person: int, frame: int) -> tuple[str | None, float]:
    """The true label of a person at a frame and seconds since its last switch."""
    t = frame / truth.fps
    segs = truth.persons[person]["segments"]
    for seg in segs:
        if seg["start_s"] <= t < seg["end_s"]:
            return seg["label"], t - seg["start_s"]
    if segs and t >= segs[-1]["end_s"]:
        return segs[-1]["label"], t - segs[-1]["start_s"]
    return None, 0.0


def read_right_scores(truth: Truth, samples: list[dict], assoc: dict[int, dict[int, int]]) -> dict:
    """Timeline samples whose leading label equals the truth, per face-height bucket.

    `samples`: {"frame", "faces": [{"face_id", "emotion"}]}. Faces matched to no one and
    samples within 1 s of a switch (the smoothing is still moving) are not judged."""
    right, judged = Counter(), Counter()
    faces_seen: dict[str, set] = defaultdict(set)  # bucket -> (person, segment start) judged
    for s in samples:
        i = int(s["frame"])
        if i >= truth.n_frames:
            continue
        heights = {int(f[0]): f[4] for f in truth.faces[i] if not f[6]}
        for face in s["faces"]:
            p = assoc.get(i, {}).get(int(face["face_id"]))
            if p is None or p not in heights:
                continue
            label, since = label_at(truth, p, i)
            first = truth.persons[p]["segments"][0]["start_s"]
            if label is None or (since < SETTLE_S and i / truth.fps - first > SETTLE_S):
                continue
            b = bucket_of(heights[p])
            judged[b] += 1
            right[b] += face["emotion"] == label
            faces_seen[b].add((p, round(i / truth.fps - since, 3)))
    out = {}
    for name, _, _ in BUCKETS:
        out[name] = {**_rate(right[name], judged[name]), "faces": len(faces_seen[name])}
    every = set().union(*faces_seen.values()) if faces_seen else set()
    out["all"] = {**_rate(sum(right.values()), sum(judged.values())), "faces": len(every)}
    return out


def _rate(k: int, n: int) -> dict:
    return {"right": k, "judged": n, "rate": round(k / n, 4) if n else None}
