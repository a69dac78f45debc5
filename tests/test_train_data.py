import gzip

import numpy as np
import pytest
from emotion_edge.preprocess import FER2013_LABELS, resolve_labels
from emotion_edge_train.data import (
    DataError,
    ferplus_majority,
    find_duplicates,
    load_fer,
    make_targets,
)
from fer_fixtures import make_fer_files


@pytest.fixture()
def fer_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTION_EDGE_CACHE", str(tmp_path / "cache"))
    make_fer_files(tmp_path)
    return tmp_path


def test_load_csv_gz_with_ferplus_and_cache(fer_dir, tmp_path):
    ds = load_fer(fer_dir)
    assert ds.images.shape == (210, 48, 48) and ds.images.dtype == np.uint8
    assert len(ds.split("Training")) == 140 and len(ds.split("PrivateTest")) == 35
    assert ds.ferplus_votes.shape == (210, 10)
    assert list((tmp_path / "cache").glob("*.npz")), "parsed arrays are cached"
    again = load_fer(fer_dir)
    np.testing.assert_array_equal(again.images, ds.images)


def test_new_data_in_the_same_place_replaces_its_cache(fer_dir, tmp_path):
    first = load_fer(fer_dir)
    make_fer_files(fer_dir, seed=1)  # new content, same paths
    second = load_fer(fer_dir)
    assert not np.array_equal(second.images, first.images), "a stale cache was served"
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1, "one cache file per location"
    np.testing.assert_array_equal(load_fer(fer_dir).images, second.images)


def test_plain_csv_and_folder_layout(tmp_path, monkeypatch):
    cv2 = pytest.importorskip("cv2")
    monkeypatch.setenv("EMOTION_EDGE_CACHE", str(tmp_path / "cache"))
    csv_path, _ = make_fer_files(tmp_path, gz=False)
    ds = load_fer(csv_path, ferplus=None, cache=False)
    assert len(ds) == 210 and ds.ferplus_votes is None
    root = tmp_path / "kaggle"
    for part, use in (("train", "Training"), ("test", "PublicTest")):
        for name in FER2013_LABELS:
            (root / part / name).mkdir(parents=True)
        for i in ds.split(use)[:20]:
            cv2.imwrite(str(root / part / FER2013_LABELS[ds.labels[i]] / f"{i}.png"), ds.images[i])
    folder = load_fer(root, cache=False)
    assert len(folder.split("Training")) == 20
    assert len(folder.split("PublicTest")) + len(folder.split("PrivateTest")) == 20


def test_malformed_row_names_file_and_line(tmp_path):
    bad = tmp_path / "fer2013.csv"
    good_px = " ".join(["1"] * 2304)
    bad.write_text(f"emotion,pixels,Usage\n3,{good_px},Training\n9,{good_px},Training\n")
    with pytest.raises(DataError, match=r"fer2013.csv:3: emotion 9 outside"):
        load_fer(bad, ferplus=None, cache=False)
    bad.write_text(f"emotion,pixels,Usage\n3,{good_px} 5,Training\n")
    with pytest.raises(DataError, match=r":2: 2305 pixels"):
        load_fer(bad, ferplus=None, cache=False)
    gz = tmp_path / "broken.csv.gz"
    gz.write_bytes(gzip.compress(b"emotion,pixels,Usage\n")[:-8])
    with pytest.raises(DataError):
        load_fer(gz, ferplus=None, cache=False)


def test_ferplus_row_order_is_checked(fer_dir):
    plus = fer_dir / "fer2013new.csv"
    lines = plus.read_text().splitlines()
    lines[1] = lines[1].replace("Training", "PublicTest", 1)
    plus.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="disagrees with FER2013 row 0"):
        load_fer(fer_dir, cache=False)


def test_duplicates_and_targets(fer_dir):
    ds = load_fer(fer_dir, cache=False)
    report, train_in_test = find_duplicates(ds)
    assert report.train_in_test == 1 and train_in_test[0]
    assert report.public_in_train == 1
    rows = ds.split("Training")
    labels = resolve_labels(None)
    kept, y = make_targets(ds, rows, labels, "ferplus")
    assert 5 not in kept, "FER+ 'not a face' rows are dropped"
    np.testing.assert_allclose(y.sum(1), 1.0, rtol=1e-6)
    kept, y = make_targets(ds, rows, labels, "mixed", 0.5)
    assert len(kept) == len(rows)
    assert np.all(y.max(1) >= 0.5)
    five = resolve_labels(["neutral", "happy", "angry", "sad", "surprise"])
    assert five == ("angry", "happy", "sad", "surprise", "neutral")
    kept, y = make_targets(ds, rows, five, "fer2013")
    assert y.shape[1] == 5 and set(ds.labels[kept]) <= {0, 3, 4, 5, 6}
    with pytest.raises(ValueError, match="unknown emotion"):
        resolve_labels(["joy"])
    maj = ferplus_majority(ds.ferplus_votes)
    assert maj[5] == -1 and maj[1] == ds.labels[1]


def test_evaluate_scores_ferplus_on_both_test_splits(fer_dir):
    from emotion_edge_train.evaluate import evaluate

    ds = load_fer(fer_dir)
    majority = ferplus_majority(ds.ferplus_votes)
    public = set(ds.split("PublicTest").tolist())
    row_of = {img.tobytes(): i for i, img in enumerate(ds.images)}

    def predict(images):
        # answers the FER+ majority on PublicTest rows and a fixed wrong class elsewhere
        out = np.zeros((len(images), 7), np.float32)
        for j, img in enumerate(images):
            i = row_of[img.tobytes()]
            y = majority[i] if i in public and majority[i] >= 0 else (ds.labels[i] + 1) % 7
            out[j, y] = 1.0
        return out

    r = evaluate(predict, ds, FER2013_LABELS)
    assert r["ferplus_valid"]["accuracy"] == 1.0
    assert r["ferplus_valid"]["n"] + r["ferplus_valid"]["excluded_rows"] == len(public)
    assert r["ferplus_test"]["n"] + r["ferplus_test"]["excluded_rows"] == 35
    assert r["fer2013_PrivateTest"]["accuracy"] == 0.0
