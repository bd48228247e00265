"""Linear probes on activations (pure: arrays in, tables out; no model).

A probe is scikit-learn's ``LogisticRegression`` on standardised activations; its direction is the
weight vector mapped back to activation space (``coef / scale``), so it can be compared by cosine
with the difference-of-means direction and the EM direction. Every score is **out of fold** under
``GroupKFold`` by group (question or description pair): paraphrases of one question share most of
their activation, so random folds would leak them across the split. AUROC intervals are a bootstrap
that resamples groups (the unit the folds hold out).

Baselines beside each probe: the difference of class means fit on the same training folds (projected
held-out activations), and a fixed direction (the EM direction of notebook 06) that is not fit at all.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


@dataclass(frozen=True)
class ProbeData:
    """``X [n, H]`` activations at one layer, ``y [n]`` 0/1 labels, ``groups [n]`` (the CV unit)."""

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray


def _probe(C: float):
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))


def probe_direction(data: ProbeData, C: float = 1.0) -> np.ndarray:
    """The unit direction of a probe fit on all of ``data``, in activation space ``[H]``."""
    model = _probe(C).fit(data.X, data.y)
    scaler, logistic = model[0], model[1]
    direction = logistic.coef_[0] / np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    return direction / np.linalg.norm(direction)


def mean_difference(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean of the positives minus mean of the negatives ``[H]``."""
    return X[y == 1].mean(axis=0) - X[y == 0].mean(axis=0)


def _folds(groups: np.ndarray, n_splits: int):
    n_groups = np.unique(groups).size
    if n_groups < 2:
        raise ValueError(f"grouped cross-validation needs at least 2 groups, got {n_groups}")
    return GroupKFold(n_splits=min(n_splits, n_groups))


def out_of_fold_scores(data: ProbeData, n_splits: int = 5, C: float = 1.0) -> dict[str, np.ndarray]:
    """Held-out scores of every row under grouped K-fold: ``probe`` (logistic decision function) and
    ``mean_difference`` (projection on the training folds' class-mean difference)."""
    scores = {"probe": np.empty(len(data.y)), "mean_difference": np.empty(len(data.y))}
    for train, test in _folds(data.groups, n_splits).split(data.X, data.y, data.groups):
        if np.unique(data.y[train]).size < 2:
            raise ValueError("a training fold holds one class only; each group needs both labels or more groups")
        scores["probe"][test] = _probe(C).fit(data.X[train], data.y[train]).decision_function(data.X[test])
        scores["mean_difference"][test] = data.X[test] @ mean_difference(data.X[train], data.y[train])
    return scores


def grouped_auroc(y: np.ndarray, scores: np.ndarray, groups: np.ndarray, n_boot: int = 1000,
                  seed: int = 0) -> tuple[float, float, float]:
    """AUROC with a percentile interval from resampling groups (whole groups in or out).

    Hand-written: the unit resampled is a group of rows, which neither scipy nor sklearn offers. A
    resample only changes how often each row counts, so each draw's AUROC is the multiplicity-weighted
    Mann-Whitney statistic ``w_pos @ wins @ w_neg / (sum w_pos * sum w_neg)`` (``wins`` = 1 where a
    positive outscores a negative, 1/2 on ties), all draws in one matrix product."""
    y = np.asarray(y).astype(bool)
    value = float(roc_auc_score(y, scores))
    unique, index = np.unique(groups, return_inverse=True)
    draws = np.random.default_rng(seed).integers(0, unique.size, size=(n_boot, unique.size))
    group_counts = np.zeros((n_boot, unique.size))
    np.add.at(group_counts, (np.arange(n_boot)[:, None], draws), 1.0)
    weights = group_counts[:, index]                                    # [B, n]: how often each row counts
    positive, negative = scores[y], scores[~y]
    wins = (positive[:, None] > negative[None, :]) + 0.5 * (positive[:, None] == negative[None, :])
    w_pos, w_neg = weights[:, y], weights[:, ~y]
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = np.einsum("bi,ij,bj->b", w_pos, wins, w_neg) / (w_pos.sum(1) * w_neg.sum(1))
    boot = boot[np.isfinite(boot)]  # a draw without one of the classes has no AUROC
    low, high = np.percentile(boot, [2.5, 97.5]) if boot.size else (np.nan, np.nan)
    return value, float(low), float(high)


def evaluate(data: ProbeData, fixed: Mapping[str, np.ndarray] | None = None, n_splits: int = 5, C: float = 1.0,
             n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """AUROC (interval over groups) of the grouped-CV probe, the in-fold difference of means and each
    fixed direction (no fitting, projection only): one row per method with ``n`` and ``n_groups``."""
    scores = out_of_fold_scores(data, n_splits, C)
    for name, direction in (fixed or {}).items():
        scores[name] = data.X @ np.asarray(direction, dtype=float)
    rows = []
    for method, values in scores.items():
        auroc, low, high = grouped_auroc(data.y, values, data.groups, n_boot, seed)
        rows.append({"method": method, "auroc": auroc, "low": low, "high": high, "n": len(data.y),
                     "n_groups": int(np.unique(data.groups).size)})
    return pd.DataFrame(rows)


def layer_sweep(per_layer: Mapping[int, ProbeData], fixed: Mapping[str, Mapping[int, np.ndarray]] | None = None,
                n_splits: int = 5, C: float = 1.0, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """:func:`evaluate` at every layer (``fixed``: name -> {layer: direction}); a ``layer`` column added."""
    tables = []
    for layer, data in per_layer.items():
        at_layer = {name: directions[layer] for name, directions in (fixed or {}).items() if layer in directions}
        tables.append(evaluate(data, at_layer, n_splits, C, n_boot, seed).assign(layer=layer))
    return pd.concat(tables, ignore_index=True)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def cosine_table(directions: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Cosine of every pair of named directions (each pair once)."""
    names = list(directions)
    return pd.DataFrame([{"first": a, "second": b, "cosine": cosine(directions[a], directions[b])}
                         for i, a in enumerate(names) for b in names[i + 1:]])


def transfer_matrix(datasets: Mapping[str, ProbeData], n_splits: int = 5, C: float = 1.0) -> pd.DataFrame:
    """Train a probe on one dataset (a checkpoint or domain), test it on each other, held out by group:
    the groups are split once (GroupKFold over the union of all groups) and a probe trained on fold k's
    training groups of A scores fold k's test groups of B, so no question is both trained and tested on.
    The diagonal is A's own grouped-CV AUROC. Columns ``train``, ``test``, ``auroc``, ``n_test``."""
    all_groups = np.unique(np.concatenate([data.groups for data in datasets.values()]))
    folds = list(_folds(all_groups, n_splits).split(all_groups, groups=all_groups))
    rows = []
    for train_name, train_data in datasets.items():
        collected = {name: ([], []) for name in datasets}
        for train_index, test_index in folds:
            train_groups, test_groups = set(all_groups[train_index]), set(all_groups[test_index])
            mask = np.isin(train_data.groups, list(train_groups))
            if np.unique(train_data.y[mask]).size < 2:
                continue
            probe = _probe(C).fit(train_data.X[mask], train_data.y[mask])
            for test_name, test_data in datasets.items():
                held_out = np.isin(test_data.groups, list(test_groups))
                if held_out.any():
                    collected[test_name][0].append(test_data.y[held_out])
                    collected[test_name][1].append(probe.decision_function(test_data.X[held_out]))
        for test_name, (labels, scores) in collected.items():
            labels = np.concatenate(labels) if labels else np.array([])
            value = float(roc_auc_score(labels, np.concatenate(scores))) if np.unique(labels).size == 2 else np.nan
            rows.append({"train": train_name, "test": test_name, "auroc": value, "n_test": int(labels.size)})
    return pd.DataFrame(rows)


def stack_layers(activations: np.ndarray, labels: Sequence[int], groups: Sequence[str]) -> dict[int, ProbeData]:
    """``activations [n, L, H]`` -> {layer: ProbeData}."""
    y, g = np.asarray(labels, dtype=int), np.asarray(groups)
    return {layer: ProbeData(np.asarray(activations[:, layer], dtype=np.float64), y, g)
            for layer in range(activations.shape[1])}
