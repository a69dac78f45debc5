"""`emotion-edge-record --source videos:DIR`: a folder (or a list) of videos, one session per
file, recorded by N worker processes into one database.

Each file is its own device id (its stem, or `--device-id`-stem) and session (its stem), so
two files never share a timeline; its participant comes from `--participant-from` (a pattern
such as '{stem}', or a CSV mapping file name or stem to participant, group and metadata).
Workers are separate processes (spawned: each loads its own detector and classifier, with one
LiteRT thread) writing through their own Writer; SQLite's WAL and busy timeout serialise the
commits. One progress bar counts the frames of all files. A file whose session end marker is
already stored is skipped, so a run that was stopped picks up where it left off (a file cut
short is recorded again; its samples have the same ids and are stored once).

The per-file task is `record_one(job, common)`: the same function can run on another engine
(a Ray task, a Dask delayed call) on many machines writing into one PostgreSQL database;
docs/recording.md shows how.
"""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing as mp
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".mpg", ".mpeg")


class VideosError(ValueError):
    """A user error in the videos: input (no files, a file missing from the mapping)."""


@dataclass(frozen=True)
class Job:
    path: str
    device_id: str
    session: str
    participant: str | None
    group: str | None
    meta: dict = field(default_factory=dict)
    frames: int = 0


def list_videos(uri: str) -> list[Path]:
    """DIR (its video files, sorted) or FILE,FILE,..."""
    p = Path(uri).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in VIDEO_SUFFIXES)
        if not files:
            raise VideosError(f"videos:{uri}: no video files ({', '.join(VIDEO_SUFFIXES)})")
        return files
    files = [Path(x).expanduser() for x in uri.split(",") if x.strip()]
    missing = [str(f) for f in files if not f.is_file()]
    if not files or missing:
        raise VideosError(f"videos:{uri}: no such file {', '.join(missing[:3]) or uri}")
    return files


def read_mapping(path: str | Path) -> dict[str, dict]:
    """file (name or stem) -> {participant, group, meta} from a CSV with a header row:
    file, participant, [group], any other columns (session metadata)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "file" not in rows[0] or "participant" not in rows[0]:
        raise VideosError(f"{path}: needs a header with file,participant[,group,...]")
    out = {}
    for n, r in enumerate(rows, 2):
        name = (r.pop("file") or "").strip()
        if not name:
            raise VideosError(f"{path}:{n}: empty file name")
        participant = (r.pop("participant") or "").strip() or None
        group = (r.pop("group", None) or "").strip() or None
        out[name] = {
            "participant": participant,
            "group": group,
            "meta": {k: v for k, v in r.items() if k and v not in (None, "")},
        }
    return out


def plan(args, files: list[Path]) -> list[Job]:
    from emotion_edge_record.cli import parse_meta
    from emotion_edge_record.offline import default_device_id

    how = args.participant_from or ("{stem}" if not args.participant else None)
    mapping = None
    if how and how.lower().endswith(".csv") and "{" not in how:
        mapping = read_mapping(how)
    meta = parse_meta(args.meta)
    jobs, missing = [], []
    for f in files:
        stem = default_device_id(str(f))
        device = f"{args.device_id}-{stem}"[:64] if args.device_id else stem
        who = {"participant": args.participant, "group": args.group, "meta": {}}
        if mapping is not None:
            got = mapping.get(f.name) or mapping.get(f.stem)
            if got is None:
                missing.append(f.name)
                continue
            who = {
                "participant": got["participant"],
                "group": got["group"] or args.group,
                "meta": got["meta"],
            }
        elif how:
            try:
                who["participant"] = how.format(stem=f.stem, name=f.name, parent=f.parent.name)
            except (KeyError, IndexError, ValueError) as exc:
                raise VideosError(
                    f"--participant-from {how!r}: {exc} (use {{stem}}, {{name}}, {{parent}})"
                ) from None
        jobs.append(
            Job(
                str(f),
                device,
                stem,
                who["participant"],
                who["group"],
                {**meta, **who["meta"], "file": f.name},
                frame_count(f),
            )
        )
    if missing:
        raise VideosError(
            f"--participant-from {how}: no row for {len(missing)} file(s): {', '.join(missing[:5])}"
        )
    return jobs


def frame_count(path: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()


# -- one file, in a worker process ----------------------------------------------------------------

_progress = None


def _init_worker(progress_queue, level: str) -> None:
    global _progress
    _progress = progress_queue
    logging.basicConfig(
        level=max(logging.WARNING, logging.getLevelName(level)),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
        stream=sys.stderr,
    )
    import cv2

    cv2.setNumThreads(1)


def record_one(job: Job, common: dict, on_frames=None) -> dict:
    """Record one file into common['db']; returns its summary (what the parent prints)."""
    from emotion_edge_record.ingest import Writer
    from emotion_edge_record.offline import record_source
    from emotion_edge_record.store import open_store

    if on_frames is None and _progress is not None:
        on_frames = _progress.put
    store = open_store(common["db"])
    writer = Writer(store, live=False)
    writer.start()
    try:
        res = record_source(
            f"video:{job.path}",
            writer,
            config_path=common.get("config"),
            model=common.get("model"),
            detector=common.get("detector"),
            device_id=job.device_id,
            interval_s=common.get("interval", 0.0),
            session=job.session,
            participant=job.participant,
            group=job.group,
            tags=tuple(common.get("tags", ())),
            meta=job.meta,
            schedule=common.get("schedule"),
            start_ts=common.get("start_ts"),
            progress=False,
            max_frames=common.get("max_frames"),
            on_frames=on_frames,
            threads=common.get("threads"),
        )
    finally:
        if not writer.finish(timeout=None):
            writer.abort()
        store.close()
    if writer.error is not None:
        raise RuntimeError(f"writer failed: {writer.error}")
    out = res.as_dict()
    out["stored"] = writer.stats.as_dict().get("stored", {})
    return out


# -- the parent -----------------------------------------------------------------------------------


def record_videos(args) -> int:
    """The `videos:` input of emotion-edge-record (see the module docstring)."""
    from emotion_edge_record.offline import already_recorded
    from emotion_edge_record.payloads import parse_time
    from emotion_edge_record.store import open_store
    from tqdm import tqdm

    jobs_n = args.jobs if args.jobs is not None else (os.cpu_count() or 1)
    if jobs_n < 1:
        raise VideosError("--jobs must be >= 1")
    files = list_videos(args.source.split(":", 1)[1])
    planned = plan(args, files)
    store = open_store(args.db)  # migrated once here, before the workers open it
    try:
        todo = [j for j in planned if not already_recorded(store, j.device_id, j.session)]
    finally:
        store.close()
    skipped = len(planned) - len(todo)
    if skipped:
        log.info("%d of %d files already recorded: skipped", skipped, len(planned))
    common = {
        "db": args.db,
        "config": args.config,
        "model": args.model,
        "detector": args.detector,
        "interval": max(0.0, args.interval),
        "tags": list(args.tag),
        "schedule": args.schedule,
        "start_ts": parse_time(args.start) if args.start else None,
        "max_frames": args.max_frames,
        "threads": 1 if jobs_n > 1 else None,
    }
    n_workers = max(1, min(jobs_n, len(todo)))
    results: list[dict] = []
    failed: list[tuple[str, str]] = []
    started = time.monotonic()
    total = sum(min(j.frames, args.max_frames or j.frames) for j in todo)
    bar = tqdm(
        total=total or None,
        unit="frame",
        disable=args.no_progress,
        file=sys.stderr,
        dynamic_ncols=True,
        desc=f"{len(todo)} videos, {n_workers} workers",
    )
    if todo:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        stop = threading.Event()

        def pump() -> None:
            while not stop.is_set():
                try:
                    n = queue.get(timeout=0.2)
                except Exception:  # noqa: BLE001 - queue.Empty: look at `stop` again
                    continue
                bar.update(n)

        t = threading.Thread(target=pump, name="videos-progress", daemon=True)
        t.start()
        try:
            with ProcessPoolExecutor(
                n_workers,
                mp_context=ctx,
                initializer=_init_worker,
                initargs=(queue, args.log_level),
            ) as ex:
                futures = {ex.submit(record_one, j, common): j for j in todo}
                for fut in as_completed(futures):
                    job = futures[fut]
                    try:
                        results.append({"file": job.path, **fut.result()})
                    except Exception as exc:  # noqa: BLE001 - one file's failure, named
                        failed.append((job.path, f"{type(exc).__name__}: {exc}"))
                        bar.write(f"{Path(job.path).name}: {exc}", file=sys.stderr)
        finally:
            time.sleep(0.3)  # the last progress counts
            stop.set()
            t.join(2)
            bar.close()
    else:
        bar.close()
    elapsed = time.monotonic() - started
    frames = sum(r.get("frames", 0) for r in results)
    summary = {
        "files": len(planned),
        "recorded": len(results),
        "skipped": skipped,
        "failed": [{"file": f, "error": e} for f, e in failed],
        "workers": n_workers if todo else 0,
        "frames": frames,
        "elapsed_s": round(elapsed, 3),
        "frames_per_s": round(frames / elapsed, 2) if elapsed > 0 and frames else 0.0,
        "videos": results,
        "jobs": [asdict(j) for j in planned],
    }
    log.info(
        "videos: %d recorded, %d skipped, %d failed; %d frames in %.1f s (%.1f frames/s, "
        "%d workers)",
        len(results),
        skipped,
        len(failed),
        frames,
        elapsed,
        summary["frames_per_s"],
        summary["workers"],
    )
    if args.stats_json:
        Path(args.stats_json).write_text(json.dumps(summary, indent=2) + "\n")
    if failed:
        for f, e in failed:
            log.error("%s: %s", f, e)
        return 2
    return 0
