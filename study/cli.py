"""`emotion-edge-study`: serve a study file to one participant after another.

Exit codes as the daemon's: 0 ok, 2 a user error (one logged line), 1 a bug.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
from pathlib import Path

from emotion_edge.errors import EmotionEdgeError

log = logging.getLogger("emotion_edge_study")
EXIT_OK, EXIT_UNEXPECTED, EXIT_USER_ERROR = 0, 1, 2
END_GRACE_S = 1.5  # --sessions: serve this much longer after the last session ended

EPILOG = """\
where the markers go (one of):
  --mqtt-host H        the broker the daemon and the recorder use (spooled, at least once)
  --config TOML        the daemon's config: its [mqtt] broker (when enabled) and device id
  --db FILE|URL        no broker: markers straight into the recording database, and the
                       daemon's pipeline runs in this process on --source (default: the
                       config's source, a camera) writing the emotions there too

examples:
  emotion-edge-study films.toml --device kiosk-1 --mqtt-host localhost
  emotion-edge-study films.toml --config /etc/emotion-edge/config.toml
  emotion-edge-study films.toml --device laptop --db study.sqlite --source opencv:0
then open http://127.0.0.1:8090/ (the researcher's start page); docs/study.md
"""


class UserError(EmotionEdgeError):
    pass


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emotion-edge-study",
        description="Run participants through a study file in the browser: consent, clips "
        "full screen, ratings; every clip marked at the frames it was on screen.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("study", metavar="STUDY", help="study file (.toml or .csv, docs/study.md)")
    p.add_argument("--device", metavar="ID", help="device the camera runs on (default: config)")
    p.add_argument("--config", metavar="TOML", help="the daemon's config file")
    g = p.add_argument_group("MQTT (the daemon and the recorder on the same broker)")
    g.add_argument("--mqtt-host", metavar="HOST", help="broker host")
    g.add_argument("--mqtt-port", type=int, metavar="PORT", help="broker port (default 1883)")
    g.add_argument("--prefix", metavar="PREFIX", help="topic prefix (default emotion-edge)")
    g.add_argument("--username", help="MQTT user name (password from --password-env)")
    g.add_argument("--password-env", metavar="VAR", help="variable holding the MQTT password")
    g.add_argument("--tls", action="store_true", help="connect with TLS")
    g.add_argument("--ca-file", help="CA bundle for TLS")
    g.add_argument(
        "--spool-dir",
        metavar="DIR",
        help="spool folder; markers wait in DIR/study (default: the daemon's spool folder)",
    )
    d = p.add_argument_group("no broker: record in this process")
    d.add_argument("--db", metavar="FILE|URL", help="SQLite file or postgresql:// URL")
    d.add_argument("--source", metavar="KIND:URI", help="camera or video (default: config's)")
    d.add_argument("--no-camera", action="store_true", help="--db: markers only, no pipeline")
    d.add_argument(
        "--timeline-interval",
        type=float,
        default=0.2,
        metavar="S",
        help="--db: seconds between timeline samples (default %(default)s)",
    )
    w = p.add_argument_group("web")
    w.add_argument("--host", default="127.0.0.1", help="listen address (default %(default)s)")
    w.add_argument("--port", type=int, default=8090, help="port (default %(default)s; 0: any)")
    w.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (anyone on the network can start sessions)",
    )
    w.add_argument(
        "--abort-after",
        type=float,
        default=10.0,
        metavar="S",
        help="a page silent this long ends its session as aborted (default %(default)s)",
    )
    p.add_argument("--sessions", type=int, metavar="N", help="exit after N sessions ended")
    p.add_argument("--ready-file", metavar="PATH", help="write the URL here once serving")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    from emotion_edge_record.store import StoreError

    try:
        return _main(args)
    except (EmotionEdgeError, StoreError, ValueError, OSError) as exc:
        log.error("%s", exc)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001
        log.error("unexpected error: %s: %s", type(exc).__name__, exc)
        log.debug("traceback", exc_info=True)
        return EXIT_UNEXPECTED


def _check(args) -> None:
    from emotion_edge.config.validate import is_loopback

    if args.db and args.mqtt_host:
        raise UserError("give --mqtt-host or --db, not both")
    if args.no_camera and not args.db:
        raise UserError("--no-camera goes with --db")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: 0-65535")
    if args.abort_after <= 0:
        raise UserError("--abort-after must be > 0 seconds")
    if args.sessions is not None and args.sessions < 1:
        raise UserError("--sessions must be >= 1")
    if args.timeline_interval <= 0:
        raise UserError("--timeline-interval must be > 0 seconds")
    if not is_loopback(args.host) and not args.allow_remote:
        raise UserError(
            f"--host {args.host} is reachable from the network: anyone there could start "
            "sessions; add --allow-remote if that is intended"
        )


def _app_config(args):
    from emotion_edge.config import load_config

    over: dict[str, dict] = {"web": {"enabled": False}}
    if args.device:
        over["device"] = {"id": args.device}
    mqtt: dict = {}
    for key, val in (
        ("host", args.mqtt_host),
        ("port", args.mqtt_port),
        ("topic_prefix", args.prefix),
        ("username", args.username),
        ("password_env", args.password_env),
        ("ca_file", args.ca_file),
        ("spool_dir", args.spool_dir),
    ):
        if val is not None:
            mqtt[key] = val
    if args.tls:
        mqtt["tls"] = True
    if args.mqtt_host:
        mqtt["enabled"] = True
    if args.db:
        mqtt["enabled"] = False
        over["output"] = {"mode": "stdout", "timeline_interval_s": args.timeline_interval}
        if args.source:
            from emotion_edge.cli import parse_source_spec

            kind, uri = parse_source_spec(args.source)
            over["source"] = {"kind": kind, **({"uri": uri} if uri else {})}
    if mqtt:
        over["mqtt"] = mqtt
    return load_config(args.config, over)


def _main(args) -> int:
    from emotion_edge_study.studyfile import load_study

    _check(args)
    study = load_study(args.study)
    for c in study.missing_clips():
        log.warning("clip %s: %s is missing: it will be skipped and marked so", c.name, c.path)
    if not args.device and not args.config:
        raise UserError("give --device (or --config with the daemon's device id)")
    cfg = _app_config(args)
    device_id = cfg.device.id
    writer = store = pipeline = None
    pipe_thread: threading.Thread | None = None
    if args.db:
        from emotion_edge_record.ingest import Writer
        from emotion_edge_record.store import open_store
        from emotion_edge_study.sinks import WriterMarkerSink

        store = open_store(args.db)
        writer = Writer(store, live=True)
        writer.start()
        sink = WriterMarkerSink(writer)
        if not args.no_camera:
            pipeline, pipe_thread = _start_pipeline(cfg, writer)
    elif cfg.mqtt.enabled:
        from emotion_edge_study.sinks import MqttMarkerSink

        sink = MqttMarkerSink(cfg.mqtt, device_id)
    else:
        raise UserError("give --mqtt-host, --db, or a --config whose [mqtt] is enabled")
    sink.start()
    log.info(
        "study %s: %d clips (%s order), markers for device %s to %s",
        study.name,
        len(study.clips),
        study.order,
        device_id,
        sink.where,
    )
    try:
        asyncio.run(_serve(args, study, sink, device_id))
    finally:
        if pipeline is not None:
            pipeline.stop()
            if pipe_thread is not None:
                pipe_thread.join(30)
        sink.close(10.0)
        log.info("markers: %s", sink.stats())
        if writer is not None:
            writer.finish(30)
            store.close()
    return EXIT_OK


def _start_pipeline(cfg, writer):
    """The daemon's pipeline on the camera (or a video), its events and timeline samples
    into the same Writer as the markers (--db)."""
    from emotion_edge.app import build_pipeline
    from emotion_edge_record.offline import _RecordOutput

    pipeline = build_pipeline(cfg, output=_RecordOutput(writer))

    def run() -> None:
        try:
            summary = pipeline.run()
            log.info("pipeline ended: %s", summary.reason)
        except Exception:  # noqa: BLE001 - the study goes on; the log says why
            log.exception("the in-process pipeline failed")

    t = threading.Thread(target=run, name="study-pipeline", daemon=True)
    t.start()
    log.info("pipeline: %s:%s -> %s", cfg.source.kind, cfg.source.uri, writer.store.url)
    return pipeline, t


async def _serve(args, study, sink, device_id) -> None:
    from aiohttp import web
    from emotion_edge_study.server import StudyServer

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_end(_session) -> None:
        if args.sessions is not None and server.sessions_ended >= args.sessions:
            # a moment for the page to learn the end (its heartbeat, every 0.5 s)
            loop.call_soon_threadsafe(loop.call_later, END_GRACE_S, stop.set)

    server = StudyServer(
        study, sink, device_id, abort_after_s=args.abort_after, on_session_end=on_end
    )
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, shutdown_timeout=1.0)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise UserError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from None
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{port}/"
    log.info("study page: %s (researcher: start page; %scontrol: pause/resume/abort)", url, url)
    if args.ready_file:
        Path(args.ready_file).write_text(url + "\n")
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        s = server.session
        if s is not None and s.state != "ended":
            server._end(s, None, "aborted")  # the server is going: the session is over
        await runner.cleanup()


if __name__ == "__main__":
    sys.exit(main())
