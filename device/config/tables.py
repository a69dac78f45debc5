"""Every table of the daemon's config file, as typed dataclasses declared one way.

Each key is a `setting()` with its default, help text and bounds; validation (validate.py) and
rendering (render.py) read that metadata. Nothing here imports the runtime: the stages import
their table from here, never the reverse.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from emotion_edge.config.fields import setting
from emotion_edge.errors import ConfigError

SOURCE_KINDS = ("demo", "picamera2", "opencv", "video", "images")
DETECTOR_KINDS = ("auto", "blazeface", "blazeface_full", "haar")


@dataclass
class DeviceConfig:
    id: str = setting("", "device id in MQTT topics and payloads; empty: the host name")
    name: str = setting("", "human-readable name (Home Assistant); empty: the id")


@dataclass
class SourceConfig:
    kind: str = setting("demo", "where frames come from", choices=SOURCE_KINDS)
    uri: str = setting(
        "",
        "opencv: device index, /dev/videoN, rtsp:// or http:// URL or a GStreamer pipeline; "
        "video: file path; images: folder path",
    )
    width: int = setting(640, "requested frame width (cameras)", min=16, max=8192)
    height: int = setting(480, "requested frame height (cameras)", min=16, max=8192)
    fps: float = setting(15.0, "requested camera frame rate", min=0, max=240, min_exclusive=True)
    loop: bool = setting(True, "video/images/demo: start again at the end, else end of stream")
    reopen_min_s: float = setting(
        1.0, "first delay before reopening a failed camera (doubles)", min=0, min_exclusive=True
    )
    reopen_max_s: float = setting(
        30.0, "longest delay between camera reopen attempts", min=0, min_exclusive=True
    )
    max_image_pixels: int = setting(
        50_000_000,
        "images: a picture with more pixels (width x height, read from the file's header) is "
        "skipped, counted and logged once, never decoded",
        min=1,
    )


@dataclass
class DetectorConfig:
    kind: str = setting(
        "auto",
        "face detector: auto (BlazeFace short range on the whole frame, on tiles of it "
        "upscaled and around faces already found: close-ups to the back of a room), blazeface "
        "(short range, whole frame only: faces >= ~110 px at 640x480), blazeface_full (full "
        "range) or haar",
        choices=DETECTOR_KINDS,
    )
    model_path: str = setting("", "BlazeFace .tflite; empty: the file shipped in the package")
    min_score: float = setting(0.5, "lowest detection score kept", min=0, max=1, min_exclusive=True)
    nms_iou: float = setting(
        0.3, "IoU above which overlapping detections merge", min=0, max=1, min_exclusive=True
    )
    min_face_px: int = setting(16, "smallest face side in pixels", min=1)
    num_threads: int = setting(1, "LiteRT threads for the detector", min=1, max=64)
    far_min_face_px: float = setting(
        24.0,
        "auto: height of the smallest face the far tiles look for in a 640 px wide frame "
        "(proportionally more in a bigger frame or photo); they upscale the frame so such a "
        "face is ~30 px to the net: smaller costs more tiles",
        min=8.0,
        max=200.0,
    )
    far_min_score: float = setting(
        0.65,
        "auto: lowest score kept from upscaled tiles and around small faces (upscaled "
        "texture fools the net more often than a whole frame does)",
        min=0,
        max=1,
        min_exclusive=True,
    )
    far_tile_px: int = setting(
        256,
        "auto: side of one far tile in network input pixels (tiles overlap by 70 px so "
        "every face they look for is whole in one)",
        min=128,
        max=1024,
    )
    scan_px_per_frame: int = setting(
        65536,
        "auto: network input pixels of far tiles credited per detection run (round-robin "
        "over the frame; 65536 = one 256 px tile, a 640x480 frame is scanned in 13 runs); "
        "more finds new small faces sooner and costs more",
        min=4096,
        max=100_000_000,
    )
    roi_hold_runs: int = setting(
        15,
        "auto: detection runs a small face found once is looked for again around its last box",
        min=1,
        max=1000,
    )


FLIP_AVERAGE_MODES = ("model", "on", "off")
CLASSIFIER_MODELS = ("auto", "pair", "single")


@dataclass
class ClassifierConfig:
    model: str = setting(
        "auto",
        "which emotion model runs: auto (model_path, the two-net file, while the faces in view "
        "fit [pipeline] budget_ms on a CPU with int8 dot-product instructions, else "
        "single_model_path; stats say which ran and events' model_version names it), pair "
        "(model_path only), single (single_model_path only)",
        choices=CLASSIFIER_MODELS,
    )
    model_path: str = setting(
        "",
        "int8 .tflite with its .json sidecar; empty: the packaged two-net model (with auto and "
        "single_model_path empty, a file set here runs alone)",
    )
    single_model_path: str = setting(
        "",
        "the cheaper one-net int8 .tflite (+ sidecar) for model = auto or single; empty: the "
        "packaged emotion_int8_single.tflite",
    )
    num_threads: int = setting(2, "LiteRT threads for the emotion model", min=1, max=64)
    max_batch: int = setting(8, "faces per interpreter call (more are split)", min=1, max=64)
    flip_average: str = setting(
        "model",
        "average each face with its mirror image (a second inference per face): "
        "model (as the model's sidecar says), on, off",
        choices=FLIP_AVERAGE_MODES,
    )


@dataclass
class TrackingConfig:
    iou_threshold: float = setting(
        0.3, "min IoU to keep a face id across detections", min=0.01, max=1.0
    )
    max_missed: int = setting(
        2,
        "detection runs a face may be missed before it disappears (and hold_s must pass)",
        min=0,
        max=1000,
    )
    hold_s: float = setting(
        2.0,
        "seconds a face missed by the detector keeps its id (carried with detected false) "
        "before it disappears: detection misses and short occlusions do not break a track",
        min=0.0,
        max=600.0,
    )
    hold_interior_s: float = setting(
        6.0,
        "hold_s for a face last seen more than a face size from every frame edge (people "
        "leave through the edges; one lost mid-frame is more likely missed or hidden)",
        min=0.0,
        max=600.0,
    )
    max_jump: float = setting(
        0.6,
        "a face not matched by overlap is matched to a detection this many face sizes away "
        "(more after misses)",
        min=0.0,
        max=10.0,
    )
    min_hits: int = setting(
        2,
        "detections before a face is announced (hides one-frame false positives)",
        min=1,
        max=1000,
    )
    smoothing_tau_s: float = setting(
        0.4, "EMA time constant of emotion probabilities; 0 = none", min=0.0, max=60.0
    )
    min_confidence: float = setting(
        0.3, "smoothed probability a new emotion needs to be reported", min=0.0, max=1.0
    )
    hysteresis: float = setting(
        0.5,
        "margin a new emotion must beat the reported one by (see hysteresis_after_change)",
        min=0.0,
        max=1.0,
    )
    min_dwell_s: float = setting(
        0.2, "how long a new emotion must lead before it is reported", min=0.0, max=600.0
    )
    change_distance: float = setting(
        0.3,
        "a face's raw probabilities over the last 0.4 s moved this far (total variation) from "
        "the 1.5 s before: a change point; smoothing restarts from the new evidence (1 = off)",
        min=0.0,
        max=1.0,
        min_exclusive=True,
    )
    hysteresis_after_change: float = setting(
        0.0,
        "the margin a new emotion needs instead of hysteresis within after_change_s of a "
        "change point",
        min=0.0,
        max=1.0,
    )
    after_change_s: float = setting(
        1.5, "how long after a change point hysteresis_after_change applies", min=0.0, max=60.0
    )
    revert_s: float = setting(
        3.0,
        "a change back to the emotion reported before, within this many seconds of the last "
        "change, needs the full hysteresis (flicker between two emotions is told once)",
        min=0.0,
        max=600.0,
    )
    top_k: int = setting(3, "emotions with confidences in each event", min=1, max=7)
    velocity_alpha: float = setting(
        0.5,
        "EMA weight of a face's newest box motion, used to move boxes between detections",
        min=0.0,
        max=1.0,
    )


@dataclass
class PipelineConfig:
    budget_ms: float = setting(
        100.0, "per-frame processing budget", min=0.0, max=60000.0, min_exclusive=True
    )
    detect_every_n: int = setting(
        1, "run face detection on every Nth frame (track between)", min=1, max=100
    )
    max_detect_every_n: int = setting(
        6, "upper bound when adapting detect_every_n to the budget", min=1, max=100
    )
    adaptive: bool = setting(True, "raise detect_every_n when over budget, lower it when under")
    stats_interval_s: float = setting(10.0, "seconds between stats payloads", min=0.5, max=86400.0)
    state_interval_s: float = setting(
        5.0, "seconds between state payloads (also sent on every event)", min=0.5, max=86400.0
    )
    realtime: bool = setting(
        True,
        "pace video files to their fps like a camera; false: as fast as processed (benchmarks)",
    )
    frame_timeout_s: float = setting(
        1.0, "wait for a frame this long before a loop pass without one", min=0.01, max=60.0
    )


@dataclass
class OutputConfig:
    mode: str = setting("stdout", "stdout (JSON lines) or mqtt", choices=("stdout", "mqtt"))
    timeline_interval_s: float = setting(
        0.0,
        "seconds between timeline samples (every face's probabilities; 0 = off)",
        min=0.0,
        max=86400.0,
    )


@dataclass
class MqttConfig:
    enabled: bool = setting(False, "publish over MQTT; false: print JSON lines to stdout instead")
    host: str = setting("localhost", "broker host name or address")
    port: int = setting(1883, "broker port (usually 1883, 8883 with TLS)", min=1, max=65535)
    client_id: str = setting("", "MQTT client id; empty: emotion-edge-<device_id>")
    topic_prefix: str = setting("emotion-edge", "topics are <prefix>/<device_id>/<name>")
    username: str = setting("", "user name; empty: anonymous")
    password_env: str = setting(
        "EMOTION_EDGE_MQTT_PASSWORD", "environment variable holding the password (never on the CLI)"
    )
    password_file: str = setting("", "file holding the password (first line); wins over the env")
    tls: bool = setting(False, "connect with TLS")
    ca_file: str = setting("", "CA bundle (PEM) to verify the broker; empty: system CAs")
    cert_file: str = setting("", "client certificate (PEM) for mutual TLS")
    key_file: str = setting("", "client private key (PEM) for mutual TLS")
    tls_insecure: bool = setting(False, "skip the broker host name check (testing only)")
    keepalive_s: int = setting(30, "MQTT keepalive in seconds", min=5, max=3600)
    qos_events: int = setting(
        1, "QoS of events (1 or 2; 0 would break at-least-once)", min=1, max=2
    )
    spool_dir: str = setting(
        "", "event spool folder; empty: $STATE_DIRECTORY/spool or ~/.local/state/emotion-edge/spool"
    )
    spool_max_events: int = setting(
        10000, "events kept while the broker is away (oldest dropped)", min=1, max=10_000_000
    )
    memory_queue_events: int = setting(
        1000,
        "events held in memory while the spool cannot be written (full or failing disk); "
        "sent from there, moved to the spool when it works again, oldest dropped beyond",
        min=1,
        max=1_000_000,
    )
    protocol: str = setting(
        "5",
        'MQTT version: "5" checks the broker\'s answer to every event (refused = counted as '
        'rejected) and detects a second device with our id; "3.1.1" for old brokers, which '
        "acknowledge events they refuse (ACL), so those count as delivered and are lost",
        choices=("5", "3.1.1"),
    )
    require_subscriber: bool = setting(
        False,
        "MQTT 5: an event the broker acknowledges with 'no matching subscribers' (0x10: no "
        "recorder subscribed, e.g. a broker without persistence restarted before the recorder "
        "came back) stays in the spool and is sent again with backoff (stats "
        "waiting_for_subscriber) instead of counting as delivered",
    )
    takeover_backoff_s: float = setting(
        60.0,
        "MQTT 5: wait this long before reconnecting after another client took our session "
        "(two devices with one device id); doubles on repeats, up to 10x",
        min=0.1,
        max=3600.0,
    )
    reconnect_min_s: float = setting(
        1.0, "first reconnect delay (doubles up to the max)", min=0.1, max=3600.0
    )
    reconnect_max_s: float = setting(60.0, "longest reconnect delay", min=0.1, max=3600.0)
    ha_discovery: bool = setting(False, "publish Home Assistant MQTT discovery configs")
    ha_prefix: str = setting("homeassistant", "Home Assistant discovery prefix")

    def password(self) -> str | None:
        """The password from password_file (first line) or the env variable; None: none."""
        if self.password_file:
            try:
                text = Path(self.password_file).expanduser().read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"mqtt.password_file: cannot read ({exc})") from None
            return text.splitlines()[0] if text else ""
        if self.password_env:
            return os.environ.get(self.password_env)
        return None

    def resolved_spool_dir(self) -> Path:
        if self.spool_dir:
            return Path(self.spool_dir).expanduser()
        state = os.environ.get("STATE_DIRECTORY", "")  # set by systemd StateDirectory=
        if state:
            return Path(state.split(":")[0]) / "spool"
        return Path.home() / ".local" / "state" / "emotion-edge" / "spool"


@dataclass
class PrivacyConfig:
    allow_snapshots: bool = setting(
        False,
        "attach a JPEG of the face crop to appeared/changed events (images leave the device!)",
    )
    snapshot_size: int = setting(96, "snapshot side in pixels", min=16, max=512)
    snapshot_jpeg_quality: int = setting(80, "snapshot JPEG quality", min=10, max=100)


@dataclass
class WebConfig:
    enabled: bool = setting(False, "serve the live view page (kiosk screen) over HTTP")
    host: str = setting(
        "127.0.0.1",
        "address to listen on; anything but loopback needs allow_remote = true and a token",
    )
    port: int = setting(8080, "TCP port of the live view", min=1, max=65535)
    max_fps: float = setting(
        10.0, "frame rate cap of the picture stream and the push channel", min=0.5, max=60.0
    )
    jpeg_quality: int = setting(70, "JPEG quality of the streamed picture", min=10, max=100)
    stream_width: int = setting(
        640,
        "width of the streamed picture in pixels; the height keeps the aspect",
        min=64,
        max=3840,
    )
    max_clients: int = setting(
        4,
        "viewers at once: a page (its picture stream + push channel) counts once, any other "
        "client per connection; more get HTTP 503 'viewer limit reached'",
        min=1,
        max=64,
    )
    send_timeout_s: float = setting(
        10.0,
        "a client that takes longer than this to accept a frame is dropped",
        min=0.5,
        max=600.0,
    )
    allow_remote: bool = setting(
        False, "allow a non-loopback host (faces leave the device!); needs a token"
    )
    token_env: str = setting(
        "EMOTION_EDGE_WEB_TOKEN", "environment variable holding the access token"
    )
    token_file: str = setting("", "file holding the access token (first line); wins over the env")

    def token(self) -> str:
        """The access token from token_file (first line) or the env variable; "" when none."""
        if self.token_file:
            try:
                text = Path(self.token_file).expanduser().read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"web.token_file: cannot read ({exc})") from None
            return text.splitlines()[0].strip() if text.strip() else ""
        if self.token_env:
            return os.environ.get(self.token_env, "").strip()
        return ""


@dataclass
class LoggingConfig:
    level: str = setting("INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


TABLE_ORDER = (
    "device",
    "source",
    "detector",
    "classifier",
    "tracking",
    "pipeline",
    "output",
    "mqtt",
    "privacy",
    "web",
    "logging",
)


@dataclass
class AppConfig:
    """The whole validated file; `path` is the file it came from ("" = defaults only)."""

    device: DeviceConfig
    source: SourceConfig
    detector: DetectorConfig
    classifier: ClassifierConfig
    tracking: TrackingConfig
    pipeline: PipelineConfig
    output: OutputConfig
    mqtt: MqttConfig
    privacy: PrivacyConfig
    web: WebConfig
    logging: LoggingConfig
    path: str = ""

    @property
    def device_id(self) -> str:
        return self.device.id

    def tables(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in TABLE_ORDER}


TABLES: dict[str, type] = {
    "device": DeviceConfig,
    "source": SourceConfig,
    "detector": DetectorConfig,
    "classifier": ClassifierConfig,
    "tracking": TrackingConfig,
    "pipeline": PipelineConfig,
    "output": OutputConfig,
    "mqtt": MqttConfig,
    "privacy": PrivacyConfig,
    "web": WebConfig,
    "logging": LoggingConfig,
}
