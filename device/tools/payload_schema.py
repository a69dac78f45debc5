"""The JSON Schemas of the daemon's payloads (package data in `schemas/`), and a validator.

Validation needs `jsonschema` (the `dev` extra); the daemon itself never validates at run time,
the tests do, on real payloads.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from emotion_edge.schemas import SCHEMA_DIR

KINDS = ("event", "state", "stats", "timeline", "marker")


def schema_path(kind: str) -> Path:
    if kind not in KINDS:
        raise ValueError(f"unknown payload kind {kind!r}; known: {', '.join(KINDS)}")
    return SCHEMA_DIR / f"{kind}.schema.json"


@cache
def load_schema(kind: str) -> dict:
    return json.loads(schema_path(kind).read_text(encoding="utf-8"))


def payload_kind(payload: dict) -> str:
    """'event', 'state', 'stats', 'timeline' or 'marker' from the payload's "schema" field."""
    name = str(payload.get("schema", ""))
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != "emotion-edge" or parts[1] not in KINDS:
        raise ValueError(f"not an emotion-edge payload (schema field {name!r})")
    return parts[1]


def validate(payload: dict, kind: str | None = None) -> None:
    """Raise jsonschema.ValidationError if the payload does not match its schema."""
    from jsonschema import Draft202012Validator

    schema = load_schema(kind or payload_kind(payload))
    Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(
        payload
    )
