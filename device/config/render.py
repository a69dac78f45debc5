"""The effective config as TOML (`--print-config`) and as a Markdown reference (docs)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from emotion_edge.config.tables import TABLES, AppConfig


def toml_value(v: Any) -> str:
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
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
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
            lines.append(f"{f.name} = {toml_value(getattr(table, f.name))}")
    return "\n".join(lines) + "\n"


def _bounds(meta: Any) -> str:
    parts = []
    if meta.get("choices"):
        parts.append("one of " + ", ".join(f"`{c}`" for c in meta["choices"]))
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None:
        parts.append(f"{'>' if meta.get('min_exclusive') else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"<= {hi:g}")
    return "; ".join(parts)


def to_markdown() -> str:
    """Every table and key with default, bounds and help: docs/configuration.md's reference."""
    out = []
    for name, cls in TABLES.items():
        out += [f"### `[{name}]`", "", "| key | default | allowed | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            default = toml_value(f.default).replace("|", "\\|")
            help_text = str(f.metadata.get("help", "")).replace("|", "\\|")
            out.append(f"| `{f.name}` | `{default}` | {_bounds(f.metadata)} | {help_text} |")
        out.append("")
    return "\n".join(out)
