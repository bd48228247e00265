"""Drift-monitor classifiers: can a checkpoint's trait-drift profile tell, without reading any
answers, whether the model has become dangerously misaligned? Builds the checkpoint table and
evaluates a classifier with leave-one-group-out validation (a whole dataset or seed is held out at
once). The feature sets it is compared on (trait drift and the baselines) are in :mod:`.baselines`;
the notebook's evaluation over them in :mod:`.evaluation`.

Feature steps that learn from data (PCA directions) are sklearn transformers passed as
``feature_step``, so they are fitted inside each training fold and never see the held-out group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.model_selection import LeaveOneGroupOut
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ..core.stats import mann_whitney_auroc

RUN_COLUMNS = ("dataset", "seed")
ModelName = Literal["logistic", "random_forest", "ridge"]


@dataclass(frozen=True)
class MonitorTable:
    """One row per (run, checkpoint), rows aligned across all fields.

    features: DataFrame (rows, traits) of drift values, columns = trait names.
    labels: bool array (rows,), True when em_rate > danger_threshold.
    em_rate: float array (rows,).
    groups: DataFrame (rows,) with columns dataset, seed, step for grouping and plotting.
    """

    features: pd.DataFrame
    labels: np.ndarray
    em_rate: np.ndarray
    groups: pd.DataFrame


def build_monitor_table(drift_profiles: pd.DataFrame, em_rates: pd.DataFrame,
                        danger_threshold: float = 0.05, value_column: str = "drift") -> MonitorTable:
    """Join drift profiles with measured EM rates into a classifier table.

    Args:
        drift_profiles: long table with columns dataset, seed, step, trait and ``value_column``
            (one value per run x checkpoint x trait).
        em_rates: table with columns dataset, seed, step, em_rate (fraction of misaligned
            answers at that checkpoint).
        danger_threshold: a checkpoint is dangerous when em_rate > danger_threshold.
        value_column: name of the drift column in ``drift_profiles``.

    Returns:
        :class:`MonitorTable`, rows sorted by dataset, seed, step.

    Raises:
        KeyError: a column is missing, or a checkpoint with drift has no em_rate.
        ValueError: a checkpoint lacks some trait, or has two em_rate rows.
    """
    keys = [*RUN_COLUMNS, "step"]
    for name, table, columns in (("drift_profiles", drift_profiles, [*keys, "trait", value_column]),
                                 ("em_rates", em_rates, [*keys, "em_rate"])):
        missing = [column for column in columns if column not in table.columns]
        if missing:
            raise KeyError(f"build_monitor_table: {name} lacks column(s) {missing}")
    wide = drift_profiles.pivot_table(index=keys, columns="trait", values=value_column,
                                      aggfunc="mean")
    if wide.isna().any().any():
        row, column = np.argwhere(wide.isna().to_numpy())[0]
        raise ValueError(f"build_monitor_table: checkpoint {dict(zip(keys, wide.index[row]))} "
                         f"has no drift for trait {wide.columns[column]!r}")
    if em_rates.duplicated(keys).any():
        duplicate = em_rates[em_rates.duplicated(keys)].iloc[0]
        raise ValueError(f"build_monitor_table: two em_rate rows for {dict(duplicate[keys])}")
    rates = em_rates.set_index(keys)["em_rate"]
    aligned_rates = rates.reindex(wide.index)
    if aligned_rates.isna().any():
        missing_key = aligned_rates[aligned_rates.isna()].index[0]
        raise KeyError(f"build_monitor_table: no em_rate for checkpoint "
                       f"{dict(zip(keys, missing_key))}")
    wide = wide.sort_index()
    aligned_rates = aligned_rates.reindex(wide.index).to_numpy(dtype=float)
    features = wide.reset_index(drop=True)
    features.columns.name = None
    return MonitorTable(
        features=features,
        labels=aligned_rates > danger_threshold,
        em_rate=aligned_rates,
        groups=wide.index.to_frame(index=False),
    )


def _make_model(model: ModelName, seed: int, model_params: dict | None = None) -> BaseEstimator:
    params = dict(model_params or {})
    if model == "logistic":
        return LogisticRegression(**{"max_iter": 1000, "random_state": seed, **params})
    if model == "random_forest":
        return RandomForestClassifier(**{"n_estimators": 200, "random_state": seed,
                                         "n_jobs": 1, **params})
    if model == "ridge":
        return RidgeClassifier(**params)
    raise ValueError(f"leave_one_group_out_eval: unknown model {model!r}; "
                     f"use 'logistic', 'random_forest' or 'ridge'")


def _scores(pipeline: Pipeline, model: ModelName, X: np.ndarray) -> np.ndarray:
    """Positive-class probability for probabilistic models, decision value for ridge."""
    if model == "ridge":
        return pipeline.decision_function(X)
    return pipeline.predict_proba(X)[:, 1]


def _group_labels(groups: np.ndarray | pd.Series | pd.DataFrame) -> np.ndarray:
    """A DataFrame of several group columns (e.g. dataset, seed) becomes one label per row."""
    if isinstance(groups, pd.DataFrame):
        return groups.astype(str).agg("/".join, axis=1).to_numpy()
    return np.asarray(groups)


def training_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The decision threshold a fold learns from its own training rows: the score cut that maximises
    Youden's J (true-positive rate minus false-positive rate) there, midway between adjacent scores,
    so FNR and FPR on the held-out rows are out-of-fold numbers."""
    from sklearn.metrics import roc_curve

    false_positive, true_positive, cuts = roc_curve(labels, scores)
    best = int(np.argmax(true_positive - false_positive))
    ordered = np.unique(scores)
    above = ordered[ordered >= cuts[best]]
    below = ordered[ordered < cuts[best]]
    # roc_curve predicts positive for score >= cut; we predict for score > threshold.
    return float((above[0] + below[-1]) / 2) if len(below) and len(above) else float(cuts[best]) - 1e-12


def _pooled_metrics(labels: np.ndarray, scores: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """AUROC, FNR and FPR for each row of (resamples, rows) label, score and prediction matrices.

    AUROC is :func:`traitspace.core.stats.mann_whitney_auroc` along each row (one bootstrap resample
    per row). Returns shape (resamples, 3), nan where a resample lacks the class a metric needs.
    """
    n_positive = labels.sum(axis=1)
    n_negative = labels.shape[1] - n_positive
    predicted_positive = predicted
    with np.errstate(divide="ignore", invalid="ignore"):
        fnr = (~predicted_positive & labels).sum(axis=1) / n_positive
        fpr = (predicted_positive & ~labels).sum(axis=1) / n_negative
    return np.column_stack([mann_whitney_auroc(labels, scores), fnr, fpr]).astype(float)


def leave_one_group_out_eval(
    X: np.ndarray | pd.DataFrame,
    y: np.ndarray | Sequence[bool],
    groups: np.ndarray | pd.Series | pd.DataFrame,
    model: ModelName = "logistic",
    seed: int = 0,
    n_boot: int = 1000,
    ci: float = 0.95,
    feature_step: TransformerMixin | None = None,
    model_params: dict | None = None,
    clusters: np.ndarray | pd.Series | pd.DataFrame | None = None,
) -> dict:
    """Leave-one-group-out evaluation of a dangerous-checkpoint classifier.

    Each fold trains Pipeline([feature_step,] StandardScaler, model) on all groups but one and
    scores the held-out group; the out-of-fold scores of all folds are pooled and scored once.
    Scores are the positive-class probability (logistic, random_forest) or RidgeClassifier's
    decision_function (ridge). A held-out row is predicted dangerous when its score is strictly
    above the threshold its fold chose on its training rows (:func:`training_threshold`), so FNR
    and FPR are out-of-fold.

    A training fold whose labels have a single class cannot fit a classifier; its held-out
    rows get that class's constant score (1.0 / 0.0 for probabilities, +1 / -1 for ridge), i.e.
    the only prediction the training data supports, which FNR and FPR count. Such folds are listed
    in ``one_class_folds``, and the pooled AUROC is then undefined: it would rank the constant
    scores of untrained folds against the trained folds' scores (with one EM dataset, holding it
    out leaves no dangerous checkpoint to train on).

    Intervals are percentile cluster bootstraps over ``clusters`` (default: the groups; pass the
    runs, e.g. dataset and seed): whole runs are resampled, because checkpoints of one run are not
    independent. The out-of-fold table is resampled, not refitted; resamples in which a metric is
    undefined are skipped.

    Args:
        X: shape (rows, features).
        y: shape (rows,), True = dangerous.
        groups: shape (rows,) group label per row, or a DataFrame whose columns are joined into
            one label (e.g. dataset and seed).
        model: "logistic", "random_forest" or "ridge".
        seed: seeds the model and the bootstrap Generator.
        n_boot: bootstrap resamples for the intervals.
        ci: confidence level of the intervals.
        feature_step: optional transformer (e.g. :class:`~.baselines.PCAFeatures`) fitted inside each fold.
        model_params: keyword arguments that override the model's defaults (logistic:
            max_iter=1000; random_forest: n_estimators=200, n_jobs=1; both random_state=seed).

    Returns:
        dict with keys model, n_rows, n_positive, n_folds, threshold, oof_scores (rows,),
        auroc, auroc_ci, fnr, fnr_ci, fpr, fpr_ci (each ci a (low, high) tuple),
        one_class_folds (held-out group labels), undefined (metric -> reason, for metrics that
        are nan because the pooled labels lack a class).
    """
    features = np.asarray(X, dtype=float)
    labels = np.asarray(y).astype(bool)
    group_labels = _group_labels(groups)
    if features.ndim != 2 or not (len(features) == len(labels) == len(group_labels)):
        raise ValueError(f"leave_one_group_out_eval: X must be (rows, features) with one label "
                         f"and group per row, got X{features.shape}, y({len(labels)},), "
                         f"groups({len(group_labels)},)")
    splitter = LeaveOneGroupOut()
    n_folds = splitter.get_n_splits(features, labels, group_labels)
    if n_folds < 2:
        raise ValueError(f"leave_one_group_out_eval: need at least two groups, got {n_folds}")
    _make_model(model, seed, model_params)  # reject bad model settings before any fitting
    oof_scores = np.full(len(labels), np.nan)
    oof_predicted = np.zeros(len(labels), dtype=bool)
    one_class_folds: list[str] = []
    for train_index, test_index in splitter.split(features, labels, group_labels):
        train_labels = labels[train_index]
        if train_labels.all() or not train_labels.any():
            only_class = bool(train_labels[0])
            constant = (1.0 if only_class else -1.0) if model == "ridge" else float(only_class)
            oof_scores[test_index] = constant
            oof_predicted[test_index] = only_class
            one_class_folds.append(str(group_labels[test_index][0]))
            continue
        # A fresh clone per fold, so no fitted state carries from one fold into the next.
        steps = [("features", clone(feature_step))] if feature_step is not None else []
        steps += [("scale", StandardScaler()), ("model", _make_model(model, seed, model_params))]
        pipeline = Pipeline(steps)
        pipeline.fit(features[train_index], train_labels)
        fold_threshold = training_threshold(train_labels, _scores(pipeline, model, features[train_index]))
        oof_scores[test_index] = _scores(pipeline, model, features[test_index])
        oof_predicted[test_index] = oof_scores[test_index] > fold_threshold

    undefined: dict[str, str] = {}
    has_positive, has_negative = labels.any(), (~labels).any()
    if not (has_positive and has_negative):
        absent = "dangerous" if not has_positive else "safe"
        undefined["auroc"] = f"pooled labels contain no {absent} checkpoint"
    elif one_class_folds:
        # The held-out rows of those folds carry one constant score, pooled with the trained folds'
        # scores: the ranking then measures which fold a row came from, not a monitor.
        undefined["auroc"] = (f"no monitor could be trained for held-out {', '.join(one_class_folds)} (its training "
                              "rows hold one class)")
    if not has_positive:
        undefined["fnr"] = "no dangerous checkpoint, so no false negatives are possible"
    if not has_negative:
        undefined["fpr"] = "no safe checkpoint, so no false positives are possible"

    auroc_value, fnr_value, fpr_value = (float(x) for x in _pooled_metrics(
        labels[None, :], oof_scores[None, :], oof_predicted[None, :])[0])
    if "auroc" in undefined:
        auroc_value = float("nan")
    cluster_labels = _group_labels(clusters) if clusters is not None else group_labels
    members = [np.flatnonzero(cluster_labels == name) for name in np.unique(cluster_labels)]
    generator = np.random.default_rng(seed)
    resampled = np.full((n_boot, 3), np.nan)
    for draw in range(n_boot):
        rows = np.concatenate([members[index] for index in generator.integers(0, len(members), len(members))])
        resampled[draw] = _pooled_metrics(labels[None, rows], oof_scores[None, rows], oof_predicted[None, rows])[0]
    tail = 100 * (1 - ci) / 2

    def interval(column: int, name: str) -> tuple[float, float]:
        finite = resampled[:, column][~np.isnan(resampled[:, column])]
        if name in undefined or finite.size == 0:
            return (np.nan, np.nan)
        low, high = np.percentile(finite, [tail, 100 - tail])
        return (float(low), float(high))

    return {
        "model": model,
        "n_rows": int(len(labels)),
        "n_positive": int(labels.sum()),
        "n_folds": int(n_folds),
        "n_clusters": len(members),
        "threshold": "chosen per fold on its training rows (Youden's J)",
        "oof_scores": oof_scores,
        "auroc": auroc_value,
        "auroc_ci": interval(0, "auroc"),
        "fnr": fnr_value,
        "fnr_ci": interval(1, "fnr"),
        "fpr": fpr_value,
        "fpr_ci": interval(2, "fpr"),
        "one_class_folds": one_class_folds,
        "undefined": undefined,
    }
