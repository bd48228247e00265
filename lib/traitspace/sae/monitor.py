"""The SAE baseline of notebook 05's monitor comparison (paper 001): the top-k changed SAE features
as a feature set, on the same rows, labels and folds as notebook 05's trait sets.

Rows, labels and folds are not rebuilt here: :func:`traitspace.findings.monitor_evaluation` (the
function notebook 05 calls, on the same params and run) returns them, with its trait-set results, and
the SAE feature set is evaluated by the same :func:`traitspace.findings.evaluate_monitors` on
``evaluation.table``'s labels and groups, held out the same ways (one dataset with all its seeds;
with several seeds, one seed with all its datasets) and with intervals resampling the same runs.

Each row's features are the change of every SAE feature's mean activation from the base model at that
checkpoint. Which k features: :class:`TopChangedFeatures` picks the k largest mean |change| on each
fold's *training* rows (no labels used, and never the held-out dataset), so choosing the features
leaks nothing across folds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

SAE_SET_NAME = "SAE top-{k} changed features"


class TopChangedFeatures(BaseEstimator, TransformerMixin):
    """Keep the ``k`` columns with the largest mean |value| on the rows it is fitted on."""

    def __init__(self, k: int = 10):
        self.k = k

    def fit(self, X, y=None) -> "TopChangedFeatures":
        X = np.asarray(X, dtype=float)
        self.columns_ = np.argsort(-np.abs(X).mean(axis=0), kind="stable")[: min(self.k, X.shape[1])]
        return self

    def transform(self, X) -> np.ndarray:
        return np.asarray(X, dtype=float)[:, self.columns_]


def feature_matrix(changes: pd.DataFrame, groups: pd.DataFrame, column: str = "mean_activation_change") -> np.ndarray:
    """Rows of ``groups`` (dataset, seed, step: the monitor table's rows) x every feature's change.
    ``changes``: condition, seed, step, feature, ``column``. Errors name a row without SAE features."""
    wide = changes.pivot_table(index=["condition", "seed", "step"], columns="feature", values=column)
    keys = pd.MultiIndex.from_frame(groups[["dataset", "seed", "step"]].astype({"seed": int, "step": int}))
    missing = [key for key in keys if key not in wide.index]
    if missing:
        raise ValueError(f"no SAE features for monitor row(s) {missing[:3]} (dataset, seed, step); the SAE diff "
                         "measures this run's checkpoints (with sae.answers='own', only those notebook 04 sampled; "
                         "findings.extra_runs are not read)")
    return wide.loc[keys].to_numpy(dtype=float)


def sae_monitor_results(evaluation, changes: pd.DataFrame, k: int, settings, seed: int = 0) -> pd.DataFrame:
    """Notebook 05's monitor results (``evaluation``: its :class:`~traitspace.findings.MonitorEvaluation`)
    with the SAE set's rows added: the same columns, ``held_out`` schemes, labels and folds."""
    from ..findings import evaluate_monitors

    table = evaluation.table
    matrix = feature_matrix(changes, table.groups)
    name = SAE_SET_NAME.format(k=k)
    groups = table.groups
    schemes = {"dataset": ["dataset"], **({"seed": ["seed"]} if groups["seed"].nunique() > 1 else {})}
    parts = []
    for scheme, columns in schemes.items():
        rows = evaluate_monitors({name: (matrix, TopChangedFeatures(k))}, table.labels, groups[columns],
                                 models=settings.monitor_models, seed=seed, n_boot=settings.n_boot,
                                 clusters=groups[["dataset", "seed"]])
        rows.insert(0, "held_out", scheme)
        parts.append(rows)
    sae_rows = pd.concat(parts, ignore_index=True)
    combined = pd.concat([evaluation.results, sae_rows], ignore_index=True)
    combined["source"] = np.where(combined["features"] == name, "SAE (notebook 09)", "notebook 05")
    return combined
