"""`emotion-edge`: the device daemon's command line.

With no arguments it runs the demo (a real photo, panned and zoomed like a camera, from
scikit-image) and prints events as JSON lines, so it does real work on a machine with no camera
and no broker. Errors the user can fix (EmotionEdgeError) are one logged line and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from emotion_edge import __version__
from emotion_edge.config.tables import DETECTOR_KINDS, SOURCE_KINDS
from emotion_edge.errors import ConfigError, EmotionEdgeError

log = logging.getLogger("emotion_edge")

VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".h264"}
EXIT_OK, EXIT_UNEXPECTED, EXIT_USER_ERROR = 0, 1, 2

EPILOG = """\
sources (--source KIND[:URI], or a bare path/URL/number that is guessed):
  demo                         a real photo panned and zoomed (needs scikit-image); the default
  picamera2                    Raspberry Pi camera (lores YUV420 stream, Y plane)
  opencv:0 | opencv:/dev/video0  USB/V4L2 webcam
  opencv:rtsp://cam/stream     RTSP/HTTP stream; a GStreamer pipeline also works (Jetson CSI)
  video:clip.mp4               video file (paced to its fps; loops unless --no-loop)
  images:/path/to/folder       folder of images

examples:
  emotion-edge --max-frames 60                        demo, JSON lines on stdout
  emotion-edge --source opencv:0 --mqtt-host 192.168.1.10
  emotion-edge --config /etc/emotion-edge/config.toml
  emotion-edge --config my.toml --print-config        show the effective config
  emotion-edge --source opencv:0 --web 8080           live view: http://127.0.0.1:8080/
  mosquitto_sub -h HOST -t 'emotion-edge/#' -v        watch what the daemon publishes

Secrets (the MQTT password) come from the environment or a file named in the config,
never from the command line. Exit codes: 0 ok, 2 configuration/model/source error, 1 bug.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emotion-edge",
        description="Real-time facial emotion recognition daemon: camera -> faces -> int8 "
        "emotion model -> events on stdout or MQTT.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="TOML config file (see device/config.example.toml); flags override it",
    )
    g = p.add_argument_group("input")
    g.add_argument(
        "--source",
        metavar="KIND[:URI]",
        help=f"frame source; KIND is one of {', '.join(SOURCE_KINDS)}",
    )
    g.add_argument("--uri", help="source URI when --source gives only the kind")
    g.add_argument(
        "--loop",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="loop video/image sources at their end (default: config, true)",
    )
    g.add_argument(
        "--model", metavar="PATH", help="int8 emotion .tflite (its .json sidecar beside it)"
    )
    g.add_argument(
        "--detector", metavar="KIND", help="face detector: " + " | ".join(DETECTOR_KINDS)
    )
    o = p.add_argument_group("output")
    x = o.add_mutually_exclusive_group()
    x.add_argument("--mqtt-host", metavar="HOST", help="publish to this MQTT broker")
    x.add_argument(
        "--dry-run",
        action="store_true",
        help="print events as JSON lines on stdout; no broker even if configured",
    )
    o.add_argument("--mqtt-port", type=int, metavar="PORT", help="broker port (enables MQTT)")
    o.add_argument("--device-id", metavar="ID", help="device id in topics (default: host name)")
    o.add_argument(
        "--web",
        metavar="[HOST:]PORT",
        help="serve the live view page on PORT (host default 127.0.0.1; another address "
        "needs [web] allow_remote and a token)",
    )
    r = p.add_argument_group("run")
    r.add_argument("--budget-ms", type=float, metavar="MS", help="per-frame latency budget")
    r.add_argument("--max-frames", type=int, metavar="N", help="stop after N processed frames")
    r.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    r.add_argument(
        "--print-config", action="store_true", help="print the effective config as TOML and exit"
    )
    r.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log level (default: config [logging] level, INFO)",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def parse_source_spec(spec: str) -> tuple[str, str | None]:
    """'video:clip.mp4' -> ('video', 'clip.mp4'); a bare URL, index, folder or file is guessed."""
    head, sep, rest = spec.partition(":")
    if head in SOURCE_KINDS:
        return head, (rest if sep else None)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", spec):
        return "opencv", spec
    if spec.isdigit() or spec.startswith("/dev/video"):
        return "opencv", spec
    path = Path(spec).expanduser()
    if path.is_dir():
        return "images", spec
    if path.is_file() or path.suffix.lower() in VIDEO_SUFFIXES:
        return "video", spec
    raise ConfigError(
        f"--source {spec!r}: unknown source; use KIND[:URI] with KIND one of "
        f"{', '.join(SOURCE_KINDS)} (e.g. video:clip.mp4, opencv:0)"
    )


def parse_web_spec(spec: str) -> tuple[str | None, int]:
    """'8080' -> (None, 8080); '0.0.0.0:8080' -> ('0.0.0.0', 8080); '[::1]:8080' -> ('::1', ...)."""
    host, sep, port = spec.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or (sep and not host):
        raise ConfigError(f"--web {spec!r}: expected [HOST:]PORT, e.g. 8080 or 127.0.0.1:8080")
    return (host if sep else None), int(port)


def overrides_from_args(args: argparse.Namespace) -> dict:
    o: dict[str, dict] = {}

    def put(table: str, key: str, value) -> None:
        o.setdefault(table, {})[key] = value

    if args.source:
        kind, uri = parse_source_spec(args.source)
        put("source", "kind", kind)
        if uri is not None:
            put("source", "uri", uri)
    if args.uri is not None:
        put("source", "uri", args.uri)
    if args.loop is not None:
        put("source", "loop", args.loop)
    if args.model:
        put("classifier", "model_path", args.model)
    if args.detector:
        put("detector", "kind", args.detector)
    if args.device_id:
        put("device", "id", args.device_id)
    if args.budget_ms is not None:
        put("pipeline", "budget_ms", args.budget_ms)
    if args.log_level:
        put("logging", "level", args.log_level)
    if args.web:
        host, port = parse_web_spec(args.web)
        put("web", "enabled", True)
        put("web", "port", port)
        if host is not None:
            put("web", "host", host)
    if args.dry_run:
        put("output", "mode", "stdout")
        put("mqtt", "enabled", False)
    elif args.mqtt_host or args.mqtt_port is not None:
        put("output", "mode", "mqtt")
        put("mqtt", "enabled", True)
        if args.mqtt_host:
            put("mqtt", "host", args.mqtt_host)
        if args.mqtt_port is not None:
            put("mqtt", "port", args.mqtt_port)
    return o


def setup_logging(level: str) -> None:
    # under systemd the journal stamps time itself
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr, force=True)


def _hints(cfg) -> None:
    if cfg.source.kind == "demo":
        log.info(
            "demo source (a photo from scikit-image); for a camera use --source opencv:0 "
            "(webcam), --source picamera2 (Pi camera) or --source video:FILE"
        )
    if cfg.output.mode == "stdout":
        log.info(
            "events go to stdout as JSON lines; publish to a broker with --mqtt-host HOST "
            "or [mqtt] enabled = true in --config FILE"
        )


def run_daemon(cfg, max_frames: int | None, duration: float | None) -> int:
    from emotion_edge.app import build_pipeline
    from emotion_edge.systemd_notify import SystemdNotifier

    notifier = SystemdNotifier()
    holder: dict = {}

    def on_signal(signum, _frame) -> None:
        log.info("%s received, shutting down", signal.Signals(signum).name)
        holder["stop"] = True
        if "pipeline" in holder:
            holder["pipeline"].stop()
        # a second signal ends the process at once, in case shutdown hangs
        signal.signal(signum, signal.SIG_DFL)

    # installed before the model loads, so an early SIGTERM still ends in a clean exit
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    pipeline = holder["pipeline"] = build_pipeline(cfg, notifier=notifier)
    if holder.get("stop"):
        pipeline.stop()
    _hints(cfg)
    summary = pipeline.run(max_frames=max_frames, duration_s=duration)
    st = summary.stats
    # the run's mean rate (the last interval may hold no frame: a stats payload came just
    # before the end), and where every event went (MQTT: created = delivered + ... + queued)
    uptime = float(st.get("uptime_s") or 0.0)
    fps = summary.frames_processed / uptime if uptime > 0 else 0.0
    delivery = pipeline.output.delivery_summary()
    log.info(
        "done (%s): %d frames processed, %d skipped, %.1f fps on average, %d events %s%s",
        summary.reason,
        summary.frames_processed,
        summary.frames_skipped,
        fps,
        summary.events,
        summary.event_counts,
        f"; {delivery}" if delivery else "",
    )
    if pipeline.output.broken:
        # stdout reader gone: keep interpreter shutdown from failing on the final flush
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """argparse's own refusals (an unknown flag, a malformed number) as one line and exit 2,
    like every other user error, instead of the usage text followed by the error."""

    def error(message: str):
        parser.exit(EXIT_USER_ERROR, f"{parser.prog}: error: {message} (see --help)\n")

    parser.error = error  # type: ignore[method-assign]
    return parser


def check_run_flags(args: argparse.Namespace) -> None:
    """The flags the config file does not validate (it checks --mqtt-port only when MQTT is
    on, and a NaN would pass `<= 0`)."""
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames: must be >= 1, got {args.max_frames}")
    if args.duration is not None and not (math.isfinite(args.duration) and args.duration > 0):
        raise ConfigError(f"--duration: must be a finite number > 0, got {args.duration}")
    if args.mqtt_port is not None and not 1 <= args.mqtt_port <= 65535:
        raise ConfigError(f"--mqtt-port: a TCP port is 1-65535, got {args.mqtt_port}")


def exit_code_of(body: Callable[[], int]) -> int:
    """Run a command's body: a user error (EmotionEdgeError) is one line and exit 2, anything
    else one line and exit 1 with the traceback at DEBUG; never a traceback wall."""
    try:
        return body()
    except EmotionEdgeError as exc:
        log.error("%s", exc)
        return EXIT_USER_ERROR
    except Exception as exc:  # noqa: BLE001 - one line for the user, traceback at DEBUG
        log.error(
            "unexpected error: %s: %s (run with --log-level DEBUG for details)",
            type(exc).__name__,
            exc,
        )
        log.debug("traceback", exc_info=True)
        return EXIT_UNEXPECTED


def main(argv: list[str] | None = None) -> int:
    args = one_line_errors(build_parser()).parse_args(argv)
    setup_logging(args.log_level or "INFO")

    def body() -> int:
        check_run_flags(args)
        from emotion_edge.config import load_config, to_toml

        cfg = load_config(args.config, overrides_from_args(args))
        logging.getLogger().setLevel(cfg.logging.level)
        if args.print_config:
            sys.stdout.write(to_toml(cfg))
            return EXIT_OK
        return run_daemon(cfg, args.max_frames, args.duration)

    return exit_code_of(body)


if __name__ == "__main__":
    sys.exit(main())
