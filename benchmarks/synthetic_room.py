"""Synthetic room benchmark (issue 39): does the daemon see and tell a room?

Clips with ground truth (benchmarks/room/scenes.py: FER2013 PublicTest faces pasted as people
into real photographs, 20 px to full-frame close-ups, moving, switching expression every 4-8 s,
one occlusion) are run through the real daemon pipeline in process (benchmarks/room/
daemon_run.py: every frame, clip time as the clock) for each config variant, and scored
(benchmarks/room/score.py) per face-height bucket: detector recall/precision, ID switches per
person, `changed` recall of true switches and false `changed` per face-minute, close-up
expression read right. Also per variant: detection and classification cost at 1, 3 and 6
faces (median ms, one thread, timed interleaved across variants), the dlib labelled photos
(testing.xml, training.xml) at full resolution through the same detector, and the sample
video (frames with a face, faces per frame, IDs).

Variants: "before" pins today's defaults (BlazeFace short range, the two-net model file,
the tracking/event settings of before issue 39); "after" is whatever AppConfig() gives now;
more with --variant NAME=table.key=value (repeat to add keys; they start from "after").

    python -m benchmarks.synthetic_room --data ../shared/data --samples ../shared/samples \\
        --out /tmp/room [--quick] [--variant far=detector.kind=blazeface_full]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (
    RESULTS_DIR,
    log,
    machine_info,
    time_interleaved,
    write_json,
)
from benchmarks.room import daemon_run, old_code, scenes, score

COST_FACES = (1, 3, 6)
COST_HEIGHTS = (150, 90, 60, 45, 34, 26)  # face heights of the cost frames, first N used


def uncommitted_device_files() -> list[str]:
    """device/ files that differ from the commit (the "after" column ran them as they are)."""
    import subprocess

    from benchmarks.common import REPO

    proc = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "device"],
        capture_output=True,
        text=True,
    )
    return [line[3:] for line in proc.stdout.splitlines()] if proc.returncode == 0 else []


def emotion_edge_path() -> str:
    """Where the daemon package was imported from (a --before-ref child proves its code)."""
    import emotion_edge

    return str(Path(emotion_edge.__file__).parent)


# -- variants -----------------------------------------------------------------------------------


def parse_variants(specs: list[str]) -> dict[str, dict]:
    """--variant NAME=table.key=value ... -> {NAME: {table: {key: value}}}."""
    out: dict[str, dict] = {}
    for spec in specs:
        name, sep, rest = spec.partition("=")
        if not sep or not name:
            raise daemon_run.UsageError(f"--variant {spec!r}: expected NAME=table.key=value")
        table, key, value = daemon_run.parse_override(rest)
        out.setdefault(name, {}).setdefault(table, {})[key] = value
    return out


# -- one variant --------------------------------------------------------------------------------


def merge_pr(parts: list[dict]) -> dict:
    """Pool per-bucket detection counts of several clips."""
    out = {}
    for key in parts[0]:
        hits = sum(p[key]["hits"] for p in parts)
        faces = sum(p[key]["faces"] for p in parts)
        false = sum(p[key]["false"] for p in parts)
        out[key] = score._pr(hits, faces - hits, false)
    return out


def merge_counts(parts: list[dict], keys: tuple[str, ...]) -> dict:
    return {k: sum(p[k] for p in parts) for k in keys}


def score_clip(truth: scenes.Truth, rec: daemon_run.RunRecord) -> dict:
    assoc = score.associate(truth, rec.tracks)
    return {
        "frames": rec.frames,
        "frames_detected": rec.frames_detected,
        "wall_s": rec.wall_s,
        "fps_processed": round(rec.frames / rec.wall_s, 1) if rec.wall_s else None,
        "detections_replayed": rec.replayed,
        "detector_ms_median": daemon_run.median(rec.detect_ms),
        "detection": score.detection_scores(truth, rec.boxes),
        "tracked": score.detection_scores(
            truth, {i: [b for _, b in rows] for i, rows in rec.tracks.items()}
        ),
        "identity": score.identity_scores(truth, assoc),
        "detection_gaps": score.detection_gaps(truth, rec.boxes),
        "occlusion": score.occlusion_scores(truth, assoc),
        "changed": score.changed_scores(truth, rec.scorer_events(), assoc),
        "read_right": score.read_right_scores(truth, rec.scorer_samples(), assoc),
        "switch_readable": score.switch_readable_scores(truth, rec.scorer_samples(), assoc),
        "events": {
            k: sum(1 for e in rec.events if e["kind"] == k)
            for k in ("appeared", "changed", "disappeared")
        },
        "undetected_carried": rec.undetected_carried,
        "daemon_stats": rec.stats,  # the pipeline's own final stats payload
        "model_version": rec.model_version,
        "detector": rec.detector,
    }


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def pooled(per_clip: dict[str, dict]) -> dict:
    clips = list(per_clip.values())
    ident = [c["identity"] for c in clips]
    persons = sum(i["persons"] for i in ident)
    switches = sum(i["id_switches"] for i in ident)
    ch = merge_counts(
        [c["changed"] for c in clips],
        ("switches", "told", "false_constant", "in_window_wrong", "on_no_one", "changed_events"),
    )
    minutes = sum(c["changed"]["face_minutes_constant"] for c in clips)
    rr = {}
    for key in clips[0]["read_right"]:
        k = sum(c["read_right"][key]["right"] for c in clips)
        n = sum(c["read_right"][key]["judged"] for c in clips)
        faces = sum(c["read_right"][key]["faces"] for c in clips)
        rr[key] = {**score._rate(k, n), "faces": faces}
    return {
        "detection": merge_pr([c["detection"] for c in clips]),
        "tracked": merge_pr([c["tracked"] for c in clips]),
        "identity": {
            "persons": persons,
            "persons_tracked": sum(i["persons_tracked"] for i in ident),
            "id_switches": switches,
            "id_switches_per_person": round(switches / persons, 3) if persons else None,
            "max_id_switches": max(i["max_id_switches"] for i in ident),
            "fragments": sum(i["fragments"] for i in ident),
        },
        "occlusion": merge_counts([c["occlusion"] for c in clips], ("occlusions", "kept_id")),
        "detection_gaps": {
            "gaps_over_s": sum(c["detection_gaps"]["gaps_over_s"] for c in clips),
            "longest_s": max(c["detection_gaps"]["longest_s"] for c in clips),
        },
        "changed": {
            **ch,
            "delay_median_s": _median([d for c in clips for d in c["changed"]["delays_s"]]),
            "recall": round(ch["told"] / ch["switches"], 4) if ch["switches"] else None,
            "face_minutes_constant": round(minutes, 3),
            "false_per_face_minute": round(ch["false_constant"] / minutes, 3) if minutes else None,
        },
        "read_right": rr,
        "switch_readable": score._rate(
            sum(c["switch_readable"]["readable"] for c in clips),
            sum(c["switch_readable"]["switches"] for c in clips),
        ),
        "events": merge_counts(
            [c["events"] for c in clips], ("appeared", "changed", "disappeared")
        ),
        "undetected_carried": sum(c["undetected_carried"] for c in clips),
        "classifier_frames": _sum_dicts(
            (c["daemon_stats"].get("classifier") or {}).get("frames_by_model") for c in clips
        ),
        "detector_passes": _sum_dicts(c["daemon_stats"].get("detector_passes") for c in clips),
    }


def _sum_dicts(dicts) -> dict:
    """Key-wise sum of count dicts (None and non-dicts skipped: older daemons lack them)."""
    out: dict = {}
    for d in dicts:
        if isinstance(d, dict):
            for k, n in d.items():
                out[k] = out.get(k, 0) + n
    return out


def run_dlib(cfg_layer: dict, samples: Path, adaptive: bool) -> dict:
    """The dlib photos through the daemon with an `images:` source (full resolution, whatever
    the pipeline does for photos), its raw detections scored on the imglab boxes."""
    from emotion_edge.tools.detector_eval import load_dlib_xml, match

    folder = samples / "dlib_faces"
    if not folder.is_dir():
        return {"skipped": f"{folder} absent"}
    cfg = daemon_run.make_config(folder, adaptive, cfg_layer, {"source": {"kind": "images"}})
    rec, _ = daemon_run.run_clip(cfg, 1.0)
    by_name = {rec.names[i]: dets for i, dets in rec.raw.items()}
    out: dict = {"dogs_jpg_faces": len(by_name.get("dogs.jpg", []))}
    for name in ("testing.xml", "training.xml"):
        xml = folder / name
        if not xml.is_file():
            out[name] = {"skipped": f"{xml} absent"}
            continue
        tp = fp = labelled = 0
        for li in load_dlib_xml(xml):
            t, f = match(by_name.get(li.path.name, []), li.boxes, li.ignored)
            tp, fp, labelled = tp + t, fp + f, labelled + len(li.boxes)
        out[name] = {
            "labelled": labelled,
            "hits": tp,
            "false": fp,
            "recall": round(tp / labelled, 4) if labelled else None,
            "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        }
    out["ms_median"] = daemon_run.median(rec.detect_ms)
    return out


def run_sample_video(cfg_layer: dict, samples: Path, adaptive: bool) -> dict:
    import cv2

    video = samples / "face_recognition" / "short_hamilton_clip.mp4"
    if not video.is_file():
        return {"skipped": f"{video} absent"}
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    cap.release()
    cfg = daemon_run.make_config(video, adaptive, cfg_layer)
    rec, _ = daemon_run.run_clip(cfg, fps)
    per_frame = [len(b) for b in rec.boxes.values()]
    ids = {fid for rows in rec.tracks.values() for fid, _ in rows}
    return {
        "frames": rec.frames,
        "frames_with_face": int(sum(n > 0 for n in per_frame)),
        "faces_per_frame": round(float(np.mean(per_frame)), 2) if per_frame else None,
        "face_ids": len(ids),
        "announced": sum(1 for e in rec.events if e["kind"] == "appeared"),
        "changed": sum(1 for e in rec.events if e["kind"] == "changed"),
        "fps_processed": round(rec.frames / rec.wall_s, 1) if rec.wall_s else None,
    }


# -- cost at 1, 3, 6 faces ------------------------------------------------------------------------


def cost_frames(pool: scenes.FacePool) -> list[tuple[np.ndarray, list[tuple]]]:
    """(gray frame, true boxes) with 1, 3 and 6 faces on the brick wall."""
    import cv2

    bg = scenes.background("brick").astype(np.float32)
    spots = [(160, 240), (420, 200), (560, 380), (300, 400), (80, 90), (520, 70)]
    out = []
    for n in COST_FACES:
        frame = bg.copy()
        boxes = []
        for k in range(n):
            side, x0, y0, box = scenes.patch_geometry(*spots[k], COST_HEIGHTS[k])
            img, alpha = scenes.face_patch(pool.images[pool.draw(k % 7)], side, 0.0)
            scenes.blend(frame, img, alpha, x0, y0)
            boxes.append(box)
        gray = cv2.cvtColor(np.clip(frame, 0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY)
        out.append((gray, boxes))
    return out


def run_costs(pipes: dict[str, object], frames, runs: int) -> dict:
    """Median ms of detector.detect and classifier.classify per frame at 1/3/6 faces, the
    variants timed in alternating blocks (a busy shared machine hits all alike)."""
    out: dict[str, dict] = {name: {} for name in pipes}
    for n, (gray, boxes) in zip(COST_FACES, frames, strict=True):
        fns = {}
        for name, pipe in pipes.items():
            fns[f"{name}|detect"] = lambda p=pipe, g=gray: p.detector.detect(g)
            fns[f"{name}|classify"] = lambda p=pipe, g=gray, b=boxes: p.classifier.classify(g, b)
        stats = time_interleaved(fns, runs=runs, warmup=3, blocks=5)
        for key, st in stats.items():
            name, stage = key.split("|")
            out[name][f"{stage}_{n}"] = round(st["median_ms"], 2)
    return out


# -- report -------------------------------------------------------------------------------------


def _pr_cell(d: dict, what: str = "recall") -> str:
    v = d.get(what)
    if v is None:
        return "-"
    if what == "recall":
        return f"{v:.2f} ({d['hits']}/{d['faces']})"
    return f"{v:.3f} ({d['false']} false)"


def _rate_cell(d: dict) -> str:
    if d.get("rate") is None:
        return "-"
    faces = f", {d['faces']} faces" if "faces" in d else ""
    return f"{d['rate']:.2f} ({d['right']}/{d['judged']}{faces})"


def meets(cell: str, target: str) -> str:
    """The cell with a mark for the issue's target: its leading number against ">= x" or
    "<= x" (cells without a number or rows without a target stay as they are)."""
    m = re.match(r"\s*(-?\d+(?:\.\d+)?)", cell)
    t = re.match(r"\s*([<>]=)\s*(\d+(?:\.\d+)?)", target)
    if not m or not t:
        return cell
    value, bound = float(m.group(1)), float(t.group(2))
    ok = value >= bound if t.group(1) == ">=" else value <= bound
    return f"{cell} {'✓' if ok else '✗'}"


def markdown(result: dict) -> str:
    names = list(result["variants"])
    v = result["variants"]
    head = "| measure | target | " + " | ".join(names) + " |"
    rows = [head, "|" + "---|" * (len(names) + 2)]

    def row(label: str, target: str, fn):
        cells = []
        for n in names:
            try:
                cells.append(meets(fn(v[n]), target))
            except (KeyError, TypeError):
                cells.append("-")
        rows.append(f"| {label} | {target} | " + " | ".join(cells) + " |")

    targets = {"24-40": ">= 0.75", "40-100": ">= 0.90", "100-250": ">= 0.90", ">250": ">= 0.90"}
    row("detector", "", lambda r: f"{r['detector']} / {r['model_version']}")
    for b, _, _ in score.BUCKETS:
        row(
            f"detector recall, faces {b} px",
            targets.get(b, ""),
            lambda r, b=b: _pr_cell(r["room"]["detection"][b]),
        )
    row(
        "detector precision, all sizes",
        ">= 0.95",
        lambda r: _pr_cell(r["room"]["detection"]["all"], "precision"),
    )
    for b in ("<24", "24-40", "40-100"):
        row(
            f"detector precision, boxes {b} px",
            "",
            lambda r, b=b: _pr_cell(r["room"]["detection"][b], "precision"),
        )
    for b in ("24-40", "40-100", "100-250", ">250"):
        row(f"tracked faces recall, {b} px", "", lambda r, b=b: _pr_cell(r["room"]["tracked"][b]))
    row("tracked faces precision", "", lambda r: _pr_cell(r["room"]["tracked"]["all"], "precision"))
    row(
        "ID switches of the worst person (mean; persons tracked)",
        "<= 1",
        lambda r: (
            f"{r['room']['identity']['max_id_switches']} "
            f"(mean {r['room']['identity']['id_switches_per_person']:.2f}; "
            f"{r['room']['identity']['persons_tracked']}/{r['room']['identity']['persons']})"
        ),
    )
    row(
        "detector gaps over 1 s on a visible face (longest)",
        "",
        lambda r: (
            f"{r['room']['detection_gaps']['gaps_over_s']} "
            f"({r['room']['detection_gaps']['longest_s']:.1f} s)"
        ),
    )
    row(
        "occluded face kept its id",
        "",
        lambda r: f"{r['room']['occlusion']['kept_id']}/{r['room']['occlusion']['occlusions']}",
    )
    row("track fragments (same id resumed)", "", lambda r: str(r["room"]["identity"]["fragments"]))
    row(
        "`changed` recall of true switches",
        ">= 0.6",
        lambda r: (
            f"{r['room']['changed']['recall']:.2f} "
            f"({r['room']['changed']['told']}/{r['room']['changed']['switches']})"
        ),
    )
    row(
        "delay from a switch to the `changed` that told it, median",
        "",
        lambda r: (
            "-"
            if r["room"]["changed"].get("delay_median_s") is None
            else f"{r['room']['changed']['delay_median_s']:.2f} s"
        ),
    )
    row(
        "switches the smoothed label showed within 2 s (ceiling)",
        "",
        lambda r: _rate_cell(r["room"]["switch_readable"]),
    )
    row(
        "false `changed` per face-minute",
        "<= 0.5",
        lambda r: (
            f"{r['room']['changed']['false_per_face_minute']:.2f} "
            f"({r['room']['changed']['false_constant']} in "
            f"{r['room']['changed']['face_minutes_constant']:.1f} min)"
        ),
    )
    row(
        "`changed` wrong label/repeat near a switch",
        "",
        lambda r: str(r["room"]["changed"]["in_window_wrong"]),
    )
    row("`changed` on no true face", "", lambda r: str(r["room"]["changed"]["on_no_one"]))
    row(
        "close-up read right (near clip)",
        "",
        lambda r: _rate_cell(r["clips"]["near"]["read_right"]["all"]),
    )
    for b in ("24-40", "40-100", "100-250", ">250"):
        row(
            f"read right, faces {b} px (all clips)",
            "",
            lambda r, b=b: _rate_cell(r["room"]["read_right"][b]),
        )
    base = v.get("before", {}).get("cost", {})

    def cost(r: dict, key: str) -> str:
        ms = r["cost"][key]
        ratio = f" ({ms / base[key]:.1f}x before)" if base.get(key) and r is not v["before"] else ""
        return f"{ms:.1f}{ratio}"

    for stage in ("detect", "classify"):
        for n in COST_FACES:
            row(
                f"{stage} ms/frame, {n} face{'s' if n > 1 else ''}",
                "",
                lambda r, key=f"{stage}_{n}": cost(r, key),
            )
    for xml in ("testing.xml", "training.xml"):
        row(
            f"dlib {xml} recall",
            ">= 0.90" if xml == "testing.xml" else "",
            lambda r, x=xml: (
                f"{r['dlib'][x]['recall']:.2f} ({r['dlib'][x]['hits']}/{r['dlib'][x]['labelled']})"
            ),
        )
        row(
            f"dlib {xml} precision",
            ">= 0.95" if xml == "testing.xml" else "",
            lambda r, x=xml: f"{r['dlib'][x]['precision']:.2f} ({r['dlib'][x]['false']} false)",
        )
    row("dlib dogs.jpg faces (no human face: 0)", "", lambda r: str(r["dlib"]["dogs_jpg_faces"]))
    row(
        "sample video: frames with a face",
        "",
        lambda r: f"{r['sample_video']['frames_with_face']}/{r['sample_video']['frames']}",
    )
    row("sample video: faces per frame", "", lambda r: f"{r['sample_video']['faces_per_frame']}")
    row(
        "sample video: face ids / announced",
        "",
        lambda r: f"{r['sample_video']['face_ids']} / {r['sample_video']['announced']}",
    )
    row(
        "sample video fps (1 thread, detection every frame, as fast as processed)",
        "",
        lambda r: f"{r['sample_video']['fps_processed']}",
    )
    row(
        "pipeline fps on the room clip (1 thread)",
        "",
        lambda r: (
            "- (detections replayed)"
            if r["clips"]["room"]["detections_replayed"]
            else f"{r['clips']['room']['fps_processed']}"
        ),
    )
    row(
        "events appeared / changed / disappeared",
        "",
        lambda r: "{appeared} / {changed} / {disappeared}".format(**r["room"]["events"]),
    )
    row(
        "classifier frames by model (auto switches on measured cost)",
        "",
        lambda r: ", ".join(f"{k} {n}" for k, n in r["room"]["classifier_frames"].items()) or "-",
    )
    row(
        "detector passes (views run)",
        "",
        lambda r: ", ".join(f"{k} {n}" for k, n in r["room"]["detector_passes"].items()) or "-",
    )
    row("face-frames carried undetected", "", lambda r: str(r["room"]["undetected_carried"]))
    return "\n".join(rows)


def _short_path(value):
    """A packaged model's path from the device folder on (a --before-ref child's is in /tmp)."""
    text = str(value)
    return "device/" + text.split("/device/", 1)[1] if "/device/models/" in text else value


def variants_note(result: dict) -> str:
    """What each variant is, and what "before" could not pin."""
    lines = []
    for name, v in result["variants"].items():
        over = "; ".join(
            f"{t}.{k}={_short_path(val)}"
            for t, kv in v["overrides"].items()
            for k, val in kv.items()
        )
        what = over or "the current defaults (AppConfig())"
        if v.get("code"):
            what = f"the daemon code (device/) of commit {v['code']}, its own defaults pinned: "
            what += over + " (cost timed in its own process, not interleaved)"
        lines.append(f"- `{name}`: {what}")
    if result.get("before_unpinned_keys"):
        lines.append(
            "- keys added since that `before` runs at their current defaults: "
            + ", ".join(result["before_unpinned_keys"])
        )
    clips = ", ".join(
        f"{n} ({c['frames']} frames, {c['persons']} people, {c['switches']} switches)"
        for n, c in result["clips"].items()
    )
    lines.append(f"- clips: {clips}; {result['seconds']:.0f} s in all")
    git = (result.get("machine") or {}).get("git") or {}
    dirty = result.get("device_uncommitted") or []
    lines.append(
        f"- code: commit {git.get('commit', '?')}"
        + (f", with uncommitted changes in {', '.join(dirty)}" if dirty else "")
    )
    return "\n".join(lines)


def clip_table(result: dict) -> str:
    """One row per clip and variant: the headline figures of each scene."""
    rows = [
        "| clip | variant | recall 24-40 | recall 40+ | precision | ID switches (persons) "
        "| `changed` told | false / face-min | read right |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in result["variants"].items():
        for clip, c in v["clips"].items():
            d, ch = c["detection"], c["changed"]
            fpm = ch["false_per_face_minute"]
            rows.append(
                f"| {clip} | {name} | {_pr_cell(d['24-40'])} | {_pr_cell(d['40+'])} "
                f"| {_pr_cell(d['all'], 'precision')} "
                f"| {c['identity']['id_switches']} ({c['identity']['persons']}) "
                f"| {ch['told']}/{ch['switches']} | {'-' if fpm is None else f'{fpm:.2f}'} "
                f"| {_rate_cell(c['read_right']['all'])} |"
            )
    return "\n".join(rows)


# -- main ---------------------------------------------------------------------------------------


def run(args) -> dict:
    t_start = time.perf_counter()
    # every variant and the ref are checked before minutes go into clips and runs
    pins, dropped, unpinned = daemon_run.before_pins()
    variants: dict[str, dict] = {}
    if "before" in args.variants:
        variants["before"] = pins
    if "after" in args.variants:
        variants["after"] = {}
    variants.update(parse_variants(args.variant))
    for layer in variants.values():
        daemon_run.make_config(Path("clip.mp4"), args.adaptive, layer)  # ConfigError if bad
    if args.before_ref:
        old_code.resolve(args.before_ref)
    # generated from FER2013 faces: cached outside the repository, never committed
    clips_dir = Path(args.clips) if args.clips else scenes.default_clips_dir(args.quick, args.seed)
    pool = scenes.PoolLoader(Path(args.data), args.seed, log)
    clips = {}
    for name in args.scenes:
        t = time.perf_counter()
        clips.update(scenes.benchmark_clips(pool, args.quick, args.seed, [name], clips_dir))
        truth = clips[name][1]
        log(
            f"synthetic_room: clip {name}: {truth.n_frames} frames, "
            f"{len(truth.switches)} switches ({time.perf_counter() - t:.1f} s)"
        )

    result: dict = {
        "benchmark": "synthetic_room",
        "command": args.command,
        "quick": args.quick,
        "seed": args.seed,
        "adaptive": args.adaptive,
        "before_pins": pins,
        "before_pins_dropped": dropped,
        "before_unpinned_keys": unpinned,
        "box_rule": scenes.Truth.box_rule,
        "emotion_edge": emotion_edge_path(),
        "clips": {
            n: {"frames": tr.n_frames, "switches": len(tr.switches), "persons": len(tr.persons)}
            for n, (_, tr) in clips.items()
        },
        "variants": {},
    }
    pipes = {}
    for name, layer in variants.items():
        per_clip = {}
        for clip, (video, truth) in clips.items():
            cfg = daemon_run.make_config(video, args.adaptive, layer)
            rec, pipe = daemon_run.run_clip(
                cfg, truth.fps, None if args.no_replay else clips_dir / "detections", truth.params
            )
            per_clip[clip] = score_clip(truth, rec)
            c = per_clip[clip]
            log(
                f"synthetic_room: {name} / {clip}: recall {c['detection']['all']['recall']}, "
                f"changed {c['changed']['told']}/{c['changed']['switches']}, "
                f"{rec.frames} frames in {rec.wall_s:.0f} s"
            )
        pipes[name] = pipe
        entry = {
            "overrides": layer,
            "detector": per_clip[next(iter(per_clip))]["detector"],
            "model_version": per_clip[next(iter(per_clip))]["model_version"],
            "room": pooled(per_clip),
            "clips": per_clip,
        }
        if not args.no_photos:
            entry["dlib"] = run_dlib(layer, Path(args.samples), args.adaptive)
            entry["sample_video"] = run_sample_video(layer, Path(args.samples), args.adaptive)
        result["variants"][name] = entry
    if args.before_ref:
        child = [
            "--data",
            str(args.data),
            "--samples",
            str(args.samples),
            "--clips",
            str(clips_dir),
            "--seed",
            str(args.seed),
            "--scenes",
            ",".join(args.scenes),
        ]
        child += [
            f
            for f, on in (
                ("--quick", args.quick),
                ("--adaptive", args.adaptive),
                ("--no-photos", args.no_photos),
                ("--no-cost", args.no_cost),
                ("--no-replay", args.no_replay),
            )
            if on
        ]
        sha, entry = old_code.run_before_at(args.before_ref, child)
        # the code as it was goes first: before@sha, before (settings pinned), after, ...
        result["variants"] = {f"before@{sha}": entry, **result["variants"]}
    if not args.no_cost:
        log("synthetic_room: cost at 1, 3, 6 faces (interleaved)")
        frames = cost_frames(pool().for_scene(0, 1))
        for name, costs in run_costs(pipes, frames, 10 if args.quick else 30).items():
            result["variants"][name]["cost"] = costs
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    result["machine"] = machine_info()
    result["device_uncommitted"] = uncommitted_device_files()
    return result


def write_markdown(result: dict, out_dir: Path) -> str:
    """OUT/synthetic_room.md from a result; returns the tables (re-render an old JSON with
    `python -c "...write_markdown(json.load(open(P)), DIR)"`)."""
    table = markdown(result) + "\n\nPer clip:\n\n" + clip_table(result)
    kind = "quick" if result.get("quick") else "full"
    (Path(out_dir) / "synthetic_room.md").write_text(
        f"# Synthetic room ({kind})\n\n`{result['command']}`\n\n"
        + variants_note(result)
        + "\n\n"
        + table
        + "\n"
    )
    return table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.synthetic_room",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument(
        "--data",
        default="../shared/data",
        help="folder with fer2013.csv.gz and fer2013new.csv (only needed to generate clips)",
    )
    p.add_argument(
        "--samples", default="../shared/samples", help="dlib_faces/ and the sample video"
    )
    p.add_argument(
        "--out",
        default=str(RESULTS_DIR / "synthetic_room"),
        help="where synthetic_room.md and synthetic_room.json go",
    )
    p.add_argument(
        "--clips",
        default="",
        help="clip cache folder (default: ~/.cache/emotion-edge/synthetic_room/"
        "clips[-quick]-seedN); clips are made once per seed and scene definition, then reused",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="half-length clips, fewer timing runs (for tuning loops)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenes", default="near,room,mixed", help="comma-separated scenes")
    p.add_argument("--variants", default="before,after", help="built-in variants to run")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=table.key=value",
        help="an extra variant (starts from the current defaults); repeatable",
    )
    p.add_argument(
        "--before-ref",
        default="",
        metavar="COMMIT",
        help="also run 'before' on the daemon code (device/) of this commit, e.g. 215777a "
        "(the last commit before issue 39): column before@COMMIT",
    )
    p.add_argument(
        "--adaptive",
        action="store_true",
        help="let the budget controller skip detection runs (default: detect on "
        "every frame, so runs compare on a busy machine)",
    )
    p.add_argument(
        "--no-replay",
        action="store_true",
        help="always run the detector (default: replay a clip's stored detections when the "
        "detector's code and settings are unchanged, see benchmarks/room/detcache.py)",
    )
    p.add_argument("--no-photos", action="store_true", help="skip dlib photos and sample video")
    p.add_argument("--no-cost", action="store_true", help="skip the 1/3/6-face timing")
    return p


def main(argv: list[str] | None = None) -> int:
    import logging
    import sys

    logging.basicConfig(level=logging.WARNING)
    args = build_parser().parse_args(argv)
    args.scenes = [s for s in args.scenes.split(",") if s]
    args.variants = [s for s in args.variants.split(",") if s]
    known = [s.name for s in scenes.default_scenes()]
    unknown = [s for s in args.scenes if s not in known]
    if unknown or not args.scenes:
        print(f"--scenes: unknown {unknown}; choose from {','.join(known)}", file=sys.stderr)
        return 2
    args.command = "python -m benchmarks.synthetic_room " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    from emotion_edge.errors import ConfigError

    try:
        result = run(args)
    except (daemon_run.UsageError, ConfigError) as exc:  # a bad --variant or --before-ref
        print(f"synthetic_room: {exc}", file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    write_json(result, out_dir / "synthetic_room.json")
    print(write_markdown(result, out_dir))
    log(f"synthetic_room: wrote {out_dir}/synthetic_room.md and .json ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
