"""Config file validation: errors name the key; the example file documents every key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import emotion_edge
import pytest
from emotion_edge import config as C
from emotion_edge.cli import build_parser, main, overrides_from_args, parse_source_spec
from emotion_edge.errors import ConfigError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib

EXAMPLE = Path(emotion_edge.__file__).resolve().parent / "config.example.toml"


def _load_text(tmp_path, text: str, overrides=None):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return C.load_config(p, overrides)


def test_defaults_without_file():
    cfg = C.load_config(None)
    assert cfg.source.kind == "demo"
    assert cfg.output.mode == "stdout" and not cfg.mqtt.enabled
    assert cfg.pipeline.budget_ms == 100.0
    assert cfg.device.id and cfg.device.name == cfg.device.id


def test_example_config_loads_and_documents_every_key():
    cfg = C.load_config(EXAMPLE)
    raw = tomllib.loads(EXAMPLE.read_text())
    assert list(raw) == list(C.TABLE_ORDER)
    for name, table in cfg.tables().items():
        keys = [f.name for f in dataclasses.fields(table) if not f.name.startswith("_")]
        assert sorted(raw[name]) == sorted(keys), f"[{name}] in the example file"
        # the example shows the defaults (device.id/name are filled in at load)
        default = type(table)() if name != "device" else C.DeviceConfig()
        for k in keys:
            if name == "device":
                continue
            assert raw[name][k] == getattr(default, k), f"{name}.{k} example != default"


def test_print_config_round_trips(tmp_path, capsys):
    rc = main(
        [
            "--config",
            str(EXAMPLE),
            "--source",
            "video:/tmp/x.mp4",
            "--budget-ms",
            "80",
            "--mqtt-host",
            "broker.local",
            "--device-id",
            "kiosk-1",
            "--print-config",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    again = _load_text(tmp_path, text.replace("# effective", "# round trip"))
    assert again.source.kind == "video" and again.source.uri == "/tmp/x.mp4"
    assert again.pipeline.budget_ms == 80.0
    assert again.output.mode == "mqtt" and again.mqtt.enabled and again.mqtt.host == "broker.local"
    assert again.device.id == "kiosk-1"
    assert C.to_toml(again).splitlines()[1:] == text.splitlines()[1:]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[pipeline]\nbudget_ms = -5\n", r"pipeline\.budget_ms: must be > 0, got -5"),
        ("[pipeline]\nbudget_ms = 'fast'\n", r"pipeline\.budget_ms: expected a number"),
        (
            "[pipeline]\nbudget_m = 50\n",
            r"pipeline\.budget_m: unknown key \(did you mean "
            r"'budget_ms'\?\)",
        ),
        ("[pipline]\nbudget_ms = 50\n", r"pipline: unknown key \(did you mean 'pipeline'\?\)"),
        ("[tracking]\nmin_hits = 1.5\n", r"tracking\.min_hits: expected an integer"),
        ("[tracking]\ntop_k = 9\n", r"tracking\.top_k: must be <= 7"),
        (
            "[privacy]\nallow_snapshots = 'yes'\n",
            r"privacy\.allow_snapshots: expected true or "
            r"false",
        ),
        (
            "[output]\nmode = 'mqt'\n",
            r"output\.mode: 'mqt' is not one of 'stdout', 'mqtt' "
            r"\(did you mean 'mqtt'\?\)",
        ),
        ("[device]\nid = 'kiosk/1'\n", r"device\.id: 'kiosk/1' must be"),
        ("pipeline = 3\n", r"pipeline: expected a table"),
        (
            "[pipeline]\ndetect_every_n = 4\nmax_detect_every_n = 2\n",
            r"pipeline\.max_detect_every_n: must be >= pipeline\.detect_every_n",
        ),
        (
            "[output]\nmode = 'stdout'\n[mqtt]\nenabled = true\n",
            r"output\.mode: 'stdout' "
            r"contradicts mqtt\.enabled",
        ),
        ("[source]\nkind = 'webcam'\n", r"source\.kind"),
        ("[source]\nknd = 'video'\n", r"source\.knd: unknown key \(did you mean 'kind'\?\)"),
        ("[detector]\nkind = 'yolo'\n", r"detector\.kind"),
        ("[mqtt]\nport = 70000\n", r"mqtt\.port"),
        ("[mqtt]\nprot = 1883\n", r"mqtt\.prot: unknown key \(did you mean 'port'\?\)"),
        ("[pipeline\nbudget_ms = 5\n", r"invalid TOML"),
    ],
)
def test_errors_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        _load_text(tmp_path, text)


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        C.load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="cannot read|invalid TOML"):
        C.load_config(bad)


def test_cli_override_errors_are_named_by_key(tmp_path):
    with pytest.raises(ConfigError, match=r"pipeline\.budget_ms: must be > 0"):
        C.load_config(None, overrides_from_args(build_parser().parse_args(["--budget-ms", "0"])))


def test_mqtt_enabled_alone_selects_mqtt_output(tmp_path):
    cfg = _load_text(tmp_path, "[mqtt]\nenabled = true\n")
    assert cfg.output.mode == "mqtt"
    cfg = _load_text(tmp_path, "[output]\nmode = 'mqtt'\n")
    assert cfg.mqtt.enabled
    # --dry-run wins over a config that enables MQTT
    args = build_parser().parse_args(["--dry-run"])
    cfg = _load_text(
        tmp_path, "[mqtt]\nenabled = true\n[output]\nmode = 'mqtt'\n", overrides_from_args(args)
    )
    assert cfg.output.mode == "stdout" and not cfg.mqtt.enabled


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("demo", ("demo", None)),
        ("picamera2", ("picamera2", None)),
        ("opencv:0", ("opencv", "0")),
        ("video:clip.mp4", ("video", "clip.mp4")),
        ("rtsp://cam.local:554/stream", ("opencv", "rtsp://cam.local:554/stream")),
        ("2", ("opencv", "2")),
        ("/dev/video0", ("opencv", "/dev/video0")),
        ("missing_clip.mp4", ("video", "missing_clip.mp4")),
    ],
)
def test_parse_source_spec(spec, expected):
    assert parse_source_spec(spec) == expected


def test_parse_source_spec_paths_and_unknown(tmp_path):
    assert parse_source_spec(str(tmp_path)) == ("images", str(tmp_path))
    with pytest.raises(ConfigError, match="--source 'webcam': unknown source"):
        parse_source_spec("webcam")
    with pytest.raises(ConfigError, match="unknown source"):
        parse_source_spec("cam:0")
