"""Tune the `changed` rule on the synthetic room: one pipeline run per clip, many rules replayed.

Detection, tracking and classification do not depend on the event rule's settings, so each
clip runs through the real daemon pipeline once, recording what the event engine was given
each frame (tracked faces, the classifier's raw probabilities, faces carried undetected, faces
removed). The smoother and the event engine then replay those frames for every combination of
`[tracking] smoothing_tau_s`, `min_confidence`, `hysteresis` and `min_dwell_s` in a grid, and
each replay's `changed` events are scored like the benchmark scores them (benchmarks/room/
score.py: a true switch told with the right label within 2 s; false `changed` per face-minute
of constant expression).

    python -m benchmarks.room.tune_events --data ../shared/data --out /tmp/tune
"""

from __future__ import annotations

import argparse
import itertools
import json
import pickle
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.common import log
from benchmarks.room import daemon_run, scenes, score

GRID = {
    "smoothing_tau_s": (0.3, 0.5, 0.8, 1.2),
    "min_confidence": (0.0, 0.3, 0.4),
    "hysteresis": (0.0, 0.05, 0.1, 0.2),
    "min_dwell_s": (0.3, 0.5, 0.8, 1.2),
}


class EngineTap:
    """Wraps the pipeline's smoother and event engine; keeps each frame's engine input."""

    def __init__(self, pipe) -> None:
        self.frames: list[dict] = []
        self._raw: dict[int, object] = {}
        smoother, engine = pipe.smoother, pipe.engine
        inner_update, inner_engine = smoother.update, engine.update

        def update(key, probs, ts):
            self._raw[key] = probs
            return inner_update(key, probs, ts)

        def engine_update(obs, removed, frame_index, frame_size, ts, announce_now=False):
            self.frames.append(
                {
                    "obs": [
                        (o.face_id, o.box, o.hits, self._raw.get(o.face_id), o.detected)
                        for o in obs
                    ],
                    "removed": list(removed),
                    "frame": frame_index,
                    "size": frame_size,
                    "ts": ts,
                    "announce_now": announce_now,
                }
            )
            self._raw = {}
            return inner_engine(obs, removed, frame_index, frame_size, ts, announce_now)

        smoother.update = update
        engine.update = engine_update


def record_clip(video: Path, fps: float):
    """One pipeline run: (engine frames, tracks per frame, labels)."""
    from emotion_edge.app import build_pipeline
    from emotion_edge.video.sources import make_source

    cfg = daemon_run.make_config(video, False)
    pipe = build_pipeline(cfg, output=daemon_run.CollectingOutput())
    feed = daemon_run.ClipFeed(make_source(cfg.source), fps)
    pipe.capture, pipe.clock = feed, feed.now
    tap, tracks = EngineTap(pipe), daemon_run.TrackTap()
    pipe.taps.append(tracks)
    pipe.run()
    return tap.frames, tracks.tracks, tuple(pipe.classifier.labels), cfg.tracking


def replay(frames: list[dict], labels, tracking) -> list[dict]:
    """The `changed`-relevant events of one rule over recorded frames, in scorer form."""
    from emotion_edge.track.events import EventEngine, FaceObservation
    from emotion_edge.track.smoothing import EmaSmoother

    sm = EmaSmoother(tracking.smoothing_tau_s)
    engine = EventEngine(tracking, labels, "tune", "tune")
    out = []
    for f in frames:
        obs = []
        for fid, box, hits, raw, detected in f["obs"]:
            probs = sm.update(fid, raw, f["ts"]) if detected and raw is not None else sm.get(fid)
            if probs is not None:
                obs.append(FaceObservation(fid, box, hits, probs, detected=detected))
        sm.forget(f["removed"])
        for ev in engine.update(
            obs, f["removed"], f["frame"], f["size"], f["ts"], f["announce_now"]
        ):
            out.append(
                {"kind": ev.kind, "face_id": ev.face_id, "emotion": ev.emotion, "frame": f["frame"]}
            )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.room.tune_events",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", default="../shared/data", help="FER2013 folder (to make clips)")
    p.add_argument("--out", type=Path, default=Path("/tmp/tune_events"))
    p.add_argument("--clips", type=Path, default=None, help="clip cache (default: as the bench)")
    p.add_argument("--quick", action="store_true", help="the benchmark's half-length clips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenes", default="near,room,mixed")
    p.add_argument("--reuse", action="store_true", help="replay OUT/recorded.pkl, no pipeline")
    p.add_argument(
        "--grid", action="append", default=[], metavar="KEY=V1,V2", help="replace a grid axis"
    )
    args = p.parse_args(argv)
    clips = scenes.benchmark_clips(
        scenes.PoolLoader(Path(args.data), args.seed, log),
        args.quick,
        args.seed,
        args.scenes.split(","),
        args.clips,
    )
    recorded = []
    cache = args.out / "recorded.pkl"
    if args.reuse and cache.is_file():
        # the pipeline's record of an earlier run (a local cache, never committed)
        recorded, labels, tracking = pickle.loads(cache.read_bytes())
        log(f"tune_events: reusing {cache}")
    for name, (video, truth) in clips.items() if not recorded else []:
        t = time.perf_counter()
        frames, tracks, labels, tracking = record_clip(video, truth.fps)
        assoc = score.associate(truth, tracks)
        recorded.append((name, truth, frames, assoc))
        log(f"tune_events: {name}: {len(frames)} frames in {time.perf_counter() - t:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(pickle.dumps((recorded, labels, tracking)))
    grid = dict(GRID)
    for item in args.grid:
        key, _, values = item.partition("=")
        grid[key] = tuple(float(v) for v in values.split(","))

    rows = []
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        rule = dict(zip(keys, values, strict=True))
        told = switches = false = 0
        minutes = 0.0
        for _name, truth, frames, assoc in recorded:
            ch = score.changed_scores(
                truth, replay(frames, labels, replace(tracking, **rule)), assoc
            )
            told += ch["told"]
            switches += ch["switches"]
            false += ch["false_constant"]
            minutes += ch["face_minutes_constant"]
        rows.append(
            {
                **rule,
                "told": told,
                "switches": switches,
                "recall": round(told / switches, 3) if switches else None,
                "false": false,
                "false_per_face_minute": round(false / minutes, 3) if minutes else None,
            }
        )
    rows.sort(key=lambda r: (-(r["recall"] or 0), r["false_per_face_minute"] or 0))
    (args.out / "tune_events.json").write_text(json.dumps(rows, indent=1))
    head = "| tau s | min conf | hysteresis | dwell s | told | recall | false/face-min |"
    print(head + "\n|---|---|---|---|---|---|---|")
    for r in rows[:40]:
        print(
            f"| {r['smoothing_tau_s']} | {r['min_confidence']} | {r['hysteresis']} "
            f"| {r['min_dwell_s']} | {r['told']}/{r['switches']} | {r['recall']} "
            f"| {r['false_per_face_minute']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
