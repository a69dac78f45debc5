"""Read the TOML file, apply CLI overrides, validate: the one way a config comes to be."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emotion_edge.config.tables import TABLES, AppConfig
from emotion_edge.config.validate import TABLE_CHECKS, Problems, build_table, type_name, validate
from emotion_edge.errors import ConfigError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 needs the tomli backport
    import tomli as tomllib  # type: ignore[no-redef]


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
    """Validate a whole config (as parsed from TOML, CLI overrides applied).

    Raises one ConfigError listing every problem (its `messages`, one per line)."""
    cfg, problems = validate(raw, path)
    if problems:
        raise ConfigError(*problems.lines)
    return cfg


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> AppConfig:
    """Read the TOML file (if any), apply `overrides` ({table: {key: value}}), validate."""
    raw = read_toml(path) if path else {}
    for table, values in (overrides or {}).items():
        current = raw.get(table)
        if current is None:
            current = raw[table] = {}
        if not isinstance(current, dict):
            raise ConfigError(f"{table}: expected a table ([{table}]), got {type_name(current)}")
        current.update(values)
    return from_dict(raw, str(path or ""))


def load_table(name: str, table: dict) -> Any:
    """One table (e.g. `load_table("mqtt", {...})`) validated alone, as `from_dict` would."""
    problems = Problems()
    cfg = build_table(TABLES[name], table, name, problems)
    if name in TABLE_CHECKS and not problems:
        TABLE_CHECKS[name](cfg, name, problems)
    if problems:
        raise ConfigError(*problems.lines)
    return cfg
