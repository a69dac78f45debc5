"""`emotion-edge-analyze`: the image analysis without a camera.

    emotion-edge-analyze photo.jpg group.png          one JSON line per image on stdout
    emotion-edge-analyze --web 8080                   serve POST /api/v1/analyze and the page

The same config file as the daemon (--config): [detector] and [classifier] choose the models,
[web] the address, allow_remote and the token (beyond loopback every route needs it). Errors
the user can fix are one logged line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from emotion_edge import __version__

log = logging.getLogger("emotion_edge")
EXIT_OK, EXIT_USER_ERROR = 0, 2

EPILOG = """\
examples:
  emotion-edge-analyze photo.jpg                       faces and emotions as JSON
  emotion-edge-analyze --web 8080                      http://127.0.0.1:8080/ (drop a photo)
  curl -F image=@photo.jpg http://127.0.0.1:8080/api/v1/analyze
  curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' \\
       'http://127.0.0.1:8080/api/v1/analyze?crops=true'

The daemon serves the same API beside its live view (emotion-edge --web 8080).
Exit codes: 0 ok, 2 configuration/model/image error, 1 bug.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emotion-edge-analyze",
        description="Find the faces in still images and classify their emotions with the "
        "device's detector and int8 model: from the command line, or as an HTTP API with a "
        "drag-and-drop page (no camera needed).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="*", metavar="IMAGE", help="JPEG/PNG files to analyse")
    p.add_argument("-c", "--config", metavar="FILE", help="the daemon's TOML config file")
    p.add_argument(
        "--web",
        metavar="[HOST:]PORT",
        help="serve the API and page on PORT (host default 127.0.0.1; another address "
        "needs [web] allow_remote and a token)",
    )
    p.add_argument("--model", metavar="PATH", help="int8 emotion .tflite (sidecar beside it)")
    p.add_argument("--detector", metavar="KIND", help="face detector kind (see emotion-edge -h)")
    p.add_argument("--crops", action="store_true", help="add each face's JPEG (base64)")
    p.add_argument(
        "--scan",
        choices=("photo", "frame"),
        default="photo",
        help="files: every detector view (photo, default) or one pass (frame, faster)",
    )
    p.add_argument(
        "--max-upload-mb", type=float, default=10.0, metavar="MB", help="largest upload (10)"
    )
    p.add_argument(
        "--max-megapixels", type=float, default=24.0, metavar="MP", help="largest image (24)"
    )
    p.add_argument("--workers", type=int, default=2, metavar="N", help="analyses at once (2)")
    p.add_argument(
        "--queue", type=int, default=4, metavar="N", help="more may wait; beyond: HTTP 429 (4)"
    )
    p.add_argument(
        "--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="log level (INFO)"
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def _overrides(args: argparse.Namespace) -> dict:
    from emotion_edge.cli import parse_web_spec

    o: dict[str, dict] = {}
    if args.model:
        o.setdefault("classifier", {})["model_path"] = args.model
    if args.detector:
        o.setdefault("detector", {})["kind"] = args.detector
    if args.web:
        host, port = parse_web_spec(args.web)
        o["web"] = {"enabled": True, "port": port, **({"host": host} if host else {})}
    if args.log_level:
        o["logging"] = {"level": args.log_level}
    return o


def _limits(args: argparse.Namespace, cfg):
    from emotion_edge.errors import ConfigError
    from emotion_edge.web.analyze_api import AnalyzeLimits

    for name, value, low in (
        ("--max-upload-mb", args.max_upload_mb, 0.001),
        ("--max-megapixels", args.max_megapixels, 0.001),
        ("--workers", args.workers, 1),
        ("--queue", args.queue, 0),
    ):
        if value < low:
            raise ConfigError(f"{name}: must be >= {low:g}, got {value:g}")
    return AnalyzeLimits(
        max_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=int(args.max_megapixels * 1_000_000),
        workers=args.workers,
        queue=args.queue,
        top_k_default=cfg.tracking.top_k,
    )


def analyse_files(cfg, limits, paths: list[str], crops: bool, scan: str) -> int:
    from emotion_edge.analyze.analyzer import Analyzer
    from emotion_edge.analyze.image import ImageError

    analyzer = Analyzer(cfg, limits=limits.image, top_k=limits.top_k_default)
    failed = 0
    for path in paths:
        try:
            result = analyzer.analyze(path, crops=crops, scan=scan)
        except (OSError, ImageError) as exc:
            log.error("%s: %s", path, getattr(exc, "strerror", None) or exc)
            failed += 1
            continue
        line = {"file": path, **result.to_json()}
        sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
        sys.stdout.flush()
    return EXIT_USER_ERROR if failed else EXIT_OK


def serve(cfg, limits) -> int:
    from emotion_edge.web import WebServer
    from emotion_edge.web.analyze_api import make_analyze_api

    api = make_analyze_api(cfg, camera_less=True, limits=limits)
    analyzer = api.warm_up()
    server = WebServer(
        cfg.web,
        device_id=cfg.device.id,
        model_version=analyzer.model_version,
        labels=analyzer.labels,
        face_info=lambda face_id: None,
        status=lambda: {},
        token=cfg.web.token() if cfg.web.allow_remote else "",
        analyze=api,
    )
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        log.info("%s received, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    log.info(
        "image analysis on %sanalyze (API %sapi/v1/analyze), detector %s, model %s, "
        "<= %d analyses at once, %d waiting, %.1f MB, %.1f MP",
        server.url,
        server.url,
        analyzer.detector.name,
        analyzer.model_version,
        limits.workers,
        limits.queue,
        limits.max_bytes / 1024 / 1024,
        limits.max_pixels / 1e6,
    )
    while not stop.wait(1.0):
        pass
    server.close()
    log.info("done: %s", json.dumps(api.figures))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    from emotion_edge.cli import exit_code_of, setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.log_level or "INFO")

    def body() -> int:
        from emotion_edge.config import load_config
        from emotion_edge.errors import ConfigError

        if not args.images and not args.web:
            raise ConfigError(
                "nothing to do: give IMAGE files to analyse, or --web [HOST:]PORT to serve "
                "the API (see emotion-edge-analyze --help)"
            )
        cfg = load_config(args.config, _overrides(args))
        logging.getLogger().setLevel(cfg.logging.level)
        limits = _limits(args, cfg)
        if args.web:
            return serve(cfg, limits)
        return analyse_files(cfg, limits, args.images, args.crops, args.scan)

    return exit_code_of(body)


if __name__ == "__main__":
    sys.exit(main())
