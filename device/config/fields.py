"""How a config key is declared: a dataclass field with its help text and bounds.

The metadata is what validation checks, what `--print-config` and the generated reference
(docs/configuration.md) show; one declaration per key, nothing repeated elsewhere.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any


def setting(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: tuple | None = None,
    min_exclusive: bool = False,
) -> Any:
    """One config key: its default, a one-line help text, and optional bounds or choices."""
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
