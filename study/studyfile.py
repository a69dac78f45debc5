"""The study file (TOML or CSV): name, groups, clips, order, fixation, consent, ratings.

TOML (the full form, docs/study.md):

    [study]
    name = "film-clips"
    groups = ["control", "treatment"]
    order = "random"          # or "fixed": as listed
    seed = 2026               # random: one order per participant, the same for the same code
    fixation_s = 2.0          # a "+" on a blank screen before each clip (0: none)
    metadata = ["age", "handedness"]   # fields the researcher fills in on the start page
    consent = "I agree to take part ..."
    thanks = "Thank you!"

    [[clips]]
    name = "amusement-1"
    file = "clips/amusement-1.mp4"   # relative to the study file

    [[ratings]]                      # asked after each clip (optional)
    name = "valence"
    prompt = "How did the clip make you feel?"
    kind = "slider"                  # slider (min..max) or likert (labels are the options)
    min = 1
    max = 9
    labels = ["very unpleasant", "very pleasant"]

CSV (the short form): one setting per row, the first field says which:

    study,film-clips
    group,control
    order,random
    seed,2026
    fixation_s,2
    metadata,age
    consent,I agree to take part ...
    clip,amusement-1,clips/amusement-1.mp4
    rating,valence,How did the clip make you feel?,slider,1,9,very unpleasant,very pleasant

Problems are `StudyFileError` naming the file (and the line for CSV): exit code 2.
"""

from __future__ import annotations

import csv
import hashlib
import random
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from emotion_edge.errors import EmotionEdgeError

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

_NAME_RE = re.compile(r"^[^\x00-\x1f]{1,200}$")
_FIELD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
RATING_KINDS = ("slider", "likert")
ORDERS = ("fixed", "random")
# participant codes: no 0/O, 1/I/L, so a code read aloud or from paper is not mistaken
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"


class StudyFileError(EmotionEdgeError):
    """The study file cannot be used: one line naming the file and the problem."""


@dataclass(frozen=True)
class Clip:
    name: str
    path: Path


@dataclass(frozen=True)
class Rating:
    name: str
    prompt: str
    kind: str = "slider"
    min: int = 1
    max: int = 9
    labels: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "prompt": self.prompt,
            "kind": self.kind,
            "min": self.min,
            "max": self.max,
            "labels": list(self.labels),
        }


@dataclass(frozen=True)
class Study:
    name: str
    clips: tuple[Clip, ...]
    groups: tuple[str, ...] = ()
    order: str = "fixed"
    seed: int = 0
    fixation_s: float = 0.0
    metadata: tuple[str, ...] = ()
    consent: str = "I agree to take part in this study."
    thanks: str = "Thank you for taking part."
    ratings: tuple[Rating, ...] = ()
    path: Path = field(default=Path("."))

    def missing_clips(self) -> list[Clip]:
        return [c for c in self.clips if not c.path.is_file()]

    def consent_sha256(self) -> str:
        return hashlib.sha256(self.consent.encode("utf-8")).hexdigest()


def clip_order(study: Study, participant: str) -> list[Clip]:
    """The clips in the order this participant sees them: as listed, or shuffled by a
    generator seeded with the study's seed and the participant code (str seeds are hashed
    with SHA-512 by `random`, so the order is the same on every machine and Python run)."""
    clips = list(study.clips)
    if study.order == "random":
        random.Random(f"{study.seed}:{participant}").shuffle(clips)
    return clips


def new_participant_code(n: int = 6) -> str:
    """A random pseudonymous code, e.g. P-7KQ2MX (the mapping to names stays on paper)."""
    return "P-" + "".join(secrets.choice(CODE_ALPHABET) for _ in range(n))


def load_study(path: str | Path) -> Study:
    p = Path(path).expanduser()
    if not p.is_file():
        raise StudyFileError(f"{p}: no such study file")
    suffix = p.suffix.lower()
    if suffix == ".toml":
        raw = _read_toml(p)
    elif suffix == ".csv":
        raw = _read_csv(p)
    else:
        raise StudyFileError(f"{p}: a study file is .toml or .csv")
    return _build(raw, p)


def _read_toml(p: Path) -> dict:
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StudyFileError(f"{p}: not valid TOML ({exc})") from None
    study = data.get("study", {})
    if not isinstance(study, dict):
        raise StudyFileError(f"{p}: [study] must be a table")
    unknown = set(data) - {"study", "clips", "ratings"}
    if unknown:
        raise StudyFileError(f"{p}: unknown table(s) {', '.join(sorted(unknown))}")
    return {**study, "clips": data.get("clips", []), "ratings": data.get("ratings", [])}


def _read_csv(p: Path) -> dict:
    raw: dict = {"clips": [], "ratings": [], "groups": [], "metadata": []}
    scalar = {"study": "name", "order": "order", "seed": "seed", "fixation_s": "fixation_s"}
    text_keys = ("consent", "thanks")
    try:
        with open(p, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as exc:
        raise StudyFileError(f"{p}: not UTF-8 text ({exc})") from None
    for n, raw_rec in enumerate(rows, 1):
        rec = [x.strip() for x in raw_rec]
        if not rec or not "".join(rec) or rec[0].startswith("#"):
            continue
        key, vals = rec[0].lower(), rec[1:]
        where = f"{p}:{n}"
        if not vals or not vals[0]:
            raise StudyFileError(f"{where}: {key!r} needs a value")
        if key in scalar:
            raw[scalar[key]] = vals[0]
        elif key in text_keys:
            raw[key] = ",".join(raw_rec[1:]).strip()  # commas in a text need no quoting
        elif key == "group":
            raw["groups"].append(vals[0])
        elif key == "metadata":
            raw["metadata"].extend(v for v in vals if v)
        elif key == "clip":
            if len(vals) < 2:
                raise StudyFileError(f"{where}: clip,NAME,FILE")
            raw["clips"].append({"name": vals[0], "file": vals[1], "_where": where})
        elif key == "rating":
            if len(vals) < 2:
                raise StudyFileError(f"{where}: rating,NAME,PROMPT[,KIND,MIN,MAX,LABEL...]")
            r = {"name": vals[0], "prompt": vals[1], "_where": where}
            if len(vals) > 2 and vals[2]:
                r["kind"] = vals[2]
            if len(vals) > 4:
                r["min"], r["max"] = vals[3], vals[4]
            if len(vals) > 5:
                r["labels"] = [v for v in vals[5:] if v]
            raw["ratings"].append(r)
        else:
            raise StudyFileError(f"{where}: unknown setting {key!r}")
    return raw


def _int(v, what: str, where: Path | str) -> int:
    try:
        if isinstance(v, bool):
            raise ValueError
        return int(v)
    except (TypeError, ValueError):
        raise StudyFileError(f"{where}: {what} must be an integer, not {v!r}") from None


def _name(v, what: str, where) -> str:
    if not isinstance(v, str) or not _NAME_RE.match(v.strip()):
        raise StudyFileError(f"{where}: {what} must be 1-200 printable characters, not {v!r}")
    return v.strip()


def _build(raw: dict, p: Path) -> Study:
    known = {
        "name", "groups", "order", "seed", "fixation_s", "metadata", "consent", "thanks",
        "clips", "ratings",
    }  # fmt: skip
    unknown = set(raw) - known
    if unknown:
        raise StudyFileError(f"{p}: unknown setting(s) {', '.join(sorted(unknown))}")
    name = _name(raw.get("name", p.stem), "the study name", p)
    order = str(raw.get("order", "fixed")).lower()
    if order not in ORDERS:
        raise StudyFileError(f"{p}: order must be fixed or random, not {order!r}")
    seed = _int(raw.get("seed", 0), "seed", p)
    try:
        fixation = float(raw.get("fixation_s", 0.0))
    except (TypeError, ValueError):
        raise StudyFileError(f"{p}: fixation_s must be a number of seconds") from None
    if not 0 <= fixation <= 600:
        raise StudyFileError(f"{p}: fixation_s must be 0-600 seconds")
    groups = raw.get("groups", [])
    if not isinstance(groups, list):
        raise StudyFileError(f"{p}: groups must be a list")
    groups = tuple(_name(g, "a group", p) for g in groups)
    fields = raw.get("metadata", [])
    if not isinstance(fields, list):
        raise StudyFileError(f"{p}: metadata must be a list of field names")
    for f in fields:
        if not isinstance(f, str) or not _FIELD_RE.match(f):
            raise StudyFileError(f"{p}: metadata field {f!r}: letters, digits, _ (<= 64)")
    clips = []
    for c in raw.get("clips", []):
        where = c.get("_where", p) if isinstance(c, dict) else p
        if not isinstance(c, dict) or "name" not in c or "file" not in c:
            raise StudyFileError(f"{where}: every clip needs a name and a file")
        file = Path(str(c["file"])).expanduser()
        clips.append(Clip(_name(c["name"], "a clip name", where), (p.parent / file).resolve()))
    if not clips:
        raise StudyFileError(f"{p}: no clips")
    seen: set[str] = set()
    for c in clips:
        if c.name in seen:
            raise StudyFileError(f"{p}: clip name {c.name!r} twice (names label the markers)")
        seen.add(c.name)
    ratings = []
    for r in raw.get("ratings", []):
        where = r.get("_where", p) if isinstance(r, dict) else p
        if not isinstance(r, dict) or "name" not in r or "prompt" not in r:
            raise StudyFileError(f"{where}: every rating needs a name and a prompt")
        kind = str(r.get("kind", "slider")).lower()
        if kind not in RATING_KINDS:
            raise StudyFileError(f"{where}: rating kind must be slider or likert, not {kind!r}")
        lo, hi = _int(r.get("min", 1), "min", where), _int(r.get("max", 9), "max", where)
        labels = tuple(str(x) for x in r.get("labels", []))
        if kind == "slider" and hi <= lo:
            raise StudyFileError(f"{where}: a slider needs max > min")
        if kind == "likert" and len(labels) < 2:
            raise StudyFileError(f"{where}: a likert rating needs >= 2 labels (the options)")
        if not _FIELD_RE.match(str(r["name"])):
            raise StudyFileError(f"{where}: rating name {r['name']!r}: letters, digits, _")
        ratings.append(Rating(str(r["name"]), str(r["prompt"]), kind, lo, hi, labels))
    return Study(
        name=name,
        clips=tuple(clips),
        groups=groups,
        order=order,
        seed=seed,
        fixation_s=fixation,
        metadata=tuple(fields),
        consent=str(raw.get("consent", Study.consent)),
        thanks=str(raw.get("thanks", Study.thanks)),
        ratings=tuple(ratings),
        path=p,
    )
