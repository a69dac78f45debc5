"""JSON Schemas of the daemon's payloads (event, state, stats, ...). Package data only."""

from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parent
