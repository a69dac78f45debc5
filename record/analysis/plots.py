"""The group x stimulus figure: one small panel per stimulus, the groups' means per emotion
with their confidence intervals (a group of one participant: its point, no interval)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from emotion_edge_record.payloads import LABELS

MAX_PANELS = 24


def group_stimulus_plot(gs, path: Path) -> Path | None:
    """gs: stimulus_by_group (analysis.stats.GROUP_COLUMNS). None when it has no rows."""
    import matplotlib.pyplot as plt

    if gs is None or gs.empty:
        return None
    stimuli = sorted(gs["stimulus"].unique())[:MAX_PANELS]
    groups = sorted(gs["group"].unique())
    ncols = min(3, len(stimuli))
    nrows = math.ceil(len(stimuli) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.6 * ncols, 3.2 * nrows), squeeze=False, sharey=True
    )
    cmap = plt.get_cmap("tab10")
    x = np.arange(len(LABELS))
    width = 0.8 / max(1, len(groups))
    lo_all, hi_all = 0.0, 0.0
    for ax, stim in zip(axes.flat, stimuli, strict=False):
        d = gs[gs["stimulus"] == stim]
        for i, g in enumerate(groups):
            dg = d[d["group"] == g].set_index("emotion").reindex(LABELS)
            mean = dg["mean"].to_numpy(float)
            lo = dg["ci_low"].to_numpy(float)
            hi = dg["ci_high"].to_numpy(float)
            n = int(np.nanmax(dg["n"].to_numpy(float))) if dg["n"].notna().any() else 0
            err = np.vstack([mean - lo, hi - mean])  # NaN (n < 2): no bar drawn
            xs = x + (i - (len(groups) - 1) / 2) * width
            ax.errorbar(
                xs,
                mean,
                yerr=err,
                fmt="o",
                ms=4,
                capsize=3,
                color=cmap(i % 10),
                label=f"{g} (n={n})",
            )
            seen = np.concatenate([lo, hi, mean])
            seen = seen[np.isfinite(seen)]
            if len(seen):
                lo_all, hi_all = min(lo_all, seen.min()), max(hi_all, seen.max())
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title(stim, fontsize=10)
        ax.set_xticks(x, LABELS, rotation=45, ha="right", fontsize=8)
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(stimuli) :]:
        ax.set_visible(False)
    measure = str(gs["measure"].iloc[0])
    for row in axes:
        row[0].set_ylabel(measure if len(measure) < 40 else "mean", fontsize=8)
    pad = 0.05 * max(hi_all - lo_all, 0.1)
    axes[0][0].set_ylim(lo_all - pad, hi_all + pad)
    ci = str(gs["ci_method"].iloc[0])
    fig.suptitle(f"{measure} per group and stimulus; error bars: {ci} CI", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
