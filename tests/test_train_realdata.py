"""The training pipeline on the real FER2013 + FER+ files in ../shared/data (quick mode)."""

import json

import pytest

pytest.importorskip("tensorflow", reason="training needs the [train] extra")

from emotion_edge_train import cli as train_cli  # noqa: E402
from emotion_edge_train.data import find_duplicates, load_fer  # noqa: E402


@pytest.mark.realdata
def test_real_data_defects_match_the_data_readme(data_dir):
    ds = load_fer(data_dir)
    assert len(ds) == 35887
    assert [len(ds.split(s)) for s in ("Training", "PublicTest", "PrivateTest")] == [
        28709,
        3589,
        3589,
    ]
    report, _ = find_duplicates(ds)
    # figures stated in ../shared/data/README.md
    assert (report.public_in_train, report.private_in_train) == (280, 288)
    assert (report.duplicate_groups, report.duplicate_rows) == (1516, 3369)
    assert report.conflicting_groups == 57 and report.flat_images == 12


@pytest.mark.realdata
def test_quick_training_on_real_data(data_dir, tmp_path):
    out = tmp_path / "run"
    assert train_cli.main(["fit", "--quick", "--data", str(data_dir), "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["fer2013_PrivateTest"]["n"] == 3589
    assert m["ferplus_test"]["n"] > 3000 and m["ferplus_valid"]["n"] > 3000
