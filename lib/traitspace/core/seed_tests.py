"""Tests of an effect of the training data, with training seeds as the unit of replication.

Each (condition, seed) is one fine-tuning run. Any two runs differ (two seeds of the same data
included), so "the EM run differs from its control" is no evidence of an effect of the EM data;
resampling prompts only measures how precisely two fixed runs were compared. The question a
reviewer asks is whether the EM-minus-control difference exceeds what swapping one seed for another
of the *same* data produces: the **seed-pair null**, the spread of EM-minus-EM and
control-minus-control differences between seeds.

For one trait and step, with ``n_em`` EM seeds and ``n_control`` control seeds, that is the
pooled two-sample t-test: the pooled within-condition variance ``s2`` estimates the seed-to-seed
variance, so a same-data seed pair differs with variance ``2 * s2`` (the mean squared seed-pair
difference equals ``2 * s2`` exactly), and the difference of the two condition means has standard
error ``sqrt(s2 * (1/n_em + 1/n_control))`` on ``n_em + n_control - 2`` degrees of freedom.
Pairing by seed (same seed = same LoRA initialisation and data order) would cancel a seed effect
shared by the two conditions; the unpaired null keeps it, which is conservative. scipy's
``ttest_ind`` does the arithmetic; Benjamini-Hochberg runs over traits.

With one seed per condition there is no seed-to-seed variance to compare against: the functions
return NaN p-values and no trait is called significant, and the notebooks say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from .stats import benjamini_hochberg

SEED_TEST_COLUMNS = ["trait", "step", "differential", "ci_low", "ci_high", "seed_pair_sd", "t", "p_value",
                     "q_value", "significant", "n_em_seeds", "n_control_seeds"]


def can_test(n_em: int, n_control: int) -> bool:
    """A seed-level test needs a seed-to-seed variance: two seeds in at least one condition."""
    return n_em >= 1 and n_control >= 1 and n_em + n_control >= 3


def seed_differential_test(em: np.ndarray, control: np.ndarray, alpha: float = 0.05, level: float = 0.95
                           ) -> dict[str, np.ndarray]:
    """EM-minus-control difference of per-seed values against the seed-pair null, per column.

    em: (n_em_seeds, n_traits), control: (n_control_seeds, n_traits): one number per run (its mean
    drift over prompts, say). Returns arrays over traits: differential (mean EM - mean control),
    ci_low / ci_high (t interval across seeds), seed_pair_sd (the sd of a same-data seed-pair
    difference, sqrt(2 s2)), t, p_value, q_value (BH over the columns), significant.
    """
    em = np.atleast_2d(np.asarray(em, dtype=float))
    control = np.atleast_2d(np.asarray(control, dtype=float))
    if em.shape[1] != control.shape[1]:
        raise ValueError(f"seed_differential_test: {em.shape[1]} EM columns vs {control.shape[1]} control columns")
    n_em, n_control = em.shape[0], control.shape[0]
    differential = em.mean(axis=0) - control.mean(axis=0)
    n_columns = em.shape[1]
    if not can_test(n_em, n_control):
        nan = np.full(n_columns, np.nan)
        return {"differential": differential, "ci_low": nan, "ci_high": nan, "seed_pair_sd": nan, "t": nan,
                "p_value": nan, "q_value": nan, "significant": np.zeros(n_columns, dtype=bool)}
    dof = n_em + n_control - 2
    pooled = (((em - em.mean(axis=0)) ** 2).sum(axis=0) + ((control - control.mean(axis=0)) ** 2).sum(axis=0)) / dof
    standard_error = np.sqrt(pooled * (1 / n_em + 1 / n_control))
    with np.errstate(divide="ignore", invalid="ignore"):
        result = scipy_stats.ttest_ind(em, control, axis=0, equal_var=True)
    t_values, p_values = np.asarray(result.statistic, dtype=float), np.asarray(result.pvalue, dtype=float)
    # A column with no spread at all (identical runs) has no test: p stays NaN, never "significant".
    testable = np.isfinite(p_values)
    rejected = np.zeros(n_columns, dtype=bool)
    q_values = np.full(n_columns, np.nan)
    if testable.any():
        rejected[testable], q_values[testable] = benjamini_hochberg(p_values[testable], alpha=alpha)
    half_width = scipy_stats.t.ppf(0.5 + level / 2, dof) * standard_error
    return {"differential": differential, "ci_low": differential - half_width, "ci_high": differential + half_width,
            "seed_pair_sd": np.sqrt(2 * pooled), "t": t_values, "p_value": p_values, "q_value": q_values,
            "significant": rejected}


def per_seed_matrix(table: pd.DataFrame, condition: str, value: str, column: str = "trait") -> pd.DataFrame:
    """Rows of one condition as a seed x ``column`` matrix of ``value`` (one number per run)."""
    rows = table[table["condition"] == condition]
    if rows.duplicated(["seed", column]).any():
        raise ValueError(f"per_seed_matrix: several {value!r} values per (seed, {column}) for {condition!r}; "
                         "pass one step's per-run means")
    return rows.pivot(index="seed", columns=column, values=value).sort_index()


def seed_level_shifts(mean_drift: pd.DataFrame, em: str, control: str, step: int | None = None,
                      alpha: float = 0.05) -> pd.DataFrame:
    """Every trait's EM-minus-control drift at ``step`` (default: the last step both share) tested
    across seeds against the seed-pair null, BH over traits, sorted by |differential|.

    ``mean_drift``: columns condition, seed, step, trait, drift (one mean per run, step and trait).
    """
    if step is None:
        step = int(max(set(mean_drift.loc[mean_drift["condition"] == em, "step"])
                       & set(mean_drift.loc[mean_drift["condition"] == control, "step"])))
    at_step = mean_drift[mean_drift["step"] == step]
    em_matrix = per_seed_matrix(at_step, em, "drift")
    control_matrix = per_seed_matrix(at_step, control, "drift").reindex(columns=em_matrix.columns)
    tested = seed_differential_test(em_matrix.to_numpy(), control_matrix.to_numpy(), alpha=alpha)
    table = pd.DataFrame({"trait": em_matrix.columns, "step": step, **tested,
                          "n_em_seeds": len(em_matrix), "n_control_seeds": len(control_matrix)})
    table["direction"] = np.where(table["differential"] >= 0, "increase", "decrease")
    table = table.reindex(table["differential"].abs().sort_values(ascending=False, kind="stable").index)
    return table.reset_index(drop=True)[[*SEED_TEST_COLUMNS, "direction"]]


def seed_level_shifts_by_step(mean_drift: pd.DataFrame, em: str, control: str, alpha: float = 0.05) -> pd.DataFrame:
    """:func:`seed_level_shifts` at every step > 0 both conditions have (one table, a step column)."""
    steps = sorted(set(mean_drift.loc[mean_drift["condition"] == em, "step"])
                   & set(mean_drift.loc[mean_drift["condition"] == control, "step"]) - {0})
    return pd.concat([seed_level_shifts(mean_drift, em, control, step, alpha) for step in steps], ignore_index=True)


def seed_pair_differences(per_seed: pd.DataFrame) -> pd.DataFrame:
    """All same-condition differences between two seeds (the seed-pair null's draws), one row per
    pair and column: seed_a, seed_b, column, difference."""
    rows = []
    for seed_a, seed_b in combinations(per_seed.index, 2):
        difference = per_seed.loc[seed_a] - per_seed.loc[seed_b]
        rows.extend({"seed_a": seed_a, "seed_b": seed_b, "column": name, "difference": value}
                    for name, value in difference.items())
    return pd.DataFrame(rows, columns=["seed_a", "seed_b", "column", "difference"])


@dataclass
class ActivationShift:
    """The EM-minus-control shift in activation space at one layer and step, and its reading in the
    trait basis (least squares), averaged over seeds."""

    layer: int
    step: int
    norm: float                   # ||mean over seeds of (mean activation EM - mean activation control)||
    seed_pair_norm: float         # mean ||same-condition difference between two seeds|| (the null's scale)
    explained_share: float        # ||least-squares fit in the trait basis||^2 / ||shift||^2
    chance_share: float           # the same share for a random direction: rank of the basis / hidden size
    coefficients: pd.Series       # trait -> least-squares coefficient
    n_em_seeds: int
    n_control_seeds: int


def activation_shift(
    mean_activations: Mapping[tuple[str, int, int], Mapping[int, np.ndarray]],
    em: str,
    control: str,
    step: int,
    layer: int,
    basis: Mapping[str, np.ndarray],
    seeds: Sequence[int] | None = None,
) -> ActivationShift:
    """The difference of mean activations (EM minus control, each averaged over its seeds) at
    ``layer`` and ``step``, and how much of it the trait directions in ``basis`` (trait -> unit vector
    at that layer) explain by least squares.

    The 247 directions overlap, so per-trait projections double count; the least-squares reading
    splits the shift between them once, and the explained share says how much of the shift lies in
    their span at all (compared with ``chance_share``, what a random direction would show).
    ``mean_activations``: (condition, seed, step) -> {layer: mean activation over prompts}.
    """
    def runs(condition: str) -> np.ndarray:
        keys = sorted(key for key in mean_activations
                      if key[0] == condition and key[2] == step and (seeds is None or key[1] in seeds))
        if not keys:
            raise KeyError(f"activation_shift: no mean activation for {condition!r} at step {step}")
        return np.stack([np.asarray(mean_activations[key][layer], dtype=float) for key in keys])

    em_runs, control_runs = runs(em), runs(control)
    shift = em_runs.mean(axis=0) - control_runs.mean(axis=0)
    pair_norms = [np.linalg.norm(group[a] - group[b]) for group in (em_runs, control_runs)
                  for a, b in combinations(range(len(group)), 2)]
    names = list(basis)
    matrix = np.stack([np.asarray(basis[name], dtype=float) for name in names], axis=1)  # hidden x traits
    coefficients, *_ = np.linalg.lstsq(matrix, shift, rcond=None)
    fitted = matrix @ coefficients
    shift_norm = float(np.linalg.norm(shift))
    rank = np.linalg.matrix_rank(matrix)
    return ActivationShift(
        layer=layer, step=step, norm=shift_norm,
        seed_pair_norm=float(np.mean(pair_norms)) if pair_norms else float("nan"),
        explained_share=float(np.dot(fitted, fitted) / shift_norm ** 2) if shift_norm > 0 else float("nan"),
        chance_share=float(rank / matrix.shape[0]),
        coefficients=pd.Series(coefficients, index=names).sort_values(key=np.abs, ascending=False),
        n_em_seeds=len(em_runs), n_control_seeds=len(control_runs),
    )
