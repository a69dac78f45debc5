"""Model files shipped with the package: the int8 emotion model (+ its JSON sidecar) and the
BlazeFace face detectors. Package data only; nothing here runs."""

import hashlib
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks: how every model file is checked."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
