"""The daemon's one config file (TOML), validated at start-up.

Every table becomes a dataclass. Validation happens once, before anything opens, and every
error names the key (`pipeline.budget_ms: must be > 0, got -5`), including unknown keys with a
did-you-mean. CLI flags are applied to the raw tables before validation, so a bad flag value is
reported under its config key too. `to_toml()` renders the effective config
(`emotion-edge --print-config`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import socket
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotion_edge.errors import ConfigError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 needs the tomli backport
    import tomli as tomllib  # type: ignore[no-redef]


def _f(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: tuple | None = None,
    min_exclusive: bool = False,
) -> Any:
    return field(
        default=default,
        metadata={
            "help": help,
            "min": min,
            "max": max,
            "choices": choices,
            "min_exclusive": min_exclusive,
        },
    )


# -- tables owned here --------------------------------------------------------------------------

_DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def default_device_id() -> str:
    host = socket.gethostname().split(".")[0] or "device"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", host)[:64]


@dataclass
class DeviceConfig:
    id: str = _f("", "device id in MQTT topics and payloads; empty: the host name")
    name: str = _f("", "human-readable name (Home Assistant); empty: the id")


@dataclass
class ClassifierConfig:
    model_path: str = _f("", "int8 .tflite with its .json sidecar; empty: the packaged model")
    num_threads: int = _f(2, "LiteRT threads for the emotion model", min=1, max=64)
    max_batch: int = _f(8, "faces per interpreter call (more are split)", min=1, max=64)


@dataclass
class TrackingConfig:
    iou_threshold: float = _f(0.3, "min IoU to keep a face id across detections", min=0.01, max=1.0)
    max_missed: int = _f(
        5, "detection runs a face may be missed before it disappears", min=0, max=1000
    )
    min_hits: int = _f(
        2,
        "detections before a face is announced (hides one-frame false positives)",
        min=1,
        max=1000,
    )
    smoothing_tau_s: float = _f(
        0.5, "EMA time constant of emotion probabilities; 0 = none", min=0.0, max=60.0
    )
    min_confidence: float = _f(
        0.4, "smoothed probability a new emotion needs to be reported", min=0.0, max=1.0
    )
    hysteresis: float = _f(
        0.1, "margin a new emotion must beat the reported one by", min=0.0, max=1.0
    )
    min_dwell_s: float = _f(
        0.5, "how long a new emotion must lead before it is reported", min=0.0, max=600.0
    )
    top_k: int = _f(3, "emotions with confidences in each event", min=1, max=7)


@dataclass
class PipelineConfig:
    budget_ms: float = _f(
        100.0, "per-frame processing budget", min=0.0, max=60000.0, min_exclusive=True
    )
    detect_every_n: int = _f(
        1, "run face detection on every Nth frame (track between)", min=1, max=100
    )
    max_detect_every_n: int = _f(
        6, "upper bound when adapting detect_every_n to the budget", min=1, max=100
    )
    adaptive: bool = _f(True, "raise detect_every_n when over budget, lower it when under")
    stats_interval_s: float = _f(10.0, "seconds between stats payloads", min=0.5, max=86400.0)
    state_interval_s: float = _f(
        5.0, "seconds between state payloads (also sent on every event)", min=0.5, max=86400.0
    )
    realtime: bool = _f(
        True,
        "pace video files to their fps like a camera; false: as fast as processed (benchmarks)",
    )
    frame_timeout_s: float = _f(
        1.0, "wait for a frame this long before a loop pass without one", min=0.01, max=60.0
    )


@dataclass
class OutputConfig:
    mode: str = _f("stdout", "stdout (JSON lines) or mqtt", choices=("stdout", "mqtt"))


@dataclass
class PrivacyConfig:
    allow_snapshots: bool = _f(
        False,
        "attach a JPEG of the face crop to appeared/changed events (images leave the device!)",
    )
    snapshot_size: int = _f(96, "snapshot side in pixels", min=16, max=512)
    snapshot_jpeg_quality: int = _f(80, "snapshot JPEG quality", min=10, max=100)


@dataclass
class LoggingConfig:
    level: str = _f("INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


# -- generic validation -------------------------------------------------------------------------


def did_you_mean(name: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_unknown(d: dict, allowed: typing.Iterable[str], key: str) -> None:
    allowed = list(allowed)
    for k in d:
        if k not in allowed:
            where = f"{key}.{k}" if key else k
            raise ConfigError(
                f"{where}: unknown key{did_you_mean(k, allowed)}; known keys: {', '.join(allowed)}"
            )


def _type_name(value: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "float",
        str: "string",
        list: "array",
        dict: "table",
    }.get(type(value), type(value).__name__)


def _coerce(value: Any, typ: Any, where: str) -> Any:
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_type_name(value)} {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {_type_name(value)} {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {_type_name(value)} {value!r}")
        if math.isnan(value):
            raise ConfigError(f"{where}: expected a number, got nan")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_type_name(value)} {value!r}")
        return value
    return value


def table_from_dict(cls: type, d: Any, key: str) -> Any:
    """Build one of this module's dataclasses from a TOML table, naming keys in errors."""
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ConfigError(f"{key}: expected a table ([{key}]), got {_type_name(d)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_unknown(d, fields, key)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in d.items():
        f, where = fields[name], f"{key}.{name}"
        v = _coerce(value, hints[name], where)
        meta = f.metadata
        if meta.get("choices") and v not in meta["choices"]:
            opts = ", ".join(repr(c) for c in meta["choices"])
            raise ConfigError(
                f"{where}: {v!r} is not one of {opts}{did_you_mean(str(v), meta['choices'])}"
            )
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and (v <= lo if meta.get("min_exclusive") else v < lo):
            op = ">" if meta.get("min_exclusive") else ">="
            raise ConfigError(f"{where}: must be {op} {lo:g}, got {v!r}")
        if hi is not None and v > hi:
            raise ConfigError(f"{where}: must be <= {hi:g}, got {v!r}")
        kwargs[name] = v
    return cls(**kwargs)


# -- the whole file -----------------------------------------------------------------------------


def _foreign(cls_path: str):
    """SourceConfig / DetectorConfig / MqttConfig live in their own modules."""
    module, name = cls_path.rsplit(".", 1)
    return getattr(__import__(module, fromlist=[name]), name)


_OWN_TABLES: dict[str, type] = {
    "device": DeviceConfig,
    "classifier": ClassifierConfig,
    "tracking": TrackingConfig,
    "pipeline": PipelineConfig,
    "output": OutputConfig,
    "privacy": PrivacyConfig,
    "logging": LoggingConfig,
}
_FOREIGN_TABLES: dict[str, str] = {
    "source": "emotion_edge.sources.SourceConfig",
    "detector": "emotion_edge.detector.DetectorConfig",
    "mqtt": "emotion_edge.mqtt.MqttConfig",
}
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
    "logging",
)


@dataclass
class AppConfig:
    device: DeviceConfig
    source: Any  # emotion_edge.sources.SourceConfig
    detector: Any  # emotion_edge.detector.DetectorConfig
    classifier: ClassifierConfig
    tracking: TrackingConfig
    pipeline: PipelineConfig
    output: OutputConfig
    mqtt: Any  # emotion_edge.mqtt.MqttConfig
    privacy: PrivacyConfig
    logging: LoggingConfig
    path: str = ""  # the file it came from ("" = defaults only)

    @property
    def device_id(self) -> str:
        return self.device.id

    def tables(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in TABLE_ORDER}


def read_toml(path: str | Path) -> dict:
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: cannot read ({exc})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML ({exc})") from None


def from_dict(raw: dict, path: str = "") -> AppConfig:
    """Validate a whole config (as parsed from TOML, CLI overrides applied)."""
    check_unknown(raw, TABLE_ORDER, "")
    tables: dict[str, Any] = {}
    for name in TABLE_ORDER:
        d = raw.get(name, {})
        if name in _OWN_TABLES:
            tables[name] = table_from_dict(_OWN_TABLES[name], d, name)
            continue
        cls = _foreign(_FOREIGN_TABLES[name])
        if not isinstance(d, dict):
            raise ConfigError(f"{name}: expected a table ([{name}]), got {_type_name(d)}")
        if dataclasses.is_dataclass(cls):
            check_unknown(d, [f.name for f in dataclasses.fields(cls)], name)
        tables[name] = cls.from_dict(dict(d), key=name)
    cfg = AppConfig(**tables, path=str(path))
    _cross_checks(cfg, raw)
    return cfg


def _cross_checks(cfg: AppConfig, raw: dict) -> None:
    if not cfg.device.id:
        cfg.device.id = default_device_id()
    elif not _DEVICE_ID_RE.match(cfg.device.id):
        raise ConfigError(
            f"device.id: {cfg.device.id!r} must be 1-64 of A-Z a-z 0-9 _ . - "
            "(it is part of MQTT topics)"
        )
    if not cfg.device.name:
        cfg.device.name = cfg.device.id
    p = cfg.pipeline
    if p.max_detect_every_n < p.detect_every_n:
        raise ConfigError(
            f"pipeline.max_detect_every_n: must be >= pipeline.detect_every_n "
            f"({p.detect_every_n}), got {p.max_detect_every_n}"
        )
    # [output] mode and [mqtt] enabled say the same thing; keep them consistent
    mode_given = "mode" in (raw.get("output") or {})
    mqtt_on = bool(getattr(cfg.mqtt, "enabled", False))
    if cfg.output.mode == "mqtt":
        cfg.mqtt.enabled = True
    elif mqtt_on and not mode_given:
        cfg.output.mode = "mqtt"
    elif mqtt_on:
        raise ConfigError(
            "output.mode: 'stdout' contradicts mqtt.enabled = true; "
            'set output.mode = "mqtt" or mqtt.enabled = false'
        )


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> AppConfig:
    """Read the TOML file (if any), apply `overrides` ({table: {key: value}}), validate."""
    raw = read_toml(path) if path else {}
    for table, values in (overrides or {}).items():
        current = raw.get(table)
        if current is None:
            current = raw[table] = {}
        if not isinstance(current, dict):
            raise ConfigError(f"{table}: expected a table ([{table}]), got {_type_name(current)}")
        current.update(values)
    return from_dict(raw, str(path or ""))


# -- rendering ----------------------------------------------------------------------------------


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, Path):
        return json.dumps(str(v), ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if v is None:
        return '""'
    raise TypeError(f"cannot render {type(v).__name__} as TOML")


def to_toml(cfg: AppConfig) -> str:
    lines = [f"# effective emotion-edge config{f' (from {cfg.path})' if cfg.path else ''}"]
    for name, table in cfg.tables().items():
        lines.append("")
        lines.append(f"[{name}]")
        for f in dataclasses.fields(table):
            if f.name.startswith("_"):
                continue
            lines.append(f"{f.name} = {_toml_value(getattr(table, f.name))}")
    return "\n".join(lines) + "\n"
