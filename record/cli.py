"""Command lines: `emotion-edge-record`, `emotion-edge-report`, `emotion-edge-mark`.

Exit codes as the daemon's: 0 ok, 2 a user error (one logged line), 1 a bug.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from emotion_edge.config.tables import DETECTOR_KINDS
from emotion_edge.errors import EmotionEdgeError

log = logging.getLogger("emotion_edge_record")
EXIT_OK, EXIT_UNEXPECTED, EXIT_USER_ERROR = 0, 1, 2


class UserError(Exception):
    pass


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def _run(fn, args) -> int:
    from emotion_edge_record.store import StoreError

    try:
        return fn(args)
    except (UserError, StoreError, EmotionEdgeError, ValueError, OSError) as exc:
        log.error("%s", exc)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001
        log.error("unexpected error: %s: %s", type(exc).__name__, exc)
        log.debug("traceback", exc_info=True)
        return EXIT_UNEXPECTED


def _add_mqtt(p: argparse.ArgumentParser, required: bool = False) -> None:
    g = p.add_argument_group("MQTT")
    g.add_argument("--mqtt-host", metavar="HOST", required=required, help="broker host")
    g.add_argument("--mqtt-port", type=int, default=1883, metavar="PORT", help="broker port")
    g.add_argument("--prefix", default="emotion-edge", help="topic prefix (default %(default)s)")
    g.add_argument("--username", help="MQTT user name (password from --password-env)")
    g.add_argument(
        "--password-env",
        default="EMOTION_EDGE_MQTT_PASSWORD",
        metavar="VAR",
        help="environment variable holding the MQTT password (default %(default)s)",
    )
    g.add_argument("--tls", action="store_true", help="connect with TLS")
    g.add_argument("--ca-file", help="CA bundle for TLS")


# -- emotion-edge-record ------------------------------------------------------------------------

RECORD_EPILOG = """\
inputs (exactly one):
  --mqtt-host H [--device ID ...]   subscribe (MQTT 5, QoS 1, persistent session) to one or
                                    more devices, or to the whole fleet (<prefix>/+/...)
  --jsonl FILE | --jsonl -          JSON lines, e.g. the daemon's stdout:
                                      emotion-edge --source video:clip.mp4 --dry-run | \\
                                        emotion-edge-record --db run.sqlite --jsonl -
  --source video:FILE | images:DIR  run the daemon's pipeline in-process, as fast as the CPU
                                    allows (timeline every frame unless --interval)

examples:
  emotion-edge-record --db kiosk.sqlite --mqtt-host broker --device kiosk-1
  emotion-edge-record --db postgresql://rec@db/emotions --mqtt-host broker \\
      --client-id rec-a --share-group recorders           # run several: they split the fleet
  emotion-edge-record --db clip.sqlite --source video:clip.mp4 --schedule stimuli.csv \\
      --participant P07 --group control
  emotion-edge-record --db photos.sqlite --source images:photos/
"""


def record_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emotion-edge-record",
        description="Store emotion-edge events, timeline samples, markers and availability in "
        "SQLite or PostgreSQL.",
        epilog=RECORD_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--db",
        required=True,
        metavar="FILE|URL",
        help="SQLite file (created, WAL) or postgresql://user@host/dbname",
    )
    _add_mqtt(p)
    g = p.add_argument_group("MQTT recording")
    g.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="ID",
        help="record this device (repeat); default: the whole fleet",
    )
    g.add_argument(
        "--client-id",
        help="MQTT client id = the persistent session's name (default "
        "emotion-edge-record-HOST-HASH, HASH from the database: stable across restarts, one per "
        "database); keep it across restarts so nothing the broker kept is lost",
    )
    g.add_argument(
        "--takeover-backoff",
        type=float,
        default=60.0,
        metavar="S",
        help="after another client took our session (same client id), wait S seconds before "
        "connecting again; doubles on repeats up to 10x (default %(default)s)",
    )
    g.add_argument(
        "--share-group",
        metavar="NAME",
        help="subscribe through $share/NAME/...: recorders in one group split the stream",
    )
    g.add_argument(
        "--session-expiry",
        type=int,
        default=7 * 24 * 3600,
        metavar="S",
        help="how long the broker keeps this recorder's session while it is away (default 7 days)",
    )
    g.add_argument(
        "--receive-max",
        type=int,
        default=1000,
        metavar="N",
        help="unacknowledged messages the broker may send at once (default %(default)s)",
    )
    g.add_argument(
        "--duration", type=float, metavar="S", help="stop after S seconds (default: until SIGTERM)"
    )
    g.add_argument(
        "--ready-file", metavar="PATH", help="write this file once subscribed (for scripts)"
    )
    j = p.add_argument_group("JSON lines")
    j.add_argument("--jsonl", metavar="FILE", help="read JSON lines from FILE ('-': stdin)")
    s = p.add_argument_group("in-process source")
    s.add_argument(
        "--source",
        metavar="KIND:URI",
        help="video:FILE, images:FOLDER, or videos:DIR|FILE,FILE,... (one session per file, "
        "--jobs worker processes, files already recorded are skipped)",
    )
    s.add_argument("--config", metavar="TOML", help="daemon config for the in-process pipeline")
    s.add_argument("--model", metavar="PATH", help="int8 emotion .tflite (default: the packaged)")
    s.add_argument("--detector", metavar="KIND", help=" | ".join(DETECTOR_KINDS))
    s.add_argument("--device-id", metavar="ID", help="device id to record under (default: name)")
    s.add_argument(
        "--interval",
        type=float,
        default=0.0,
        metavar="S",
        help="video: seconds of clip time between timeline samples (default 0: every frame)",
    )
    s.add_argument("--session", metavar="ID", help="session id (default: device + start time)")
    s.add_argument("--participant", metavar="NAME")
    s.add_argument("--group", metavar="NAME", help="participant group (the report compares groups)")
    s.add_argument("--tag", action="append", default=[], metavar="TAG", help="free tag (repeat)")
    s.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="session metadata (repeat): a column of the report's sessions.csv",
    )
    s.add_argument(
        "--schedule",
        metavar="CSV",
        help="stimulus,start,end offsets in seconds from the start (or M:SS), one per line",
    )
    s.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="videos:: worker processes (default: the CPU count)",
    )
    s.add_argument(
        "--participant-from",
        metavar="PATTERN|CSV",
        help="videos:: the participant from the file name ('{stem}', '{name}', '{parent}') or "
        "a CSV mapping file,participant[,group,KEY...] (extra columns: session metadata)",
    )
    s.add_argument(
        "--annotate",
        metavar="DIR",
        help="images:: write a copy of each photo with its faces' boxes and top emotions here",
    )
    s.add_argument(
        "--start",
        metavar="TIME",
        help="wall-clock time of the clip's first frame (ISO 8601 or epoch; default: the "
        "file's recorded creation time, else 2000-01-01T00:00:00Z)",
    )
    s.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames/photos")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    b = p.add_argument_group("bad input")
    b.add_argument(
        "--max-payload-bytes",
        type=int,
        default=256 * 1024,
        metavar="N",
        help="larger messages are rejected (counted, logged)",
    )
    b.add_argument(
        "--max-skew-s",
        type=float,
        default=300.0,
        metavar="S",
        help="MQTT: reject samples/events stamped more than S seconds in the future",
    )
    b.add_argument(
        "--allow-device",
        action="append",
        default=[],
        metavar="ID",
        help="only these devices (repeat); others are counted as unknown_device",
    )
    p.add_argument("--stats-json", metavar="PATH", help="write the final counts here as JSON")
    p.add_argument(
        "--delete-participant",
        metavar="CODE",
        help="the right to withdraw: delete every row of this participant (their sessions' "
        "markers and what the camera recorded during them) and exit; no input needed",
    )
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def record_main(argv: list[str] | None = None) -> int:
    from emotion_edge.cli import one_line_errors
    from emotion_edge_record.options import discard_if_empty, new_database_file

    args = one_line_errors(record_parser()).parse_args(argv)
    _setup_logging(args.log_level)
    created = new_database_file(args.db)
    rc = _run(_checked_record, args)
    if rc != EXIT_OK and discard_if_empty(created):
        log.debug("removed %s: this refused run created it and left it empty", created)
    return rc


def _checked_record(args) -> int:
    from emotion_edge_record.options import check_record

    check_record(args)  # before anything opens: the database, a broker, a file
    return _record(args)


def _record(args) -> int:
    from emotion_edge_record.ingest import Writer
    from emotion_edge_record.payloads import Limits, parse_time
    from emotion_edge_record.store import open_store

    if args.delete_participant is not None:
        return _delete_participant(args)
    inputs = [x for x in (args.mqtt_host, args.jsonl, args.source) if x]
    if len(inputs) != 1:
        raise UserError("give exactly one input: --mqtt-host, --jsonl or --source")
    if args.source and args.source.startswith("videos:"):
        from emotion_edge_record.videos import record_videos

        return record_videos(args)
    if args.max_payload_bytes < 1:
        raise UserError("--max-payload-bytes must be >= 1")
    if not 0 < args.takeover_backoff <= 3600:  # NaN fails too
        raise UserError("--takeover-backoff must be > 0 and <= 3600 seconds")
    start_ts = parse_time(args.start) if args.start else None
    store = open_store(args.db)
    log.info("database %s (schema version %d)", store.url, store.version())
    limits = Limits(
        args.max_payload_bytes,
        args.max_skew_s if args.max_skew_s > 0 else None,
        frozenset(args.allow_device) or None,
    )
    writer = Writer(store, limits, live=bool(args.mqtt_host))
    writer.start()
    summary: dict = {}
    try:
        if args.mqtt_host:
            _record_mqtt(args, writer)
        elif args.jsonl:
            from emotion_edge_record.ingest import open_jsonl, read_jsonl

            stream = open_jsonl(args.jsonl)
            try:
                summary["lines"] = read_jsonl(stream, writer)
            finally:
                if stream is not sys.stdin.buffer:
                    stream.close()
        else:
            from emotion_edge_record.offline import record_source

            res = record_source(
                args.source,
                writer,
                config_path=args.config,
                model=args.model,
                detector=args.detector,
                device_id=args.device_id,
                interval_s=max(0.0, args.interval),
                session=args.session,
                participant=args.participant,
                group=args.group,
                tags=tuple(args.tag),
                meta=parse_meta(args.meta),
                annotate=args.annotate,
                schedule=args.schedule,
                start_ts=start_ts,
                progress=not args.no_progress,
                max_frames=args.max_frames,
            )
            summary["source"] = res.as_dict()
            log.info(
                "%s: %d frames in %.1f s (%.1f frames/s%s), %d timeline samples (%d face rows), "
                "events %s",
                args.source,
                res.frames,
                res.elapsed_s,
                res.fps,
                f", {res.fps / res.source_fps:.1f}x real time" if res.source_fps else "",
                res.samples,
                res.face_rows,
                res.events,
            )
    finally:
        if not writer.finish(timeout=None if not args.mqtt_host else 30):
            writer.abort()
        summary["record"] = writer.stats.as_dict()
        summary["db"] = store.counts()
        store.close()
    log.info("recorded: %s", json.dumps(summary["record"]))
    if args.stats_json:
        Path(args.stats_json).write_text(json.dumps(summary, indent=2) + "\n")
    if writer.error is not None:
        raise RuntimeError(f"writer failed: {writer.error}")
    return EXIT_OK


def _delete_participant(args) -> int:
    from emotion_edge_record.store import open_store
    from emotion_edge_record.withdraw import delete_participant

    if args.mqtt_host or args.jsonl or args.source:
        raise UserError("--delete-participant takes no input (--mqtt-host, --jsonl, --source)")
    if "://" not in str(args.db) and not Path(args.db).expanduser().is_file():
        raise UserError(f"{args.db}: no such database file")
    store = open_store(args.db)
    try:
        out = delete_participant(store, args.delete_participant)
    finally:
        store.close()
    if not out.sessions and not out.deleted.get("markers"):
        log.warning("participant %s: no rows in %s", args.delete_participant, args.db)
    if args.stats_json:
        Path(args.stats_json).write_text(json.dumps(out.as_dict(), indent=2) + "\n")
    return EXIT_OK


def parse_meta(items: list[str]) -> dict[str, str]:
    meta = {}
    for kv in items:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise UserError(f"--meta {kv!r}: KEY=VALUE")
        meta[k] = v
    return meta


def _record_mqtt(args, writer) -> None:
    from emotion_edge_record.ingest import MqttIngest, default_client_id, subscription_topics

    client_id = args.client_id or default_client_id(writer.store.url)
    topics = subscription_topics(args.prefix, args.device, args.share_group)
    ing = MqttIngest(
        writer,
        args.mqtt_host,
        args.mqtt_port,
        topics,
        client_id,
        session_expiry_s=args.session_expiry,
        receive_max=args.receive_max,
        username=args.username,
        password=os.environ.get(args.password_env) if args.username else None,
        tls=args.tls,
        ca_file=args.ca_file,
        takeover_backoff_s=args.takeover_backoff,
    )
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        log.info("%s received, stopping", signal.Signals(signum).name)
        stop.set()
        signal.signal(signum, signal.SIG_DFL)  # a second one ends the process at once

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ing.start()
    deadline = None if args.duration is None else time.monotonic() + args.duration
    ready_written = False
    while not stop.is_set():
        if deadline is not None and time.monotonic() >= deadline:
            break
        if writer.error is not None:
            break
        if args.ready_file and not ready_written and ing.subscribed.is_set():
            Path(args.ready_file).write_text(str(os.getpid()))
            ready_written = True
        stop.wait(0.1)
    # stop taking messages (those still coming stay unacknowledged in the session), commit
    # and acknowledge what came, then leave the session; after a signal within 1 s (systemd
    # and scripts wait for us), what is not committed by then is not acknowledged either and
    # the broker sends it again
    ing.accepting = False
    if not writer.wait_idle(0.6 if stop.is_set() else 20):
        log.warning("database did not take the last messages in time; the broker keeps them")
        writer.abort()
    else:
        time.sleep(0.05)  # let the last PUBACKs go out before DISCONNECT
    ing.stop(timeout=0.3)


# -- emotion-edge-mark --------------------------------------------------------------------------


def mark_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emotion-edge-mark",
        description="Announce a stimulus or session start/end on <prefix>/<device>/markers.",
        epilog="examples:\n"
        "  emotion-edge-mark --mqtt-host broker --device kiosk-1 session-start P07 "
        "--participant P07 --group control\n"
        "  emotion-edge-mark --mqtt-host broker --device kiosk-1 start clip-A --session P07\n"
        "  emotion-edge-mark --mqtt-host broker --device kiosk-1 end clip-A\n"
        "  emotion-edge-mark --mqtt-host broker --device kiosk-1 --schedule stimuli.csv "
        "--at 2026-03-01T10:00:00\n"
        "  emotion-edge-mark --stdout --device kiosk-1 start clip-A >> markers.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_mqtt(p)
    p.add_argument("--device", required=True, metavar="ID", help="device the marker is for")
    p.add_argument(
        "action",
        nargs="?",
        choices=("start", "end", "session-start", "session-end"),
        help="start/end: a stimulus; session-start/session-end: a session",
    )
    p.add_argument("label", nargs="?", help="stimulus name or session id")
    p.add_argument("--session", metavar="ID", help="the session a stimulus belongs to")
    p.add_argument("--participant", metavar="NAME")
    p.add_argument("--group", metavar="NAME")
    p.add_argument("--tag", action="append", default=[], metavar="TAG", help="free tag (repeat)")
    p.add_argument(
        "--meta", action="append", default=[], metavar="KEY=VALUE", help="free metadata (repeat)"
    )
    p.add_argument("--at", metavar="TIME", help="when (ISO 8601 or epoch seconds; default now)")
    p.add_argument(
        "--schedule",
        metavar="CSV",
        help="publish start/end markers for every stimulus,start,end row, offsets from --at",
    )
    p.add_argument("--stdout", action="store_true", help="print JSON lines instead of publishing")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker")
    p.add_argument("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def mark_main(argv: list[str] | None = None) -> int:
    from emotion_edge.cli import one_line_errors

    args = one_line_errors(mark_parser()).parse_args(argv)
    _setup_logging(args.log_level)
    return _run(_checked_mark, args)


def _checked_mark(args) -> int:
    from emotion_edge_record.options import check_mark

    check_mark(args)  # before the broker is contacted
    return _mark(args)


def build_markers(args) -> list[dict]:
    from emotion_edge_record.payloads import (
        Limits,
        Reject,
        check_device,
        marker_payload,
        parse_time,
        read_schedule,
        schedule_markers,
    )

    try:
        check_device(args.device, Limits(), "--device")
    except Reject as exc:
        raise UserError(str(exc)) from None
    ts = parse_time(args.at) if args.at else time.time()
    meta = {}
    for kv in args.meta:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise UserError(f"--meta {kv!r}: KEY=VALUE")
        meta[k] = v
    who = {
        "participant": args.participant,
        "group": args.group,
        "tags": tuple(args.tag),
        "meta": meta,
    }
    if args.schedule:
        if args.action:
            raise UserError("--schedule publishes a whole schedule: give no action")
        return schedule_markers(
            read_schedule(args.schedule),
            args.device,
            ts,
            session=args.session,
            source=f"schedule:{Path(args.schedule).name}",
            **who,
        )
    if not args.action or not args.label:
        raise UserError("give an action (start|end|session-start|session-end) and a label")
    kind, action = (
        ("session", args.action.split("-", 1)[1])
        if args.action.startswith("session-")
        else ("stimulus", args.action)
    )
    session = args.label if kind == "session" else args.session
    return [marker_payload(args.device, kind, action, args.label, ts, session=session, **who)]


def _mark(args) -> int:
    marks = build_markers(args)
    if args.stdout:
        for m in marks:
            sys.stdout.write(json.dumps(m, separators=(",", ":")) + "\n")
        return EXIT_OK
    if not args.mqtt_host:
        raise UserError("give --mqtt-host (or --stdout)")
    publish_markers(args, marks)
    return EXIT_OK


def publish_markers(args, marks: list[dict]) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    c = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"emotion-edge-mark-{os.getpid()}-{int(time.time() * 1000) % 10**6}",
        protocol=paho.MQTTv5,
    )
    if args.username:
        c.username_pw_set(args.username, os.environ.get(args.password_env))
    if args.tls:
        c.tls_set(ca_certs=args.ca_file or None)
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set() if not a[3].is_failure else None
    try:
        c.connect(args.mqtt_host, args.mqtt_port, keepalive=30)
    except OSError as exc:
        raise UserError(f"cannot connect to {args.mqtt_host}:{args.mqtt_port}: {exc}") from None
    c.loop_start()
    try:
        if not connected.wait(args.timeout):
            raise UserError(f"broker {args.mqtt_host}:{args.mqtt_port} did not accept us")
        topic = f"{args.prefix}/{args.device}/markers"
        infos = [c.publish(topic, json.dumps(m, separators=(",", ":")), qos=1) for m in marks]
        deadline = time.monotonic() + args.timeout
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            if not info.is_published():
                raise UserError(f"marker not acknowledged by the broker within {args.timeout} s")
    finally:
        c.disconnect()
        c.loop_stop()
    for m in marks:
        log.info("published %s %s %s at %s", m["kind"], m["action"], m["label"], m["at"])


# -- emotion-edge-report ------------------------------------------------------------------------


def report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emotion-edge-report",
        description="CSV files, PNG plots and one self-contained report.html from a recording.",
    )
    p.add_argument("db", metavar="DB", help="SQLite file or postgresql:// URL")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--device", action="append", default=[], metavar="ID", help="only (repeat)")
    p.add_argument("--session", action="append", default=[], metavar="ID", help="only (repeat)")
    p.add_argument("--since", metavar="TIME", help="from (ISO 8601 or epoch seconds)")
    p.add_argument("--until", metavar="TIME", help="until (ISO 8601 or epoch seconds)")
    p.add_argument("--utc", action="store_true", help="times of day in UTC (default: local)")
    p.add_argument("--no-plots", action="store_true", help="CSV files only")
    a = p.add_argument_group("analysis (participant x stimulus, group x stimulus)")
    a.add_argument(
        "--all-faces",
        action="store_true",
        help="every face counts (default: the main face of each sample, the largest box)",
    )
    a.add_argument(
        "--baseline",
        default="none",
        metavar="pre:S|session|STIMULUS",
        help="subtract each participant's baseline: the S seconds before each stimulus, the "
        "session outside stimuli, or a named stimulus (default: none, raw means)",
    )
    a.add_argument(
        "--ci", default="t", choices=("t", "bootstrap"), help="95%% interval (default t)"
    )
    a.add_argument(
        "--test",
        default="parametric",
        choices=("parametric", "rank"),
        help="between groups: Welch t / ANOVA, or Mann-Whitney / Kruskal-Wallis",
    )
    a.add_argument(
        "--correction",
        default="fdr_bh",
        metavar="METHOD",
        help="multiple-comparison correction (statsmodels multipletests: fdr_bh, holm, "
        "bonferroni, ...; default %(default)s)",
    )
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def report_main(argv: list[str] | None = None) -> int:
    from emotion_edge.cli import one_line_errors

    args = one_line_errors(report_parser()).parse_args(argv)
    _setup_logging(args.log_level)
    return _run(_checked_report, args)


def _checked_report(args) -> int:
    from emotion_edge_record.options import check_report

    check_report(args)  # before the database opens
    return _report(args)


def _report(args) -> int:
    from emotion_edge_record.analysis.options import Baseline, StatsOptions
    from emotion_edge_record.payloads import parse_time
    from emotion_edge_record.store import open_readonly

    options = StatsOptions(
        baseline=Baseline.parse(args.baseline),
        ci=args.ci,
        test=args.test,
        correction=args.correction,
        all_faces=args.all_faces,
    )
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    if str(args.db).find("://") < 0 and not Path(args.db).expanduser().is_file():
        raise UserError(f"{args.db}: no such database file")
    store = open_readonly(args.db)  # refuses a bad file before pandas/SciPy are imported
    try:
        from emotion_edge_record.report import Filters, make_report

        filters = Filters(tuple(args.device), tuple(args.session), since, until)
        out = make_report(
            store,
            Path(args.out),
            filters,
            utc=args.utc,
            plots=not args.no_plots,
            options=options,
        )
    finally:
        store.close()
    log.info(
        "report: %s (%s)", out.html or out.out, ", ".join(f"{k} {v}" for k, v in out.counts.items())
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(record_main())
