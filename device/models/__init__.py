"""Model files shipped with the package: the int8 emotion model (+ its JSON sidecar) and the
BlazeFace face detectors. Package data only; nothing here runs."""

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
