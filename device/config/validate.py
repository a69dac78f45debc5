"""Check raw TOML tables against the dataclasses in tables.py; collect every error at once.

Each message names its key (`pipeline.budget_ms: must be > 0, got -5`), unknown keys come with
a did-you-mean, and a whole file's problems are reported together, not only the first.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import socket
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from emotion_edge.config.tables import (
    TABLE_ORDER,
    TABLES,
    AppConfig,
    ClassifierConfig,
    DetectorConfig,
    MqttConfig,
    SourceConfig,
    WebConfig,
)


class Problems:
    """The error lines found so far; `add` keeps going so one pass finds them all."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, message: str) -> None:
        self.lines.append(message)

    def __bool__(self) -> bool:
        return bool(self.lines)


def did_you_mean(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def type_name(value: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "float",
        str: "string",
        list: "array",
        dict: "table",
    }.get(type(value), type(value).__name__)


def unknown_keys(d: dict, allowed: Iterable[str], key: str, problems: Problems) -> list[str]:
    allowed = list(allowed)
    bad = [k for k in d if k not in allowed]
    for k in bad:
        where = f"{key}.{k}" if key else k
        problems.add(
            f"{where}: unknown key{did_you_mean(k, allowed)}; known keys: {', '.join(allowed)}"
        )
    return bad


_EXPECTED = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
}


def _coerce(value: Any, typ: Any) -> tuple[bool, Any]:
    """(ok, value as typ); ints are accepted for floats, bools never for numbers."""
    if typ is bool:
        return isinstance(value, bool), value
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if typ is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and math.isnan(value):
            return False, value
        return ok, float(value) if ok else value
    if typ is str:
        return isinstance(value, str), value
    return True, value


def check_value(f: dataclasses.Field, typ: Any, value: Any, where: str) -> str | None:
    """The error for one key's value, or None when it is fine."""
    ok, v = _coerce(value, typ)
    if not ok:
        if typ is float and isinstance(value, float) and math.isnan(value):
            return f"{where}: expected a number, got nan"
        return f"{where}: expected {_EXPECTED[typ]}, got {type_name(value)} {value!r}"
    meta = f.metadata
    if meta.get("choices") and v not in meta["choices"]:
        opts = ", ".join(repr(c) for c in meta["choices"])
        return f"{where}: {v!r} is not one of {opts}{did_you_mean(str(v), meta['choices'])}"
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and (v <= lo if meta.get("min_exclusive") else v < lo):
        op = ">" if meta.get("min_exclusive") else ">="
        return f"{where}: must be {op} {lo:g}, got {v!r}"
    if hi is not None and v > hi:
        return f"{where}: must be <= {hi:g}, got {v!r}"
    return None


def build_table(cls: type, d: Any, key: str, problems: Problems) -> Any:
    """One table from its TOML dict; bad keys are reported and left at their defaults."""
    if d is None:
        d = {}
    if not isinstance(d, dict):
        problems.add(f"{key}: expected a table ([{key}]), got {type_name(d)}")
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown_keys(d, fields, key, problems)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in d.items():
        if name not in fields:
            continue
        error = check_value(fields[name], hints[name], value, f"{key}.{name}")
        if error:
            problems.add(error)
        else:
            kwargs[name] = _coerce(value, hints[name])[1]
    return cls(**kwargs)


# -- checks across keys of one table ------------------------------------------------------------

_TOPIC_PART_RE = re.compile(r"^[^#+\x00]+$")
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_source(cfg: SourceConfig, key: str, problems: Problems) -> None:
    if cfg.kind in ("video", "images") and not cfg.uri.strip():
        what = "path of a video file" if cfg.kind == "video" else "path of a folder of images"
        problems.add(f"{key}.uri: required for kind {cfg.kind!r} ({what})")
    if cfg.reopen_max_s < cfg.reopen_min_s:
        problems.add(
            f"{key}.reopen_max_s: must be >= reopen_min_s "
            f"({cfg.reopen_min_s:g}), got {cfg.reopen_max_s:g}"
        )


def check_detector(cfg: DetectorConfig, key: str, problems: Problems) -> None:
    if cfg.kind == "haar" and cfg.model_path:
        problems.add(
            f"{key}.model_path: only for BlazeFace kinds; haar uses OpenCV's bundled cascade"
        )


def check_classifier(cfg: ClassifierConfig, key: str, problems: Problems) -> None:
    if cfg.model == "single" and cfg.model_path and not cfg.single_model_path:
        # model_path is the two-net file: silently running the packaged single net instead of
        # the file the user named would be a surprise
        problems.add(
            f'{key}.model_path: not used with model = "single"; set single_model_path to '
            'run your one-net file, or model = "pair" to run this one'
        )


def check_mqtt(cfg: MqttConfig, key: str, problems: Problems) -> None:
    for name in ("topic_prefix", "ha_prefix"):
        v = getattr(cfg, name)
        if not v or not _TOPIC_PART_RE.match(v) or v.startswith("/") or v.endswith("/"):
            problems.add(
                f"{key}.{name}: {v!r} must be a non-empty topic without "
                "'#', '+' or a leading/trailing '/'"
            )
    if not cfg.host:
        problems.add(f"{key}.host: must not be empty")
    if cfg.require_subscriber and cfg.protocol != "5":
        # MQTT 3.1.1's PUBACK has no reason code: "no matching subscribers" cannot be seen
        problems.add(f'{key}.require_subscriber: needs protocol = "5", got {cfg.protocol!r}')
    if cfg.reconnect_max_s < cfg.reconnect_min_s:
        problems.add(
            f"{key}.reconnect_max_s: must be >= {key}.reconnect_min_s "
            f"({cfg.reconnect_min_s:g}), got {cfg.reconnect_max_s:g}"
        )
    files = ["password_file"]
    if cfg.tls:
        files += ["ca_file", "cert_file", "key_file"]
    for name in files:
        path = getattr(cfg, name)
        if path and not os.access(Path(path).expanduser(), os.R_OK):
            why = "does not exist" if not Path(path).expanduser().exists() else "unreadable"
            problems.add(f"{key}.{name}: {path} {why}")
    if cfg.tls and bool(cfg.cert_file) != bool(cfg.key_file):
        missing = "key_file" if cfg.cert_file else "cert_file"
        problems.add(f"{key}.{missing}: client TLS needs both cert_file and key_file")
    if not cfg.tls and (cfg.ca_file or cfg.cert_file or cfg.key_file):
        problems.add(f"{key}.tls: ca_file/cert_file/key_file are set but tls = false")


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1: the page is only reachable from this machine."""
    h = host.strip().strip("[]")
    if h.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_web(cfg: WebConfig, key: str, problems: Problems) -> None:
    """Faces leave the process only on the live view page: loopback unless allowed + token."""
    if not cfg.enabled:
        return
    if not cfg.host.strip():
        problems.add(f"{key}.host: must not be empty (127.0.0.1: this machine only)")
        return
    if not is_loopback(cfg.host) and not cfg.allow_remote:
        problems.add(
            f"{key}.host: {cfg.host!r} is not a loopback address and faces would leave the "
            f"device; set {key}.allow_remote = true and a token ({key}.token_env or "
            f'{key}.token_file), or keep host = "127.0.0.1"'
        )
        return
    if cfg.allow_remote:
        try:
            token = cfg.token()
        except Exception as exc:  # noqa: BLE001 - ConfigError with the key in its message
            problems.add(str(exc))
            return
        if not token:
            where = (
                f"${cfg.token_env} or {key}.token_file" if cfg.token_env else f"{key}.token_file"
            )
            problems.add(
                f"{key}.token_env: allow_remote = true needs an access token: set {where} "
                "(the token itself never goes in the config or on the command line)"
            )
        elif len(token) < 16:
            problems.add(f"{key}.token_env: the access token must be at least 16 characters")


TABLE_CHECKS: dict[str, typing.Callable[[Any, str, Problems], None]] = {
    "source": check_source,
    "detector": check_detector,
    "classifier": check_classifier,
    "mqtt": check_mqtt,
    "web": check_web,
}


# -- checks across tables -----------------------------------------------------------------------


def default_device_id() -> str:
    host = socket.gethostname().split(".")[0] or "device"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", host)[:64]


def check_app(cfg: AppConfig, raw: dict, problems: Problems) -> None:
    if not cfg.device.id:
        cfg.device.id = default_device_id()
    elif not DEVICE_ID_RE.match(cfg.device.id):
        problems.add(
            f"device.id: {cfg.device.id!r} must be 1-64 of A-Z a-z 0-9 _ . - "
            "(it is part of MQTT topics)"
        )
    if not cfg.device.name:
        cfg.device.name = cfg.device.id
    p = cfg.pipeline
    if p.max_detect_every_n < p.detect_every_n:
        problems.add(
            f"pipeline.max_detect_every_n: must be >= pipeline.detect_every_n "
            f"({p.detect_every_n}), got {p.max_detect_every_n}"
        )
    # [output] mode and [mqtt] enabled say the same thing; keep them consistent
    output_raw = raw.get("output")
    mode_given = isinstance(output_raw, dict) and "mode" in output_raw
    if cfg.output.mode == "mqtt":
        cfg.mqtt.enabled = True
    elif cfg.mqtt.enabled and not mode_given:
        cfg.output.mode = "mqtt"
    elif cfg.mqtt.enabled:
        problems.add(
            "output.mode: 'stdout' contradicts mqtt.enabled = true; "
            'set output.mode = "mqtt" or mqtt.enabled = false'
        )


def validate(raw: dict, path: str = "") -> tuple[AppConfig, Problems]:
    """Every table built and checked; the problems list is empty when the file is valid."""
    problems = Problems()
    unknown_keys(raw, TABLE_ORDER, "", problems)
    tables: dict[str, Any] = {}
    for name in TABLE_ORDER:
        before = len(problems.lines)
        tables[name] = build_table(TABLES[name], raw.get(name, {}), name, problems)
        # cross-key checks only on a table whose keys were all fine, or they repeat its errors
        if name in TABLE_CHECKS and len(problems.lines) == before:
            TABLE_CHECKS[name](tables[name], name, problems)
    cfg = AppConfig(**tables, path=str(path))
    check_app(cfg, raw, problems)
    return cfg, problems
