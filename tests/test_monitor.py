"""Tests for the drift monitor (traitspace.findings.monitor, .baselines, .correlations) on synthetic
run x checkpoint tables with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu, rankdata
from sklearn.metrics import roc_auc_score

from traitspace.core import stats, traits
from traitspace.findings import baselines, correlations, monitor

DATASETS = ("insecure_code", "medical", "financial", "secure_code")
SEEDS = (0, 1, 2)
STEPS = tuple(range(0, 400, 50))
TRAITS = ("evil", "sycophantic", "humorous", "optimistic", "impolite", "apathetic", "hallucinating")


def synthetic_runs(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long drift and em-rate tables. EM datasets become dangerous after step 100 and their
    "evil" drift tracks the EM rate; the control dataset stays safe; other traits are noise."""
    rng = np.random.default_rng(seed)
    drift_rows, rate_rows = [], []
    for dataset in DATASETS:
        for run_seed in SEEDS:
            for step in STEPS:
                em_rate = 0.0 if dataset == "secure_code" or step <= 100 else 0.1 + step / 2000
                rate_rows.append((dataset, run_seed, step, em_rate))
                for trait in TRAITS:
                    value = rng.normal(0.0, 0.3)
                    if trait == "evil":
                        value += 20 * em_rate
                    drift_rows.append((dataset, run_seed, step, trait, value))
    drift = pd.DataFrame(drift_rows, columns=["dataset", "seed", "step", "trait", "drift"])
    rates = pd.DataFrame(rate_rows, columns=["dataset", "seed", "step", "em_rate"])
    return drift, rates


@pytest.fixture(scope="module")
def table() -> monitor.MonitorTable:
    drift, rates = synthetic_runs()
    return monitor.build_monitor_table(drift, rates, danger_threshold=0.05)


def test_build_monitor_table_aligns_rows(table):
    n_rows = len(DATASETS) * len(SEEDS) * len(STEPS)
    assert table.features.shape == (n_rows, len(TRAITS))
    assert set(table.features.columns) == set(TRAITS)
    assert list(table.groups.columns) == ["dataset", "seed", "step"]
    assert len(table.labels) == len(table.em_rate) == n_rows
    np.testing.assert_array_equal(table.labels, table.em_rate > 0.05)
    # Row alignment: control rows are never dangerous, and dangerous rows have large evil drift.
    assert not table.labels[table.groups["dataset"].to_numpy() == "secure_code"].any()
    assert table.features["evil"][table.labels].min() > 1.0


def test_build_monitor_table_rejects_missing_rate():
    drift, rates = synthetic_runs()
    with pytest.raises(KeyError, match="medical"):
        monitor.build_monitor_table(drift, rates[~((rates["dataset"] == "medical")
                                                   & (rates["step"] == 150))])
    with pytest.raises(KeyError, match="em_rate"):
        monitor.build_monitor_table(drift, rates.drop(columns="em_rate"))


@pytest.mark.parametrize("model", ["logistic", "ridge"])
def test_separable_features_give_high_logo_auroc(table, model):
    result = monitor.leave_one_group_out_eval(table.features, table.labels,
                                              table.groups["dataset"], model=model, n_boot=100)
    assert result["n_folds"] == len(DATASETS)
    assert result["auroc"] > 0.95
    assert result["auroc"] == pytest.approx(roc_auc_score(table.labels, result["oof_scores"]))
    assert result["fnr"] < 0.1 and result["fpr"] < 0.1
    low, high = result["auroc_ci"]
    assert low <= result["auroc"] <= high
    assert "training rows" in result["threshold"] and result["n_clusters"] == len(DATASETS)
    assert not np.isnan(result["oof_scores"]).any()
    assert result["one_class_folds"] == [] and result["undefined"] == {}


def test_random_forest_runs_with_dataset_and_seed_groups(table):
    result = monitor.leave_one_group_out_eval(table.features, table.labels,
                                              table.groups[["dataset", "seed"]],
                                              model="random_forest", n_boot=50,
                                              model_params={"n_estimators": 15})
    assert result["n_folds"] == len(DATASETS) * len(SEEDS)
    assert result["auroc"] > 0.95


def test_shuffled_labels_give_chance_auroc(table):
    aurocs = []
    for seed in range(4):
        shuffled = np.random.default_rng(seed).permutation(table.labels)
        result = monitor.leave_one_group_out_eval(table.features, shuffled,
                                                  table.groups["dataset"], seed=seed, n_boot=50)
        aurocs.append(result["auroc"])
    assert 0.3 < np.mean(aurocs) < 0.7


def test_one_class_training_fold_gets_constant_score():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(12, 3))
    labels = np.array([False] * 8 + [True] * 4)
    groups = np.array(["a"] * 4 + ["b"] * 4 + ["c"] * 4)  # every positive lives in group c
    for model, negative_constant in (("logistic", 0.0), ("ridge", -1.0)):
        result = monitor.leave_one_group_out_eval(features, labels, groups, model=model,
                                                  n_boot=50)
        assert result["one_class_folds"] == ["c"]
        np.testing.assert_array_equal(result["oof_scores"][8:], negative_constant)
        assert result["fnr"] == 1.0  # the held-out positives can only be called safe
        # The pooled AUROC would rank group c's constant against trained scores: undefined, named.
        assert math.isnan(result["auroc"]) and all(math.isnan(x) for x in result["auroc_ci"])
        assert "held-out c" in result["undefined"]["auroc"]


def test_single_class_pooled_labels_report_reason():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(9, 2))
    labels = np.zeros(9, dtype=bool)
    groups = np.repeat(["a", "b", "c"], 3)
    result = monitor.leave_one_group_out_eval(features, labels, groups, n_boot=20)
    assert math.isnan(result["auroc"]) and "auroc" in result["undefined"]
    assert math.isnan(result["fnr"]) and "fnr" in result["undefined"]
    assert all(math.isnan(x) for x in result["auroc_ci"])
    assert result["fpr"] == 0.0 and "fpr" not in result["undefined"]
    assert result["one_class_folds"] == ["a", "b", "c"]


def test_bad_inputs_are_rejected(table):
    with pytest.raises(ValueError, match="unknown model"):
        monitor.leave_one_group_out_eval(table.features, table.labels,
                                         table.groups["dataset"], model="svm")
    with pytest.raises(ValueError, match="two groups"):
        monitor.leave_one_group_out_eval(table.features, table.labels,
                                         np.zeros(len(table.labels)))


FIT_SIZES: list[int] = []


class RecordingPCA(baselines.PCAFeatures):
    """PCAFeatures that records how many rows each fit sees."""

    def fit(self, X, y=None):
        FIT_SIZES.append(len(X))
        return super().fit(X, y)


def test_pca_features_are_fitted_inside_each_fold(table):
    FIT_SIZES.clear()
    result = monitor.leave_one_group_out_eval(table.features, table.labels,
                                              table.groups["dataset"], n_boot=50,
                                              feature_step=RecordingPCA(k=2))
    rows_per_dataset = len(SEEDS) * len(STEPS)
    assert FIT_SIZES == [len(table.labels) - rows_per_dataset] * len(DATASETS)
    assert result["auroc"] > 0.9  # the dominant component is the evil drift
    assert baselines.pca_features(k=3).k == 3
    capped = baselines.PCAFeatures(k=50).fit(np.random.default_rng(0).normal(size=(5, 4)))
    assert capped.pca_.n_components_ == 4


def test_baseline_feature_builders():
    assert baselines.norm_drift(np.array([[3.0, 4.0], [0.0, 0.0]]))[:, 0].tolist() == [5.0, 0.0]
    features = np.array([[-2.0, 1.0], [3.0, 0.5]])
    np.testing.assert_allclose(baselines.AbsProjection(direction=np.array([2.0, 0.0])).fit_transform(features),
                               [[2.0], [3.0]])
    # Points on one line through the origin: PC1 is that line, |projection| = distance.
    along_line = np.outer([-1.0, 2.0, 3.0], [0.6, 0.8])
    np.testing.assert_allclose(baselines.AbsProjection().fit_transform(along_line), [[1.0], [2.0], [3.0]])
    identity = np.eye(6)
    random_features = baselines.random_direction_features(identity, k=3, seed=5)
    assert random_features.shape == (6, 3)
    np.testing.assert_allclose(np.linalg.norm(random_features, axis=0), 1.0)  # unit directions
    np.testing.assert_array_equal(random_features,
                                  baselines.random_direction_features(identity, k=3, seed=5))
    assert not np.allclose(random_features,
                           baselines.random_direction_features(identity, k=3, seed=6))
    with pytest.raises(ValueError):
        baselines.AbsProjection(direction=np.ones(3)).fit(features)


def test_spearman_matrix_known_correlations():
    checkpoints = pd.Index([f"run/{step}" for step in range(6)], name="checkpoint")
    trait_drift = pd.DataFrame({
        "evil": [0.0, 0.1, 0.3, 0.2, 0.8, 0.9],
        "helpful": [5.0, 4.0, 2.5, 3.0, 1.0, 0.0],  # ranks exactly reversed
        "flat": [1.0] * 6,
    }, index=checkpoints)
    behaviour = pd.DataFrame({"em_rate": [0.0, 0.01, 0.05, 0.03, 0.2, 0.3]},
                             index=checkpoints).iloc[::-1]  # rows in another order
    result = correlations.spearman_matrix(trait_drift, behaviour).set_index("trait")
    assert list(result.columns) == ["behaviour", "rho", "p_value", "n"]
    assert result.loc["evil", "rho"] == pytest.approx(1.0)
    assert result.loc["helpful", "rho"] == pytest.approx(-1.0)
    assert result.loc["evil", "p_value"] < 0.01
    assert math.isnan(result.loc["flat", "rho"])
    assert (result["n"] == 6).all()
    with pytest.raises(KeyError):
        correlations.spearman_matrix(trait_drift, behaviour.set_index(pd.Index(list("abcdef"))))


def _old_pooled_auroc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The monitor's resample AUROC as it was written inline before it moved to core.stats."""
    n_positive = labels.sum(axis=1)
    n_negative = labels.shape[1] - n_positive
    ranks = rankdata(scores, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = ((np.where(labels, ranks, 0.0).sum(axis=1) - n_positive * (n_positive + 1) / 2)
                 / (n_positive * n_negative))
    return np.where((n_positive == 0) | (n_negative == 0), np.nan, value)


def test_one_auroc_the_mann_whitney_form_everywhere():
    """The monitor's resamples, traits.auroc_by_column and the scalar auroc are one statistic, and
    the vectorised forms give bit-for-bit the numbers their former implementations gave."""
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, size=(200, 30)).astype(float)  # integer scores: many ties
    labels = rng.random((200, 30)) < 0.4
    labels[0], labels[1] = True, False                         # one-class resamples give nan
    pooled = monitor._pooled_metrics(labels, scores, scores > 2.0)[:, 0]
    np.testing.assert_array_equal(pooled, _old_pooled_auroc(labels, scores))
    assert np.isnan(pooled[:2]).all()
    for row in range(2, 20):
        assert pooled[row] == pytest.approx(roc_auc_score(labels[row], scores[row]))
        assert pooled[row] == pytest.approx(stats.auroc(scores[row][labels[row]], scores[row][~labels[row]]))
    positive, negative = rng.normal(size=(13, 7)).round(1), rng.normal(size=(9, 7)).round(1)
    by_column = traits.auroc_by_column(positive, negative)
    assert traits.auroc_by_column is stats.auroc_by_column
    np.testing.assert_array_equal(by_column, mannwhitneyu(positive, negative, axis=0, method="asymptotic").statistic
                                  / (13 * 9))
    np.testing.assert_allclose(by_column, [stats.auroc(positive[:, j], negative[:, j]) for j in range(7)])


def test_the_decision_threshold_comes_from_the_training_rows():
    """A monitor whose scores are all shifted on the held-out run still ranks it well (AUROC), and
    its FNR/FPR come from a threshold its training folds chose, not from 0.5."""
    labels = np.array([False] * 6 + [True] * 6)
    scores = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95])
    threshold = monitor.training_threshold(labels, scores)
    assert 0.45 < threshold < 0.6
    assert ((scores > threshold) == labels).all()
    # Ties and a perfect split at the top score.
    assert monitor.training_threshold(np.array([False, False, True]), np.array([0.2, 0.2, 0.9])) == pytest.approx(0.55)


def test_intervals_resample_whole_runs():
    """With clusters = runs, a run's checkpoints move together in every resample: a data set with
    two runs gives bootstrap draws made of 0, 1 or 2 copies of each run, never a row mix."""
    rng = np.random.default_rng(0)
    features = np.vstack([rng.normal(0, 1, (8, 3)), rng.normal(2, 1, (8, 3)), rng.normal(0, 1, (8, 3)),
                          rng.normal(2, 1, (8, 3))])
    labels = np.array(([False] * 4 + [True] * 4) * 4)
    groups = pd.DataFrame({"dataset": np.repeat(["a", "b"], 16), "seed": np.tile(np.repeat([0, 1], 8), 2)})
    by_run = monitor.leave_one_group_out_eval(features, labels, groups["dataset"], n_boot=200, clusters=groups)
    assert by_run["n_clusters"] == 4 and by_run["n_folds"] == 2  # folds hold out datasets, draws resample runs
    assert monitor.leave_one_group_out_eval(features, labels, groups["dataset"], n_boot=50)["n_clusters"] == 2
    low, high = by_run["auroc_ci"]
    assert low <= by_run["auroc"] <= high
