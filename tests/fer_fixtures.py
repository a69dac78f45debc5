"""Small generated FER2013-format files for unit tests (the real data is never needed here)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from emotion_edge.preprocess import FERPLUS_VOTE_COLUMNS

USAGE_PLAN = [("Training", 140), ("PublicTest", 35), ("PrivateTest", 35)]


def make_fer_files(folder: Path, gz: bool = True, seed: int = 0) -> tuple[Path, Path]:
    """Write fer2013.csv[.gz] + fer2013new.csv; training row 0 duplicates PublicTest row 0,
    and one FER+ row is 'not a face'."""
    rng = np.random.default_rng(seed)
    rows, votes = [], []
    for usage, n in USAGE_PLAN:
        for i in range(n):
            label = i % 7
            img = rng.integers(0, 256, 48 * 48)
            img[: 48 * 8] = label * 36  # a weak class cue in the top rows
            rows.append((label, img, usage))
            v = np.zeros(len(FERPLUS_VOTE_COLUMNS), int)
            fer_to_col = {0: 4, 1: 5, 2: 6, 3: 1, 4: 3, 5: 2, 6: 0}
            v[fer_to_col[label]] = 7
            v[0] += 3
            votes.append(v)
    pub0 = next(i for i, r in enumerate(rows) if r[2] == "PublicTest")
    rows[0] = (rows[pub0][0], rows[pub0][1].copy(), "Training")
    votes[5] = np.zeros(len(FERPLUS_VOTE_COLUMNS), int)
    votes[5][-1] = 10  # NF
    lines = ["emotion,pixels,Usage"] + [
        f"{lab},{' '.join(map(str, img))},{use}" for lab, img, use in rows
    ]
    text = "\n".join(lines) + "\n"
    csv_path = folder / ("fer2013.csv.gz" if gz else "fer2013.csv")
    if gz:
        with gzip.open(csv_path, "wt") as fh:
            fh.write(text)
    else:
        csv_path.write_text(text)
    header = "Usage,Image name," + ",".join(FERPLUS_VOTE_COLUMNS)
    plus = [header] + [
        f"{use},{'' if v[-1] == 10 else f'fer{i:07d}.png'},{','.join(map(str, v))}"
        for i, ((_, _, use), v) in enumerate(zip(rows, votes, strict=True))
    ]
    plus_path = folder / "fer2013new.csv"
    plus_path.write_text("\n".join(plus) + "\n")
    return csv_path, plus_path
