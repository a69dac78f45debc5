"""Wires the stages for a validated config: model -> detector -> source -> output -> pipeline.

The one place that knows every room (Frigate's app.py is the model): cli.py parses flags and
calls `build_pipeline`; the stages know only their own table of the config.
"""

from __future__ import annotations

from emotion_edge.classify.classifier import load_classifier
from emotion_edge.config import AppConfig
from emotion_edge.detect.detector import make_detector
from emotion_edge.pipeline import Pipeline
from emotion_edge.preprocess import FER2013_LABELS
from emotion_edge.publish.base import Output
from emotion_edge.publish.stdout import StdoutOutput
from emotion_edge.systemd_notify import SystemdNotifier
from emotion_edge.video.capture import Capture
from emotion_edge.video.sources import FILE_KINDS, make_source


def make_output(
    cfg: AppConfig, model_version: str, labels: tuple[str, ...] = FER2013_LABELS
) -> Output:
    if cfg.output.mode == "mqtt":
        from emotion_edge.publish.homeassistant import ha_device_for
        from emotion_edge.publish.mqtt import MqttPublisher  # paho only when it is used

        pub = MqttPublisher(cfg.mqtt, cfg.device.id, model_version)
        pub.ha_device = ha_device_for(cfg, model_version, labels)
        return pub
    return StdoutOutput()


def build_pipeline(
    cfg: AppConfig, output: Output | None = None, notifier: SystemdNotifier | None = None
) -> Pipeline:
    """Load the model, detector, output and capture for a validated AppConfig.

    The order is the order of likely failure: model first (ModelError), then detector, then
    the source probe (SourceError), so a broken install fails before a camera is touched.
    Sources read from files fail for good when the path is wrong, so they are opened once
    here and a typo is an error at start-up; cameras are only opened by the capture thread,
    which retries with backoff (a camera unplugged now may come back).
    """
    # the budget lets [classifier] model = "auto" drop to the single net when the pair breaks it
    classifier = load_classifier(cfg.classifier, budget_ms=cfg.pipeline.budget_ms)
    detector = make_detector(cfg.detector)
    if cfg.source.kind in FILE_KINDS:
        probe = make_source(cfg.source)
        try:
            probe.open()
        finally:
            probe.close()
    if output is None:
        output = make_output(cfg, classifier.version, classifier.labels)
    # A folder of photos is analysed photo by photo: paced like a camera, but none is dropped
    # as stale however long one takes (every detector view runs on a new photo).
    capture = Capture(
        lambda: make_source(cfg.source),
        cfg.source,
        realtime=cfg.pipeline.realtime,
        drop_stale=cfg.pipeline.realtime and cfg.source.kind != "images",
    )
    pipeline = Pipeline(cfg, capture, detector, classifier, output, notifier=notifier)
    if cfg.web.enabled:
        attach_web(cfg, pipeline)
    return pipeline


def attach_web(cfg: AppConfig, pipeline: Pipeline):
    """Start the [web] live view and tap the pipeline's frames into it (WebError: exit 2).

    The server reads the engine only from the pipeline thread (inside on_frame) and the
    capture/output figures through their thread-safe stats()."""
    from emotion_edge.web import WebServer  # aiohttp only when the live view is on
    from emotion_edge.web.analyze_api import make_analyze_api

    def face_info(face_id: int):
        st = pipeline.engine.faces.get(face_id)
        return None if st is None else (st.announced, st.first_seen_ts)

    def status() -> dict:
        return {
            "capture": pipeline.capture.stats(),
            "output": pipeline.output.stats(),
            "output_mode": cfg.output.mode,
        }

    server = WebServer(
        cfg.web,
        device_id=cfg.device.id,
        model_version=pipeline.model_version,
        labels=pipeline.classifier.labels,
        face_info=face_info,
        status=status,
        token=cfg.web.token() if cfg.web.allow_remote else "",
        detector_kind=cfg.detector.kind,  # the page's "faces too far" hint names it
        # POST /api/v1/analyze beside the live view; its own models load at the first request
        # (+33 MB, +66 MB after a photo): a daemon whose API nobody uses does not pay for it
        analyze=make_analyze_api(cfg),
    )
    server.start()
    pipeline.taps.append(server)
    return server
