import json

import numpy as np
import pytest
from emotion_edge.classify.litert import make_interpreter
from emotion_edge.classify.model_meta import load_metadata
from emotion_edge.errors import ModelError


def test_tiny_model_roundtrip(tiny_int8_model):
    meta = load_metadata(tiny_int8_model)
    assert meta.labels[0] == "angry" and len(meta.labels) == 7
    interp = make_interpreter(str(tiny_int8_model))
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    assert tuple(inp["shape"][1:]) == (48, 48, 1)
    # pixels/255 in [0,1] quantizes to int8 = pixel - 128
    assert inp["quantization"][1] == -128
    assert abs(inp["quantization"][0] - 1 / 255) < 1e-6


def test_tampered_model_is_refused(tiny_int8_model, tmp_path):
    bad = tmp_path / "emotion_int8.tflite"
    data = bytearray(tiny_int8_model.read_bytes())
    data[-10] ^= 0xFF
    bad.write_bytes(bytes(data))
    (tmp_path / "emotion_int8.json").write_text(tiny_int8_model.with_suffix(".json").read_text())
    with pytest.raises(ModelError, match="does not match its metadata"):
        load_metadata(bad)


def test_missing_sidecar_and_corrupt_file(tmp_path):
    f = tmp_path / "m.tflite"
    f.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="metadata file"):
        load_metadata(f)
    with pytest.raises(ModelError, match="not a valid TFLite model"):
        make_interpreter(str(f))


def test_bad_labels_refused(tiny_int8_model, tmp_path):
    m = tmp_path / "x.tflite"
    m.write_bytes(tiny_int8_model.read_bytes())
    doc = json.loads(tiny_int8_model.with_suffix(".json").read_text())
    doc["labels"] = ["joy"]
    (tmp_path / "x.json").write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="bad labels"):
        load_metadata(m)
