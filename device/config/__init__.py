"""The daemon's config: one TOML file, validated at start-up, importing nothing from the runtime.

`tables` declares every table as a dataclass, `validate` checks a parsed file and collects every
problem, `loader` reads the file and applies CLI overrides, `render` prints it back.
"""

from emotion_edge.config.loader import from_dict, load_config, load_table, read_toml
from emotion_edge.config.render import to_markdown, to_toml
from emotion_edge.config.tables import (
    DETECTOR_KINDS,
    SOURCE_KINDS,
    TABLE_ORDER,
    TABLES,
    AppConfig,
    ClassifierConfig,
    DetectorConfig,
    DeviceConfig,
    LoggingConfig,
    MqttConfig,
    OutputConfig,
    PipelineConfig,
    PrivacyConfig,
    SourceConfig,
    TrackingConfig,
)
from emotion_edge.config.validate import default_device_id

__all__ = [
    "DETECTOR_KINDS",
    "SOURCE_KINDS",
    "TABLE_ORDER",
    "TABLES",
    "AppConfig",
    "ClassifierConfig",
    "DetectorConfig",
    "DeviceConfig",
    "LoggingConfig",
    "MqttConfig",
    "OutputConfig",
    "PipelineConfig",
    "PrivacyConfig",
    "SourceConfig",
    "TrackingConfig",
    "default_device_id",
    "from_dict",
    "load_config",
    "load_table",
    "read_toml",
    "to_markdown",
    "to_toml",
]
