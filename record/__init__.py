"""emotion-edge's consumer side: record what devices publish, and analyse it.

Stages, one module each: `payloads` (what is accepted, checked into complete rows, markers
and schedules), `store` (SQLAlchemy Core tables with versioned migrations, SQLite or
PostgreSQL, idempotent writes), `ingest` (the batch writer that acknowledges only after
commit, MQTT 5 subscriber, JSON lines), `offline` (the daemon's pipeline in-process on a
video file or a folder of photos), `report` (CSV, PNG plots, one HTML page) and `cli`
(emotion-edge-record, emotion-edge-report, emotion-edge-mark). Never imports TensorFlow.
"""
