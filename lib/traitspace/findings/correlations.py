"""Which traits track behaviour: the Spearman correlation, across evaluated checkpoints, of every
trait's drift with every behaviour score (``trait_behaviour_spearman.csv``), Benjamini-Hochberg over
all the tests, and the partial Spearman correlation controlling for the training step: drift and
misalignment both grow with training, so a raw correlation says little about which trait *tracks*
behaviour beyond "both moved".
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats


def spearman_matrix(trait_drift: pd.DataFrame, behaviour: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlation of every trait's drift with every behaviour score across checkpoints.

    Args:
        trait_drift: wide table, index = checkpoint key, columns = traits (rows, traits).
        behaviour: wide table on the same checkpoint index, columns = behaviour scores (e.g.
            em_rate, coherence); only checkpoints present in both are used.

    Returns:
        Long DataFrame with columns trait, behaviour, rho, p_value, n (checkpoints with both
        values). rho and p are nan when n < 3 or either series is constant.
    """
    shared_index = trait_drift.index.intersection(behaviour.index)
    if len(shared_index) == 0:
        raise KeyError("spearman_matrix: trait_drift and behaviour share no checkpoint index")
    drift_rows = trait_drift.loc[shared_index]
    behaviour_rows = behaviour.loc[shared_index]
    records = []
    for trait in drift_rows.columns:
        for score in behaviour_rows.columns:
            pair = pd.concat([drift_rows[trait], behaviour_rows[score]], axis=1).dropna()
            rho = p_value = np.nan
            constant = pair.nunique().min() < 2 if len(pair) else True
            if len(pair) >= 3 and not constant:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", scipy_stats.ConstantInputWarning)
                    result = scipy_stats.spearmanr(pair.iloc[:, 0], pair.iloc[:, 1])
                rho, p_value = float(result.statistic), float(result.pvalue)
            records.append({"trait": trait, "behaviour": score, "rho": rho,
                            "p_value": p_value, "n": len(pair)})
    return pd.DataFrame.from_records(records, columns=["trait", "behaviour", "rho",
                                                       "p_value", "n"])


def partial_spearman(x: np.ndarray, y: np.ndarray, control: np.ndarray) -> tuple[float, float]:
    """Spearman correlation of x and y after removing what the control explains (Pearson on the
    residuals of the ranks regressed on the control's ranks; p from the t distribution on n - 3
    degrees of freedom). (nan, nan) when n < 4 or a residual is constant."""
    ranks = [scipy_stats.rankdata(values) for values in (x, y, control)]
    if len(x) < 4:
        return np.nan, np.nan
    design = np.column_stack([np.ones(len(x)), ranks[2]])
    residuals = [values - design @ np.linalg.lstsq(design, values, rcond=None)[0] for values in ranks[:2]]
    if min(np.std(residual) for residual in residuals) < 1e-12:
        return np.nan, np.nan
    rho = float(np.corrcoef(*residuals)[0, 1])
    dof = len(x) - 3
    t_value = rho * np.sqrt(dof / max(1 - rho ** 2, 1e-300))
    return rho, float(2 * scipy_stats.t.sf(abs(t_value), dof))


def with_step_control_and_bh(table: pd.DataFrame, trait_drift: pd.DataFrame, behaviour: pd.DataFrame,
                             steps: pd.Series, alpha: float = 0.05) -> pd.DataFrame:
    """Add ``partial_rho`` / ``partial_p`` (controlling for the training step) and BH q-values over
    all tests (``q_value`` for the raw, ``partial_q`` for the partial correlations)."""
    from ..core.stats import benjamini_hochberg

    partial = []
    for row in table.itertuples():
        pair = pd.concat([trait_drift[row.trait], behaviour[row.behaviour], steps], axis=1).dropna()
        partial.append(partial_spearman(*(pair.iloc[:, index].to_numpy(dtype=float) for index in range(3))))
    table = table.assign(partial_rho=[value[0] for value in partial], partial_p=[value[1] for value in partial])
    for p_column, q_column in (("p_value", "q_value"), ("partial_p", "partial_q")):
        _, q_values = benjamini_hochberg(table[p_column].to_numpy(dtype=float), alpha=alpha)
        table[q_column] = q_values
    return table


def trait_behaviour_spearman(inputs, settings) -> pd.DataFrame:
    """:func:`spearman_matrix` of drift (% of the base norm) against the EM rate, mean alignment and
    coherence, over every evaluated checkpoint of the main and extra runs (every training seed its own
    run; ``inputs``: :class:`~.inputs.FindingsInputs`), with the partial correlation controlling for
    the step and BH q-values (:func:`with_step_control_and_bh`); empty with fewer than four checkpoints."""
    runs = [inputs.main, *inputs.extra]
    rows, behaviour_rows, steps = [], [], []
    base_counted = False
    for run in runs:
        merged = run.drift.merge(run.rates, on=["condition", "step"])
        if merged.empty:
            continue
        # Step 0 is the one base model, copied into every run and condition: count it once in all.
        first_condition = sorted(merged["condition"].unique())[0]
        keep_base = (merged["condition"] == first_condition) & (not base_counted)
        merged = merged[(merged["step"] > 0) | keep_base]
        base_counted = True
        wide = merged.pivot_table(index=["condition", "step"], columns="trait", values="drift_pct_of_norm")
        labels = [f"{run.run_dir.name}/seed-{run.seed}/{condition}/{step}" for condition, step in wide.index]
        steps.append(pd.Series([step for _, step in wide.index], index=labels, name="step"))
        behaviour = run.rates.set_index(["condition", "step"])[[settings.em_rate, "mean_aligned", "coherence_rate"]]
        behaviour = behaviour.loc[wide.index]
        wide.index = behaviour.index = labels
        rows.append(wide)
        behaviour_rows.append(behaviour)
    if not rows or sum(len(frame) for frame in rows) < 4:
        return pd.DataFrame()
    drift_rows, behaviour_table = pd.concat(rows), pd.concat(behaviour_rows)
    table = spearman_matrix(drift_rows, behaviour_table)
    return with_step_control_and_bh(table, drift_rows, behaviour_table, pd.concat(steps))
