"""Load FER2013 (Kaggle csv / csv.gz or train|test/<class>/ folders) and the FER+ votes.

Parsed arrays are cached as .npz in the user cache ($EMOTION_EDGE_CACHE or ~/.cache/emotion-edge),
so a second run starts in seconds.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from emotion_edge.preprocess import (
    FER2013_LABELS,
    FERPLUS_TO_FER2013,
    FERPLUS_VOTE_COLUMNS,
    INPUT_SIZE,
)

log = logging.getLogger(__name__)

USAGES = ("Training", "PublicTest", "PrivateTest")
N_PIXELS = INPUT_SIZE * INPUT_SIZE
CACHE_VERSION = 2


class DataError(ValueError):
    """A data file is missing or malformed; the message names the file and row."""


@dataclass
class FerDataset:
    """All FER2013 rows in file order."""

    images: np.ndarray  # uint8 [N, 48, 48]
    labels: np.ndarray  # int64 [N], FER2013 label index 0..6
    usage: np.ndarray  # int64 [N], index into USAGES
    ferplus_votes: np.ndarray | None  # float32 [N, 10] in FERPLUS_VOTE_COLUMNS order
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def split(self, name: str) -> np.ndarray:
        """Row indices of one split."""
        return np.flatnonzero(self.usage == USAGES.index(name))


# ---------------------------------------------------------------- csv parsing


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def parse_fer2013_csv(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse the official csv; a malformed row raises DataError naming the file and line."""
    images, labels, usage = [], [], []
    try:
        with _open_text(path) as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or [h.strip() for h in header[:3]] != ["emotion", "pixels", "Usage"]:
                raise DataError(f"{path}: expected header 'emotion,pixels,Usage', got {header}")
            for line_no, row in enumerate(reader, start=2):
                if len(row) != 3:
                    raise DataError(f"{path}:{line_no}: expected 3 columns, got {len(row)}")
                emotion, pixels, use = row
                try:
                    label = int(emotion)
                except ValueError:
                    raise DataError(
                        f"{path}:{line_no}: emotion {emotion!r} is not an int"
                    ) from None
                if not 0 <= label < len(FER2013_LABELS):
                    raise DataError(f"{path}:{line_no}: emotion {label} outside 0..6")
                if use not in USAGES:
                    raise DataError(f"{path}:{line_no}: Usage {use!r} not one of {USAGES}")
                try:
                    px = np.array(pixels.split(), dtype=np.int32)
                except ValueError:
                    raise DataError(f"{path}:{line_no}: pixels are not integers") from None
                if px.size != N_PIXELS:
                    raise DataError(f"{path}:{line_no}: {px.size} pixels, expected {N_PIXELS}")
                if px.min() < 0 or px.max() > 255:
                    raise DataError(f"{path}:{line_no}: pixel values outside 0..255")
                images.append(px.astype(np.uint8).reshape(INPUT_SIZE, INPUT_SIZE))
                labels.append(label)
                usage.append(USAGES.index(use))
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc
    if not images:
        raise DataError(f"{path}: no data rows")
    return np.stack(images), np.array(labels, np.int64), np.array(usage, np.int64)


def parse_ferplus_csv(path: Path, usage: np.ndarray) -> np.ndarray:
    """Parse fer2013new.csv (same row order as fer2013.csv) into votes [N, 10]."""
    votes = []
    with _open_text(path) as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        expected = ["Usage", "Image name", *FERPLUS_VOTE_COLUMNS]
        if header is None or [h.strip() for h in header] != expected:
            raise DataError(f"{path}: expected header {expected}, got {header}")
        for line_no, row in enumerate(reader, start=2):
            i = line_no - 2
            if len(row) != len(expected):
                raise DataError(f"{path}:{line_no}: expected {len(expected)} columns")
            if i >= len(usage):
                raise DataError(f"{path}:{line_no}: more rows than the FER2013 csv ({len(usage)})")
            if row[0] not in USAGES or USAGES.index(row[0]) != usage[i]:
                raise DataError(
                    f"{path}:{line_no}: Usage {row[0]!r} disagrees with FER2013 row {i} "
                    f"({USAGES[usage[i]]}); the files must be in the same order"
                )
            try:
                votes.append([float(v) for v in row[2:]])
            except ValueError:
                raise DataError(f"{path}:{line_no}: votes are not numbers") from None
    if len(votes) != len(usage):
        raise DataError(f"{path}: {len(votes)} rows, FER2013 has {len(usage)}")
    return np.array(votes, np.float32)


# ---------------------------------------------------------------- folder layout


def load_folder_layout(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kaggle 'msambare' layout: root/{train,test}/<class>/*.jpg|png.

    Its test folder merges PublicTest and PrivateTest; it is split deterministically in
    half (alternate files in sorted order) and that split is not the official one.
    """
    import cv2

    images, labels, usage = [], [], []
    for part, usages in (("train", ("Training",)), ("test", ("PublicTest", "PrivateTest"))):
        part_dir = root / part
        if not part_dir.is_dir():
            raise DataError(f"{root}: missing folder '{part}/' (expected train/ and test/)")
        k = 0
        for label, name in enumerate(FER2013_LABELS):
            class_dir = part_dir / name
            if not class_dir.is_dir():
                raise DataError(f"{class_dir}: missing class folder")
            for f in sorted(class_dir.iterdir()):
                if f.suffix.lower() not in (".jpg", ".jpeg", ".png"):
                    continue
                img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
                if img is None:
                    raise DataError(f"{f}: not a readable image")
                if img.shape != (INPUT_SIZE, INPUT_SIZE):
                    img = cv2.resize(img, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA)
                images.append(img)
                labels.append(label)
                usage.append(USAGES.index(usages[k % len(usages)]))
                k += 1
    if not images:
        raise DataError(f"{root}: no images found")
    log.warning(
        "%s: folder layout has no official PublicTest/PrivateTest split; "
        "its test/ folder was split in half by file order",
        root,
    )
    return np.stack(images), np.array(labels, np.int64), np.array(usage, np.int64)


# ---------------------------------------------------------------- cache + entry point


def _cache_path(source: Path, ferplus: Path | None) -> tuple[Path, str]:
    """One cache file per data location, and the key that says whether it is still fresh.

    Naming the file after the location only (not its size and time) means new data in the
    same place overwrites its cache instead of leaving another 85 MB file behind.
    """
    location = f"{source.resolve()}|{ferplus.resolve() if ferplus is not None else None}"
    stat = source.stat()
    key = f"{location}|{stat.st_size}|{stat.st_mtime_ns}|v{CACHE_VERSION}"
    if ferplus is not None:
        fs = ferplus.stat()
        key += f"|{fs.st_size}|{fs.st_mtime_ns}"
    digest = hashlib.sha1(location.encode()).hexdigest()[:12]
    name = f"{source.name.split('.')[0]}-{digest}.npz"
    # Never beside the source: data folders are often shared and read-only (root ignores that).
    cache_root = Path(
        os.environ.get("EMOTION_EDGE_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "emotion-edge"
    )
    return cache_root / name, key


def find_ferplus(source: Path) -> Path | None:
    candidate = (source.parent if source.is_file() else source) / "fer2013new.csv"
    return candidate if candidate.is_file() else None


def load_fer(
    source: str | Path, ferplus: str | Path | None = "auto", cache: bool = True
) -> FerDataset:
    """Load FER2013 from a csv/csv.gz file, a folder layout, or a data dir holding them.

    `ferplus`: path to fer2013new.csv, "auto" (look beside the source) or None.
    """
    src = Path(source)
    if src.is_dir():
        for name in ("fer2013.csv.gz", "fer2013.csv"):
            if (src / name).is_file():
                src = src / name
                break
    if not src.exists():
        raise DataError(f"{src}: no such file or folder (give fer2013.csv[.gz] or a folder)")
    fp = find_ferplus(src) if ferplus == "auto" else (Path(ferplus) if ferplus else None)
    if fp is not None and not fp.is_file():
        raise DataError(f"{fp}: FER+ votes file not found")

    cache_file, cache_key = _cache_path(src, fp) if cache else (None, "")
    if cache_file is not None and cache_file.is_file():
        with np.load(cache_file) as z:
            if "cache_key" in z.files and str(z["cache_key"]) == cache_key:
                votes = z["ferplus_votes"] if "ferplus_votes" in z.files else None
                log.info("loaded cached arrays %s", cache_file)
                return FerDataset(z["images"], z["labels"], z["usage"], votes, str(src))
        log.info("cache %s is stale (the data changed): parsing again", cache_file)

    if src.is_dir():
        images, labels, usage = load_folder_layout(src)
        if fp is not None:
            log.warning("FER+ votes are only used with the official csv (row order); ignored")
            fp = None
    else:
        images, labels, usage = parse_fer2013_csv(src)
    votes = parse_ferplus_csv(fp, usage) if fp is not None else None

    if cache_file is not None:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            arrays = {"images": images, "labels": labels, "usage": usage, "cache_key": cache_key}
            if votes is not None:
                arrays["ferplus_votes"] = votes
            # one temporary name per process: two runs parsing at once must not collide
            tmp = cache_file.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, **arrays)
            tmp.replace(cache_file)
            log.info("cached parsed arrays to %s", cache_file)
        except OSError as exc:
            log.warning("could not write cache %s: %s", cache_file, exc)
    return FerDataset(images, labels, usage, votes, str(src))


# ---------------------------------------------------------------- defects and targets


def image_hashes(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1)
    return np.array([hashlib.blake2b(row.tobytes(), digest_size=16).hexdigest() for row in flat])


# What fit --holdout-fold records in metrics.json; teachers trained under an earlier rule
# (plain row numbers, which split identical images across folds) are refused by soft-labels.
FOLD_RULE = "image-group"


def fold_keys(images: np.ndarray) -> np.ndarray:
    """Per row, the smallest row number holding the same image. A fold is `key % K`, so
    identical images always share a fold and an out-of-fold teacher never saw the face it
    labels under another row number."""
    first: dict[str, int] = {}
    return np.array([first.setdefault(h, i) for i, h in enumerate(image_hashes(images))])


@dataclass
class DuplicateReport:
    train_in_test: int  # Training rows whose exact image also occurs in Public/PrivateTest
    public_in_train: int
    private_in_train: int
    duplicate_groups: int  # groups of identical images over all rows
    duplicate_rows: int
    conflicting_groups: int  # groups whose rows carry different FER2013 labels
    flat_images: int  # images of a single value


def find_duplicates(ds: FerDataset) -> tuple[DuplicateReport, np.ndarray]:
    """Report exact-duplicate defects; also return the mask of Training rows seen in test."""
    hashes = image_hashes(ds.images)
    train = ds.usage == 0
    test_hashes = set(hashes[~train])
    train_hashes = set(hashes[train])
    train_in_test = train & np.isin(hashes, list(test_hashes))
    groups: dict[str, list[int]] = {}
    for i, h in enumerate(hashes):
        groups.setdefault(h, []).append(i)
    dup = [g for g in groups.values() if len(g) > 1]
    conflicting = sum(1 for g in dup if len(set(ds.labels[g].tolist())) > 1)
    flat = int(np.sum(np.ptp(ds.images.reshape(len(ds), -1), axis=1) == 0))
    report = DuplicateReport(
        train_in_test=int(train_in_test.sum()),
        public_in_train=int(np.sum((ds.usage == 1) & np.isin(hashes, list(train_hashes)))),
        private_in_train=int(np.sum((ds.usage == 2) & np.isin(hashes, list(train_hashes)))),
        duplicate_groups=len(dup),
        duplicate_rows=sum(len(g) for g in dup),
        conflicting_groups=conflicting,
        flat_images=flat,
    )
    return report, train_in_test


def ferplus_valid(votes: np.ndarray) -> np.ndarray:
    """Rows usable under FER+: not 'not a face' and with some emotion vote."""
    nf = votes[:, FERPLUS_VOTE_COLUMNS.index("NF")]
    emo = votes[:, : FERPLUS_VOTE_COLUMNS.index("unknown")].sum(axis=1)
    return (nf < votes.max(axis=1)) | ((nf == 0) & (emo > 0))


def ferplus_soft(votes: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
    """FER+ votes as a distribution over `labels` (contempt, unknown, NF dropped).

    Rows with no vote for any of `labels` come back all zero.
    """
    out = np.zeros((len(votes), len(labels)), np.float32)
    for col, name in enumerate(FERPLUS_VOTE_COLUMNS):
        target = FERPLUS_TO_FER2013.get(name)
        if target in labels:
            out[:, labels.index(target)] = votes[:, col]
    total = out.sum(axis=1, keepdims=True)
    return np.divide(out, total, out=np.zeros_like(out), where=total > 0)


def ferplus_majority(votes: np.ndarray) -> np.ndarray:
    """FER+ majority label as a FER2013 label index, or -1 where the majority is
    contempt/unknown/NF (those rows are excluded from FER+ accuracy)."""
    emo_cols = FERPLUS_VOTE_COLUMNS[: FERPLUS_VOTE_COLUMNS.index("unknown")]  # 8 emotions
    idx = votes[:, : len(emo_cols)].argmax(axis=1)
    out = np.full(len(votes), -1, np.int64)
    for col, name in enumerate(emo_cols):
        target = FERPLUS_TO_FER2013.get(name)
        if target is not None:
            out[idx == col] = FER2013_LABELS.index(target)
    top = votes.max(axis=1)
    out[votes[:, : len(emo_cols)].max(axis=1) < top] = -1  # unknown or NF has most votes
    return out


def make_targets(
    ds: FerDataset,
    rows: np.ndarray,
    labels: tuple[str, ...],
    mode: str,
    fer2013_weight: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Targets for `rows` over `labels`; returns (kept_rows, targets [n, len(labels)]).

    mode: "fer2013" one-hot; "ferplus" vote distribution (NF and no-vote rows dropped);
    "mixed" fer2013_weight * one-hot + (1 - fer2013_weight) * FER+ votes.
    Rows whose label is outside `labels` are dropped.
    """
    if mode not in ("fer2013", "ferplus", "mixed"):
        raise ValueError(f"unknown label mode {mode!r}")
    if mode != "fer2013" and ds.ferplus_votes is None:
        raise DataError(f"label mode {mode!r} needs the FER+ votes file (fer2013new.csv)")
    index = {FER2013_LABELS.index(n): i for i, n in enumerate(labels)}
    hard = np.array([index.get(int(lab), -1) for lab in ds.labels[rows]])
    onehot = np.zeros((len(rows), len(labels)), np.float32)
    onehot[hard >= 0, hard[hard >= 0]] = 1.0
    if mode == "fer2013":
        keep = hard >= 0
        return rows[keep], onehot[keep]
    votes = ds.ferplus_votes[rows]
    soft = ferplus_soft(votes, labels)
    has_votes = (soft.sum(axis=1) > 0) & ferplus_valid(votes)
    if mode == "ferplus":
        keep = has_votes
        return rows[keep], soft[keep]
    mixed = np.where(
        has_votes[:, None], fer2013_weight * onehot + (1 - fer2013_weight) * soft, onehot
    )
    keep = hard >= 0
    return rows[keep], mixed[keep]
