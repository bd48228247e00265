"""Trait-space trajectories: how a fine-tuning run moves the model along trait directions, and
how much of that movement is specific to the emergent-misalignment (EM) data rather than shared
with its matched control.

Input convention: a tidy projection table with columns ``condition, step, trait, prompt,
value``, where value = (activation on that prompt) . (unit trait vector), ``condition`` names a
fine-tuning run (e.g. "insecure_code", "secure_code") and step 0 is the untouched base model.
Every condition carries its own step-0 rows (the same base model measured through the same
pipeline), so drift is always taken against the condition's own start.

With a ``seed`` column (the training seed) a trail is one (condition, seed) (:func:`trail_keys`). Tests
across seeds: :mod:`traitspace.core.seed_tests`; the prompt-paired tests here measure precision only.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from traitspace.core.stats import benjamini_hochberg, bootstrap_mean_ci, permutation_test_diff

PROJECTION_COLUMNS = ("condition", "step", "trait", "prompt", "value")


def _require_columns(df: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    missing = [column for column in columns if column not in df.columns]
    if missing:
        raise KeyError(f"{where}: table lacks column(s) {missing}; it has {list(df.columns)}")


def _require_condition(df: pd.DataFrame, condition: str, where: str) -> None:
    if condition not in set(df["condition"]):
        raise KeyError(f"{where}: condition {condition!r} not in table; conditions are {sorted(set(df['condition']))}")


def trail_keys(df: pd.DataFrame) -> list[str]:
    """The columns naming one trail: condition, plus seed when the table has one."""
    return ["condition", "seed"] if "seed" in df.columns else ["condition"]


def mean_projection_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean projection over prompts.

    Args:
        df: tidy projection table (condition, step, trait, prompt, value).

    Returns:
        DataFrame with columns condition, step, trait, value (mean over prompts), n_prompts;
        one row per (condition, step, trait), sorted.
    """
    _require_columns(df, PROJECTION_COLUMNS, "mean_projection_table")
    grouped = df.groupby([*trail_keys(df), "step", "trait"], sort=True)["value"]
    return grouped.agg(value="mean", n_prompts="count").reset_index()


def drift(df: pd.DataFrame, per_prompt: bool = False) -> pd.DataFrame:
    """Projection at each step minus the projection at step 0, per condition and trait.

    Args:
        df: tidy projection table (condition, step, trait, prompt, value).
        per_prompt: keep one row per prompt (drift of that prompt's own projection, needed for
            paired resampling) instead of averaging over prompts first.

    Returns:
        DataFrame with columns condition, step, trait, [prompt,] drift. Step 0 rows are kept
        (drift exactly 0). The mean of per-prompt drift equals the drift of the mean when the
        same prompts are measured at every step.

    Raises:
        KeyError: a (condition, trait[, prompt]) has no step-0 row to measure from.
    """
    _require_columns(df, PROJECTION_COLUMNS, "drift")
    trail = trail_keys(df)
    if per_prompt:
        keys = [*trail, "trait", "prompt"]
        table = df[[*trail, "step", "trait", "prompt", "value"]]
    else:
        keys = [*trail, "trait"]
        table = mean_projection_table(df)[[*trail, "step", "trait", "value"]]
    base = table[table["step"] == 0]
    if base.duplicated(keys).any():
        duplicated = base[base.duplicated(keys)].iloc[0]
        raise ValueError(f"drift: more than one step-0 value for "
                         f"{dict(duplicated[keys])}")
    merged = table.merge(base[keys + ["value"]].rename(columns={"value": "base_value"}),
                         on=keys, how="left")
    missing = merged[merged["base_value"].isna()]
    if len(missing):
        raise KeyError(f"drift: no step-0 row for {dict(missing.iloc[0][keys])}; every "
                       f"condition needs its own base-model measurement at step 0")
    merged["drift"] = merged["value"] - merged["base_value"]
    columns = [*trail, "step", "trait"] + (["prompt"] if per_prompt else []) + ["drift"]
    return merged[columns].sort_values(columns[:-1]).reset_index(drop=True)


def norm_rescaled_drift(drift_values: np.ndarray | float, base_norm: np.ndarray | float) -> np.ndarray | float:
    """Drift as a percentage of the step-0 activation norm: 100 * drift / base_norm.

    Raw projections scale with the residual-stream norm of the layer, so this makes drift
    comparable across layers and models (paper-001 convention).

    Args:
        drift_values: any shape.
        base_norm: mean L2 norm of the base model's activations at that layer; a positive scalar
            or an array broadcastable to ``drift_values``.
    """
    base_norm_array = np.asarray(base_norm, dtype=float)
    if np.any(base_norm_array <= 0) or np.any(np.isnan(base_norm_array)):
        raise ValueError(f"norm_rescaled_drift: base_norm must be positive, got {base_norm}")
    return 100.0 * np.asarray(drift_values, dtype=float) / base_norm_array


def differential(drift_df: pd.DataFrame, em: str, control: str) -> pd.DataFrame:
    """EM-specific drift: drift(EM) - drift(control) at each step and trait.

    Args:
        drift_df: output of :func:`drift` (columns condition, step, trait, [prompt,] drift).
            With a prompt column the difference is taken per prompt (prompts paired).
        em: condition name of the EM run.
        control: condition name of the matched control run.

    Returns:
        DataFrame with columns step, trait, [prompt,] drift_em, drift_control, differential,
        holding only the (step, trait[, prompt]) keys present in both conditions.
    """
    _require_columns(drift_df, ["condition", "step", "trait", "drift"], "differential")
    _require_condition(drift_df, em, "differential")
    _require_condition(drift_df, control, "differential")
    # Paired by seed, and by prompt when present.
    keys = [key for key in ("seed", "step", "trait", "prompt") if key in drift_df.columns]
    em_rows = drift_df.loc[drift_df["condition"] == em, keys + ["drift"]]
    control_rows = drift_df.loc[drift_df["condition"] == control, keys + ["drift"]]
    merged = em_rows.merge(control_rows, on=keys, suffixes=("_em", "_control"), how="inner")
    merged["differential"] = merged["drift_em"] - merged["drift_control"]
    return merged.sort_values(keys).reset_index(drop=True)


def _paired_prompt_matrices(df: pd.DataFrame, em: str, control: str, step: int
                            ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per-prompt drift at ``step`` as two (prompts, traits) matrices with rows paired."""
    per_prompt = drift(df[df["condition"].isin([em, control])], per_prompt=True)
    at_step = per_prompt[per_prompt["step"] == step]
    wide = at_step.pivot_table(index="prompt", columns=["condition", "trait"], values="drift",
                               aggfunc="first")
    traits = sorted(set(at_step["trait"]))
    em_matrix = wide[em].reindex(columns=traits)
    control_matrix = wide[control].reindex(columns=traits)
    # Only prompts measured for both runs (and every trait) can be paired.
    complete = em_matrix.notna().all(axis=1) & control_matrix.notna().all(axis=1)
    if not complete.any():
        raise ValueError(f"top_shifts: no prompt is measured for both {em!r} and {control!r} "
                         f"at step {step}")
    return em_matrix[complete].to_numpy(), control_matrix[complete].to_numpy(), traits


def top_shifts(
    df: pd.DataFrame,
    em: str,
    control: str,
    step: int | None = None,
    k: int = 10,
    n_boot: int = 2000,
    n_perm: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Traits whose EM-specific drift at one checkpoint is largest, with uncertainty.

    The same projection prompts are used at every checkpoint and for both runs, so per prompt
    the differential is (EM drift) - (control drift) and prompts are the resampling unit:
    a paired bootstrap over prompts for the interval and a paired sign-flip permutation test
    of EM drift against control drift for the p-value. BH correction runs over ALL traits.

    Args:
        df: tidy projection table (condition, step, trait, prompt, value).
        em, control: condition names.
        step: checkpoint to test; None means the last step both conditions share.
        k: how many leading traits get ``top_k`` = True (all traits are returned).
        n_boot, n_perm: bootstrap resamples and permutations.
        seed: seed for both (the permutation generator uses seed + 1).
        alpha: false discovery rate for ``significant``.

    With random permutations the smallest two-sided p-value is 2 / (n_perm + 1), and BH only
    rejects the top trait when its p-value is <= alpha / n_traits; so n_perm must exceed about
    2 * n_traits / alpha for any single trait to be able to pass (a warning says when not).

    Returns:
        One row per trait sorted by |differential| descending, columns: trait, step,
        differential, ci_low, ci_high, p_value, q_value, significant, direction
        ("increase" / "decrease"), rank (1 = largest), top_k.
    """
    _require_columns(df, PROJECTION_COLUMNS, "top_shifts")
    _require_condition(df, em, "top_shifts")
    _require_condition(df, control, "top_shifts")
    if step is None:
        shared_steps = set(df.loc[df["condition"] == em, "step"]) & set(
            df.loc[df["condition"] == control, "step"])
        step = int(max(shared_steps))
    em_drift, control_drift, traits = _paired_prompt_matrices(df, em, control, step)
    smallest_p = 2 / (n_perm + 1)
    if smallest_p > alpha / len(traits) and 2 ** em_drift.shape[0] > n_perm:
        warnings.warn(f"top_shifts: n_perm={n_perm} cannot give p below {smallest_p:.2g}, but "
                      f"BH over {len(traits)} traits needs p <= {alpha / len(traits):.2g} for a "
                      f"lone significant trait; raise n_perm above "
                      f"{math.ceil(2 * len(traits) / alpha)}", stacklevel=2)
    difference, low, high = bootstrap_mean_ci(em_drift - control_drift, n_boot=n_boot,
                                              seed=seed, axis=0)
    p_values = permutation_test_diff(em_drift, control_drift, n_perm=n_perm, seed=seed + 1,
                                     paired=True, axis=0)
    rejected, q_values = benjamini_hochberg(np.atleast_1d(p_values), alpha=alpha)
    table = pd.DataFrame({
        "trait": traits,
        "step": step,
        "differential": np.atleast_1d(difference),
        "ci_low": np.atleast_1d(low),
        "ci_high": np.atleast_1d(high),
        "p_value": np.atleast_1d(p_values),
        "q_value": q_values,
        "significant": rejected,
    })
    table["direction"] = np.where(table["differential"] >= 0, "increase", "decrease")
    table = table.reindex(table["differential"].abs().sort_values(ascending=False,
                                                                 kind="stable").index)
    table = table.reset_index(drop=True)
    table["rank"] = np.arange(1, len(table) + 1)
    table["top_k"] = table["rank"] <= k
    return table


@dataclass(frozen=True)
class TrajectoryPCA:
    """PCA of the (condition, step) x trait matrix of mean projections.

    explained_variance_ratio: shape (n_components,).
    coordinates: DataFrame with columns condition, step, pc1 .. pcN (one row per checkpoint).
    components: DataFrame of loadings, index = trait, columns pc1 .. pcN.
    """

    explained_variance_ratio: np.ndarray
    coordinates: pd.DataFrame
    components: pd.DataFrame


def trajectory_pca(mean_table: pd.DataFrame, n_components: int = 2,
                   value_column: str = "value") -> TrajectoryPCA:
    """PCA over checkpoints: which few trait combinations carry most of the movement.

    Args:
        mean_table: output of :func:`mean_projection_table` (or of :func:`drift`, with
            value_column="drift"): columns condition, step, trait, value.
        n_components: number of components kept (capped at min(rows, traits)).
        value_column: column holding the per-(condition, step, trait) number.

    Returns:
        :class:`TrajectoryPCA`. PCA centres the matrix, so coordinates are relative to the mean
        checkpoint; ratios are of the variance across all (condition, step) rows.
    """
    _require_columns(mean_table, ["condition", "step", "trait", value_column], "trajectory_pca")
    matrix = mean_table.pivot_table(index=[*trail_keys(mean_table), "step"], columns="trait",
                                    values=value_column, aggfunc="mean")
    if matrix.isna().any().any():
        row, column = np.argwhere(matrix.isna().to_numpy())[0]
        raise ValueError(f"trajectory_pca: no value for (condition, step) = "
                         f"{matrix.index[row]}, trait = {matrix.columns[column]!r}")
    n_components = min(n_components, *matrix.shape)
    pca = PCA(n_components=n_components)
    coordinates = pca.fit_transform(matrix.to_numpy())
    component_names = [f"pc{i + 1}" for i in range(n_components)]
    coordinate_table = pd.DataFrame(coordinates, columns=component_names, index=matrix.index)
    return TrajectoryPCA(
        explained_variance_ratio=pca.explained_variance_ratio_,
        coordinates=coordinate_table.reset_index(),
        components=pd.DataFrame(pca.components_.T, index=matrix.columns,
                                columns=component_names),
    )


def decompose(drift_em: np.ndarray, drift_control: np.ndarray,
              steps: Sequence[int] | None = None) -> pd.DataFrame:
    """Split EM drift into the part shared with the control and the part specific to EM.

    shared = (em + control) / 2 and specific = (em - control) / 2, so em = shared + specific
    and control = shared - specific.

    Args:
        drift_em: shape (steps, traits), drift of the EM run.
        drift_control: shape (steps, traits), drift of the control run.
        steps: labels of the rows (default 0 .. steps-1).

    Returns:
        One row per step with columns step, shared_norm, specific_norm (L2 norms over traits),
        specific_to_shared, shared_to_specific (x / 0 = inf, 0 / 0 = nan), cosine (cosine of
        drift_em and drift_control; nan when either is the zero vector, e.g. at step 0).
    """
    drift_em = np.asarray(drift_em, dtype=float)
    drift_control = np.asarray(drift_control, dtype=float)
    if drift_em.shape != drift_control.shape or drift_em.ndim != 2:
        raise ValueError(f"decompose: need two (steps, traits) arrays of one shape, got {drift_em.shape} and {drift_control.shape}")
    step_labels = np.arange(drift_em.shape[0]) if steps is None else np.asarray(steps)
    if len(step_labels) != drift_em.shape[0]:
        raise ValueError(f"decompose: {len(step_labels)} step labels for "
                         f"{drift_em.shape[0]} rows")
    shared_norm = np.linalg.norm((drift_em + drift_control) / 2, axis=1)
    specific_norm = np.linalg.norm((drift_em - drift_control) / 2, axis=1)
    em_norm = np.linalg.norm(drift_em, axis=1)
    control_norm = np.linalg.norm(drift_control, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        specific_to_shared = specific_norm / shared_norm
        shared_to_specific = shared_norm / specific_norm
        cosine = np.einsum("st,st->s", drift_em, drift_control) / (em_norm * control_norm)
    cosine = np.where((em_norm == 0) | (control_norm == 0), np.nan, cosine)
    return pd.DataFrame({
        "step": step_labels,
        "shared_norm": shared_norm,
        "specific_norm": specific_norm,
        "specific_to_shared": specific_to_shared,
        "shared_to_specific": shared_to_specific,
        "cosine": cosine,
    })


def fingerprint_split(prompts: Sequence[str], seed: int) -> tuple[list[str], list[str]]:
    """Deterministic half split of the projection prompts: one half selects the key traits,
    the other half measures them, so the fingerprint score is not inflated by selection.

    Args:
        prompts: prompt identifiers (duplicates and order do not matter).
        seed: seed of the shuffle.

    Returns:
        (selection_prompts, measurement_prompts); the selection half gets the extra prompt when
        the count is odd. Same prompts and seed always give the same split.
    """
    unique_prompts = sorted(set(prompts))
    if len(unique_prompts) < 2:
        raise ValueError(f"fingerprint_split: need at least two distinct prompts, "
                         f"got {len(unique_prompts)}")
    order = np.random.default_rng(seed).permutation(len(unique_prompts))
    shuffled = [unique_prompts[i] for i in order]
    half = (len(shuffled) + 1) // 2
    return shuffled[:half], shuffled[half:]


def _final_shared_step(drift_df: pd.DataFrame, em: str, control: str) -> int:
    shared_steps = set(drift_df.loc[drift_df["condition"] == em, "step"]) & set(
        drift_df.loc[drift_df["condition"] == control, "step"])
    if not shared_steps:
        raise ValueError(f"no step is measured for both {em!r} and {control!r}")
    return int(max(shared_steps))


def select_key_traits(df_selection: pd.DataFrame, em: str, control: str, k: int,
                      step: int | None = None) -> pd.DataFrame:
    """The k traits with the largest |differential| at one step, measured on selection prompts.

    Args:
        df_selection: tidy projection table restricted to the selection half of prompts.
        em, control: condition names.
        k: number of traits to keep.
        step: step at which to rank; None = last step both conditions share.

    Returns:
        DataFrame with k rows (largest first) and columns trait, differential, sign (+1 / -1).
    """
    _require_columns(df_selection, PROJECTION_COLUMNS, "select_key_traits")
    drift_table = drift(df_selection)
    _require_condition(drift_table, em, "select_key_traits")
    _require_condition(drift_table, control, "select_key_traits")
    if step is None:
        step = _final_shared_step(drift_table, em, control)
    at_step = differential(drift_table, em, control)
    at_step = at_step[at_step["step"] == step]
    ranked = at_step.reindex(at_step["differential"].abs().sort_values(
        ascending=False, kind="stable").index).head(k)
    return pd.DataFrame({
        "trait": ranked["trait"].to_numpy(),
        "differential": ranked["differential"].to_numpy(),
        "sign": np.where(ranked["differential"].to_numpy() >= 0, 1, -1),
    })


def fingerprint_score(df_measurement: pd.DataFrame, em: str, control: str,
                      traits: Sequence[str], signs: Sequence[int]) -> pd.Series:
    """EM fingerprint over time: mean over key traits of sign x differential, per step.

    Args:
        df_measurement: tidy projection table restricted to the measurement half of prompts.
        em, control: condition names.
        traits: key traits from :func:`select_key_traits` (shape (k,)).
        signs: +1 / -1 per trait (shape (k,)), the direction seen on the selection half, so a
            score > 0 means the measurement half moves the same way.

    Returns:
        Series indexed by step (name "fingerprint_score").
    """
    if len(traits) != len(signs) or len(traits) == 0:
        raise ValueError(f"fingerprint_score: need one sign per trait and at least one trait, "
                         f"got {len(traits)} traits and {len(signs)} signs")
    drift_table = drift(df_measurement)
    unknown = sorted(set(traits) - set(drift_table["trait"]))
    if unknown:
        raise KeyError(f"fingerprint_score: traits {unknown} not in the measurement table")
    diff = differential(drift_table, em, control)
    diff = diff[diff["trait"].isin(traits)]
    key_traits = dict(zip(traits, (int(sign) for sign in signs)))
    score = pd.Series({step: fingerprint_of(dict(zip(group["trait"], group["differential"])), key_traits)
                       for step, group in diff.groupby("step")}, dtype=float)
    score.index.name = "step"
    score.name = "fingerprint_score"
    return score


def fingerprint_by_prompt(df_measurement: pd.DataFrame, em: str, control: str,
                          traits: Sequence[str], signs: Sequence[int]) -> pd.DataFrame:
    """:func:`fingerprint_of` of each measurement prompt on its own, per step: the mean over the key
    traits of sign x that prompt's EM-minus-control drift (the prompt paired across the two runs).

    The per-prompt form of the one definition, vectorised (one pandas mean over all prompts and
    steps instead of a :func:`fingerprint_of` call per cell; equal up to float rounding). The findings
    stage's permutation null flips these per-prompt fingerprints; their mean over prompts is
    :func:`fingerprint_score` (the drift of a mean is the mean of the per-prompt drifts).

    Args: as :func:`fingerprint_score`.

    Returns:
        DataFrame indexed by prompt, one column per step (ascending); nan where a prompt lacks a step.
    """
    if len(traits) != len(signs) or len(traits) == 0:
        raise ValueError(f"fingerprint_by_prompt: need one sign per trait and at least one trait, "
                         f"got {len(traits)} traits and {len(signs)} signs")
    per_prompt = differential(drift(df_measurement, per_prompt=True), em, control)
    per_prompt = per_prompt[per_prompt["trait"].isin(traits)].copy()
    per_prompt["signed"] = per_prompt["differential"] * per_prompt["trait"].map(dict(zip(traits, signs)))
    return per_prompt.groupby(["prompt", "step"])["signed"].mean().unstack("step").sort_index(axis=1)


def fingerprint_of(values: Mapping[str, float], key_traits: Mapping[str, int]) -> float:
    """The fingerprint of one measurement: the mean over key traits of sign x value.

    The one definition, used per step by :func:`fingerprint_score` (on EM-minus-control
    differentials), per prompt and step by :func:`fingerprint_by_prompt`, and live during training
    by the finetune stage's monitor (on drift).
    """
    return float(np.mean([sign * values[trait] for trait, sign in key_traits.items()]))
