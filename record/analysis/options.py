"""The analysis options (`emotion-edge-report --baseline/--ci/--test/--correction/--all-faces`),
without the statistics libraries: the command line checks them before importing pandas."""

from __future__ import annotations

import math
from dataclasses import dataclass

SMALL_N = 3  # fewer participants in a group: its interval and tests are flagged unreliable
# statsmodels' multipletests methods (fdr_bh works with SciPy alone)
CORRECTIONS = (
    "fdr_bh",
    "fdr_by",
    "holm",
    "holm-sidak",
    "hommel",
    "simes-hochberg",
    "bonferroni",
    "sidak",
)


@dataclass(frozen=True)
class Baseline:
    """What each participant's stimulus means are compared with.

    none: raw means; pre:S: the S seconds before each stimulus start (outside any stimulus);
    session: the participant's session time outside every stimulus; any other word: the
    participant's mean during that stimulus (e.g. a neutral clip)."""

    kind: str = "none"  # none | pre | session | stimulus
    seconds: float = 0.0
    stimulus: str = ""

    @classmethod
    def parse(cls, text: str | None) -> Baseline:
        t = (text or "none").strip()
        if t in ("", "none"):
            return cls()
        if t == "session":
            return cls("session")
        if t.startswith("pre:"):
            try:
                s = float(t[4:])
            except ValueError:
                s = math.nan
            if not math.isfinite(s) or s <= 0:
                raise ValueError(f"--baseline {text!r}: pre:S needs S > 0 seconds, e.g. pre:5")
            return cls("pre", seconds=s)
        if t.startswith("stimulus:"):
            t = t[len("stimulus:") :]
        return cls("stimulus", stimulus=t)

    @property
    def active(self) -> bool:
        return self.kind != "none"

    def describe(self) -> str:
        return {
            "none": "raw mean probability",
            "pre": f"mean minus the {self.seconds:g} s before each stimulus",
            "session": "mean minus the session outside stimuli",
            "stimulus": f"mean minus stimulus {self.stimulus!r}",
        }[self.kind]


@dataclass(frozen=True)
class StatsOptions:
    baseline: Baseline = Baseline()
    ci: str = "t"  # t | bootstrap
    test: str = "parametric"  # parametric (Welch / ANOVA) | rank (Mann-Whitney / Kruskal)
    correction: str = "fdr_bh"  # any statsmodels multipletests method
    confidence: float = 0.95
    all_faces: bool = False

    def __post_init__(self):
        if self.ci not in ("t", "bootstrap"):
            raise ValueError(f"--ci {self.ci!r}: t or bootstrap")
        if self.test not in ("parametric", "rank"):
            raise ValueError(f"--test {self.test!r}: parametric or rank")
        if self.correction not in CORRECTIONS:
            raise ValueError(f"--correction {self.correction!r}: one of {', '.join(CORRECTIONS)}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence {self.confidence}: between 0 and 1")
