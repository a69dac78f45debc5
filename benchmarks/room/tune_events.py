"""Tune the `changed` rule on the synthetic room: one pipeline run per clip, many rules replayed.

Detection, tracking and classification do not depend on the event rule's settings, so each
clip runs through the real daemon pipeline once, recording what the event engine was given
each frame (tracked faces, the classifier's raw probabilities, faces carried undetected, faces
removed). The smoother (with its change points) and the event engine then replay those frames
for every combination of the `[tracking]` keys in a grid (`smoothing_tau_s`, `hysteresis`,
`hysteresis_after_change`, `min_dwell_s`, `change_distance`, `after_change_s`, `revert_s`;
`--grid` replaces an axis), and each replay's `changed` events are scored like the benchmark
scores them (benchmarks/room/score.py: a true switch told with the right label within 2 s;
false `changed` per face-minute of constant expression). A seed's clips hold ~90 switches and
~6 face-minutes, so one seed's false rate moves by 0.16 per event: rules rank on the figures
pooled over the seeds (those meeting both targets first, then the fewest false changes), and
each seed's figures are printed beside them. Tune on some seeds, check the choice on others:

    python -m benchmarks.room.tune_events --data ../shared/data --seeds 0,1,2,3,4,5
    python -m benchmarks.room.tune_events --data ../shared/data --seeds 6,7 \
        --grid smoothing_tau_s=0.3 --grid hysteresis=0.35 ...
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
    "smoothing_tau_s": (0.3, 0.4, 0.5),
    "hysteresis": (0.25, 0.35, 0.5),
    "hysteresis_after_change": (0.0, 0.1),
    "min_dwell_s": (0.1, 0.2),
    "change_distance": (0.25, 0.3, 0.35),
    "after_change_s": (1.0, 1.5),
    "revert_s": (0.0, 3.0),
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
    from emotion_edge.track.smoothing import EmotionSmoother

    sm = EmotionSmoother(tracking.smoothing_tau_s, tracking.change_distance)
    engine = EventEngine(tracking, labels, "tune", "tune")
    out = []
    for f in frames:
        obs = []
        for fid, box, hits, raw, detected in f["obs"]:
            probs = sm.update(fid, raw, f["ts"]) if detected and raw is not None else sm.get(fid)
            if probs is not None:
                change = sm.last_change(fid) if detected else None
                obs.append(FaceObservation(fid, box, hits, probs, detected, change))
        sm.forget(f["removed"])
        for ev in engine.update(
            obs, f["removed"], f["frame"], f["size"], f["ts"], f["announce_now"]
        ):
            out.append(
                {"kind": ev.kind, "face_id": ev.face_id, "emotion": ev.emotion, "frame": f["frame"]}
            )
    return out


def record_seed(args, seed: int) -> tuple[list, tuple, object]:
    """One seed's clips through the pipeline: [(clip, truth, frames, assoc)], labels, tracking.
    Kept in OUT/recorded-<seed>.pkl (a local cache, never committed) for --reuse."""
    cache = args.out / f"recorded-{seed}.pkl"
    if args.reuse and cache.is_file():
        log(f"tune_events: reusing {cache}")
        return pickle.loads(cache.read_bytes())
    clips = scenes.benchmark_clips(
        scenes.PoolLoader(Path(args.data), seed, log),
        args.quick,
        seed,
        args.scenes.split(","),
        args.clips,
    )
    recorded = []
    for name, (video, truth) in clips.items():
        t = time.perf_counter()
        frames, tracks, labels, tracking = record_clip(video, truth.fps)
        recorded.append((name, truth, frames, score.associate(truth, tracks)))
        took = time.perf_counter() - t
        log(f"tune_events: seed {seed} {name}: {len(frames)} frames in {took:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(pickle.dumps((recorded, labels, tracking)))
    return recorded, labels, tracking


def pool(parts: list[dict]) -> dict:
    """Counts summed over clips or seeds, and the recall and false rate of the sums."""
    told = sum(p["told"] for p in parts)
    switches = sum(p["switches"] for p in parts)
    false = sum(p["false"] for p in parts)
    minutes = sum(p["face_minutes"] for p in parts)
    return {
        "told": told,
        "switches": switches,
        "recall": round(told / switches, 3) if switches else 0.0,
        "false": false,
        "face_minutes": round(minutes, 3),
        "false_per_face_minute": round(false / minutes, 3) if minutes else 0.0,
    }


def score_rule(recorded: list, labels, tracking) -> dict:
    """One rule's `changed` scores over one seed's clips."""
    parts = []
    for _name, truth, frames, assoc in recorded:
        ch = score.changed_scores(truth, replay(frames, labels, tracking), assoc)
        parts.append(
            {
                "told": ch["told"],
                "switches": ch["switches"],
                "false": ch["false_constant"],
                "face_minutes": ch["face_minutes_constant"],
            }
        )
    return pool(parts)


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
    p.add_argument(
        "--seeds", default="0,1", help="clip seeds, comma-separated; rules rank on pooled figures"
    )
    p.add_argument("--scenes", default="near,room,mixed")
    p.add_argument("--reuse", action="store_true", help="replay OUT/recorded-SEED.pkl")
    p.add_argument(
        "--grid", action="append", default=[], metavar="KEY=V1,V2", help="replace a grid axis"
    )
    p.add_argument("--top", type=int, default=40, help="rows to print")
    args = p.parse_args(argv)
    seeds = [int(x) for x in args.seeds.split(",")]
    per_seed = {seed: record_seed(args, seed) for seed in seeds}
    labels, tracking = next(iter(per_seed.values()))[1:]
    grid = dict(GRID)
    for item in args.grid:
        key, _, values = item.partition("=")
        grid[key] = tuple(float(v) for v in values.split(","))

    rows = []
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        rule = dict(zip(keys, values, strict=True))
        rule_tracking = replace(tracking, **rule)
        seeds_scores = {
            seed: score_rule(rec, labels, rule_tracking) for seed, (rec, _, _) in per_seed.items()
        }
        pooled = pool(list(seeds_scores.values()))
        rows.append(
            {
                **rule,
                "seeds": seeds_scores,
                "recall": pooled["recall"],
                "false_per_face_minute": pooled["false_per_face_minute"],
            }
        )
    # both targets met (recall >= 0.6, <= 0.5 false per face-minute) first, then fewest false
    rows.sort(
        key=lambda r: (
            not (r["recall"] >= 0.6 and r["false_per_face_minute"] <= 0.5),
            r["false_per_face_minute"],
            -r["recall"],
        )
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tune_events.json").write_text(json.dumps(rows, indent=1))
    head = "| " + " | ".join(keys) + " | pooled | " + " | ".join(f"seed {s}" for s in seeds)
    print(head + " |\n|" + "---|" * (len(keys) + 1 + len(seeds)))
    for r in rows[: args.top]:
        cells = (
            [str(r[k]) for k in keys]
            + [f"**{r['recall']:.3f} / {r['false_per_face_minute']:.2f}**"]
            + [
                f"{r['seeds'][s]['recall']:.3f} / {r['seeds'][s]['false_per_face_minute']:.2f}"
                for s in seeds
            ]
        )
        print("| " + " | ".join(cells) + " |")
    print("(recall of true switches / false `changed` per face-minute)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
