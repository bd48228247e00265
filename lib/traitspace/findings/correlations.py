"""Which traits track behaviour: the Spearman correlation, across evaluated checkpoints, of every
trait's drift with every behaviour score (``trait_behaviour_spearman.csv``).
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


def trait_behaviour_spearman(inputs, settings) -> pd.DataFrame:
    """:func:`spearman_matrix` of drift (% of the base norm) against the EM rate, mean alignment and
    coherence, over every evaluated checkpoint of the main and extra runs (``inputs``:
    :class:`~.inputs.FindingsInputs`); empty with fewer than four checkpoints."""
    runs = [inputs.main, *inputs.extra]
    rows, behaviour_rows = [], []
    for run in runs:
        merged = run.drift.merge(run.rates, on=["condition", "step"])
        if merged.empty:
            continue
        # Step 0 is the one base model, copied into every condition: count it once, not once per condition.
        first_condition = sorted(merged["condition"].unique())[0]
        merged = merged[(merged["step"] > 0) | (merged["condition"] == first_condition)]
        wide = merged.pivot_table(index=["condition", "step"], columns="trait", values="drift_pct_of_norm")
        wide.index = [f"{run.run_dir.name}/{condition}/{step}" for condition, step in wide.index]
        rows.append(wide)
        behaviour = run.rates.set_index(["condition", "step"])[[settings.em_rate, "mean_aligned", "coherence_rate"]]
        behaviour.index = [f"{run.run_dir.name}/{condition}/{step}" for condition, step in behaviour.index]
        behaviour_rows.append(behaviour.loc[wide.index])
    if not rows or sum(len(frame) for frame in rows) < 4:
        return pd.DataFrame()
    return spearman_matrix(pd.concat(rows), pd.concat(behaviour_rows))
