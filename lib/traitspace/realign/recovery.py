"""Recovery maths (pure: tables in, tables out; no model, no files).

A **shift** is a measure's distance from the base model: ``value(checkpoint) - value(base)``. Along a
re-alignment trail, ``before`` is the shift of the source checkpoint (re-alignment step 0) and
``after`` the shift at a later re-alignment step. The **recovery fraction** is

    recovery = (after - before) / (0 - before) = (before - after) / before

1 = back at the base model, 0 = not moved, between = partly back, > 1 = past the base model,
< 0 = moved further away. Over training seeds it is the recovery of the seed-mean shift,
``sum(before - after) / sum(before)``, with Fieller's interval across seeds
(:func:`traitspace.core.stats.fieller_ratio_interval`: the seeds are the unit of replication, and a
ratio of means is steadier than a mean of per-seed ratios whose denominators can be near 0; a
bootstrap over two or three seeds would give a falsely narrow interval). With one seed there is no
interval; with two (t on 1 degree of freedom) it is very wide or unbounded, so little is called.

A trait **returns to base** when the lower end of its interval is at least ``recovered_above``,
**stays shifted** when the upper end is below it, and is **undetermined** otherwise.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..core.stats import fieller_ratio_interval

RECOVERY_COLUMNS = ["before", "after", "recovery", "recovery_low", "recovery_high", "n_seeds", "status"]


def recovery_fraction(before: Sequence[float], after: Sequence[float]) -> tuple[float, float, float]:
    """(recovery of the seed-mean shift, interval low, high) from per-seed ``before`` and ``after``
    shifts; the interval is NaN with fewer than two seeds and infinite where unbounded, everything NaN
    when the shifts sum to 0."""
    before, after = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if before.shape != after.shape or before.ndim != 1 or before.size == 0:
        raise ValueError(f"recovery_fraction: need two equal 1-D arrays of per-seed shifts, got {before.shape} and {after.shape}")
    return fieller_ratio_interval(before - after, before)


def recovery_status(low: float, high: float, recovered_above: float) -> str:
    """"returns", "persists" or "undetermined" (module docstring)."""
    if np.isfinite(low) and low >= recovered_above:
        return "returns"
    if np.isfinite(high) and high < recovered_above:
        return "persists"
    return "undetermined"


def recovery_table(shifts: pd.DataFrame, group: Sequence[str], after_step: int | None = None, before_step: int = 0,
                   recovered_above: float = 0.5) -> pd.DataFrame:
    """Recovery fraction per ``group`` (e.g. pair, benign, trait) across seeds.

    ``shifts``: columns ``*group, seed, realign_step, shift``. ``after_step`` None: each group's last
    re-alignment step. Only seeds measured at both steps count. Returns ``*group, before_step,
    after_step`` and :data:`RECOVERY_COLUMNS` (before / after are seed means).
    """
    group = list(group)
    missing = [column for column in (*group, "seed", "realign_step", "shift") if column not in shifts.columns]
    if missing:
        raise KeyError(f"recovery_table: shifts lack columns {missing}")
    rows = []
    for key, rows_of_group in shifts.groupby(group, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        last = int(rows_of_group["realign_step"].max()) if after_step is None else after_step
        wide = rows_of_group.pivot_table(index="seed", columns="realign_step", values="shift", aggfunc="mean")
        if before_step not in wide.columns or last not in wide.columns:
            continue
        both = wide[[before_step, last]].dropna()
        if both.empty:
            continue
        recovery, low, high = recovery_fraction(both[before_step].to_numpy(), both[last].to_numpy())
        rows.append({**dict(zip(group, key)), "before_step": before_step, "after_step": last,
                     "before": float(both[before_step].mean()), "after": float(both[last].mean()),
                     "recovery": recovery, "recovery_low": low, "recovery_high": high, "n_seeds": len(both),
                     "status": recovery_status(low, high, recovered_above)})
    return pd.DataFrame(rows, columns=[*group, "before_step", "after_step", *RECOVERY_COLUMNS])


def steps_to_recovery(shifts: pd.DataFrame, group: Sequence[str], fraction: float = 0.5, before_step: int = 0
                      ) -> pd.DataFrame:
    """Per group and seed: the first re-alignment step at which the shift has recovered by at least
    ``fraction`` of its ``before`` value (NaN when it never does within the trail, or when there was no
    shift to recover). ``shifts`` as for :func:`recovery_table`."""
    group = list(group)
    rows = []
    for key, rows_of_run in shifts.groupby([*group, "seed"], sort=True):
        ordered = rows_of_run.groupby("realign_step")["shift"].mean().sort_index()
        before = ordered.get(before_step, np.nan)
        reached = np.nan
        if np.isfinite(before) and before != 0:
            recovered = (before - ordered[ordered.index > before_step]) / before
            hits = recovered[recovered >= fraction]
            reached = float(hits.index[0]) if len(hits) else np.nan
        rows.append({**dict(zip([*group, "seed"], key)), "before": before, "steps_to_recovery": reached,
                     "last_step": int(ordered.index.max())})
    return pd.DataFrame(rows, columns=[*group, "seed", "before", "steps_to_recovery", "last_step"])


def steps_summary(per_seed: pd.DataFrame, group: Sequence[str], level: float = 0.95) -> pd.DataFrame:
    """Mean steps to recovery over the seeds that recovered, a t interval across them (scipy), and how
    many seeds recovered of how many were measured."""
    from scipy import stats

    rows = []
    for key, rows_of_group in per_seed.groupby(list(group), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        reached = rows_of_group["steps_to_recovery"].dropna().to_numpy(dtype=float)
        mean = float(reached.mean()) if reached.size else float("nan")
        low = high = float("nan")
        if reached.size >= 2:
            low, high = stats.t.interval(level, reached.size - 1, loc=mean, scale=stats.sem(reached)) \
                if reached.std() > 0 else (mean, mean)
        rows.append({**dict(zip(group, key)), "steps": mean, "steps_low": float(low), "steps_high": float(high),
                     "n_recovered": int(reached.size), "n_seeds": len(rows_of_group)})
    return pd.DataFrame(rows, columns=[*group, "steps", "steps_low", "steps_high", "n_recovered", "n_seeds"])
