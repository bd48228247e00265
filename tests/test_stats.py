"""Tests for traitspace.core.stats on data whose answer is known in advance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint

from traitspace.core import stats


def test_bootstrap_interval_covers_true_mean_in_most_seeded_draws():
    true_mean = 1.5
    covered = 0
    n_repeats = 100
    for repeat in range(n_repeats):
        sample = np.random.default_rng(1000 + repeat).normal(true_mean, 1.0, size=40)
        mean, low, high = stats.bootstrap_mean_ci(sample, n_boot=300, seed=repeat)
        assert low <= mean <= high
        covered += low <= true_mean <= high
    # Nominal 95 %; percentile bootstrap at n=40 under-covers a little. 100 draws, so allow noise.
    assert 0.85 <= covered / n_repeats <= 1.0


def test_bootstrap_over_prompt_axis_of_2d_array_gives_one_interval_per_column():
    rng = np.random.default_rng(0)
    values = rng.normal([0.0, 5.0, -3.0], 0.5, size=(60, 3))  # prompts x traits
    mean, low, high = stats.bootstrap_mean_ci(values, n_boot=300, seed=1, axis=0)
    assert mean.shape == low.shape == high.shape == (3,)
    np.testing.assert_allclose(mean, values.mean(axis=0))
    assert np.all(low < mean) and np.all(mean < high)
    assert np.all(low < [0.0, 5.0, -3.0]) and np.all(high > [0.0, 5.0, -3.0])
    # Same interval along axis=1 of the transposed array.
    _, low_t, high_t = stats.bootstrap_mean_ci(values.T, n_boot=300, seed=1, axis=1)
    np.testing.assert_allclose(low_t, low)
    np.testing.assert_allclose(high_t, high)


def test_bootstrap_is_reproducible_and_single_value_collapses():
    sample = np.arange(10.0)
    assert stats.bootstrap_mean_ci(sample, n_boot=200, seed=3) == stats.bootstrap_mean_ci(
        sample, n_boot=200, seed=3)
    assert stats.bootstrap_mean_ci([2.0]) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError):
        stats.bootstrap_mean_ci([])


def test_paired_bootstrap_uses_pairing():
    rng = np.random.default_rng(5)
    prompt_effect = rng.normal(0, 10, size=50)  # huge between-prompt variation, shared by a and b
    a = prompt_effect + 0.3 + rng.normal(0, 0.05, size=50)
    b = prompt_effect
    diff, low, high = stats.paired_bootstrap_diff_ci(a, b, n_boot=300, seed=0)
    assert diff == pytest.approx(a.mean() - b.mean())
    # Pairing removes the prompt variation, so the interval is narrow and excludes 0.
    assert 0.25 < low < 0.3 < high < 0.35
    with pytest.raises(ValueError):
        stats.paired_bootstrap_diff_ci(a, b[:-1])


def test_permutation_test_detects_shift_and_not_null():
    rng = np.random.default_rng(2)
    base = rng.normal(0, 1, size=30)
    shifted = base + 1.0 + rng.normal(0, 0.3, size=30)
    assert stats.permutation_test_diff(shifted, base, n_perm=500, seed=0) < 0.01
    assert stats.permutation_test_diff(shifted, base, n_perm=500, seed=0, paired=False) < 0.01
    null_b = base + rng.normal(0, 0.3, size=30)
    assert stats.permutation_test_diff(null_b, base, n_perm=500, seed=0) > 0.05


def test_permutation_test_exact_for_small_paired_sample():
    # Five positive differences: of 2^5 sign patterns only all-plus and all-minus are as extreme.
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    b = np.zeros(5)
    assert stats.permutation_test_diff(a, b, n_perm=1000, seed=0) == pytest.approx(2 / 32)


def test_permutation_test_runs_per_column():
    rng = np.random.default_rng(3)
    b = rng.normal(0, 1, size=(25, 2))
    a = b + np.array([2.0, 0.0]) + rng.normal(0, 0.5, size=(25, 2))
    p = stats.permutation_test_diff(a, b, n_perm=300, seed=1, axis=0)
    assert p.shape == (2,)
    assert p[0] < 0.01 < p[1]


def test_benjamini_hochberg_hand_checked_example():
    p = np.array([0.01, 0.04, 0.03, 0.20])
    # Sorted p: 0.01, 0.03, 0.04, 0.20 -> p*m/rank = 0.04, 0.06, 0.0533, 0.20;
    # step-up minimum from the top: 0.04, 0.0533, 0.0533, 0.20.
    rejected, q = stats.benjamini_hochberg(p, alpha=0.05)
    np.testing.assert_allclose(q, [0.04, 0.16 / 3, 0.16 / 3, 0.20])
    np.testing.assert_array_equal(rejected, [True, False, False, False])
    rejected_10, _ = stats.benjamini_hochberg(p, alpha=0.10)
    np.testing.assert_array_equal(rejected_10, [True, True, True, False])


def test_benjamini_hochberg_leaves_nan_out():
    rejected, q = stats.benjamini_hochberg([0.01, np.nan, 0.04])
    assert math.isnan(q[1]) and not rejected[1]
    np.testing.assert_allclose(q[[0, 2]], [0.02, 0.04])


def test_wilson_matches_statsmodels_and_known_values():
    rate, low, high = stats.wilson_interval(5, 20)
    expected_low, expected_high = proportion_confint(5, 20, alpha=0.05, method="wilson")
    assert (rate, low, high) == pytest.approx((0.25, expected_low, expected_high))
    # Textbook value: 0 of 10 gives Wilson 95 % interval (0, 0.2775).
    rate, low, high = stats.wilson_interval(0, 10)
    assert rate == 0.0 and low == pytest.approx(0.0, abs=1e-12)
    assert high == pytest.approx(0.2775, abs=1e-4)
    assert all(math.isnan(x) for x in stats.wilson_interval(0, 0))
    with pytest.raises(ValueError):
        stats.wilson_interval(3, 2)


def test_cohens_d_and_auroc_known_values():
    pos = np.array([2.0, 3.0, 4.0])
    neg = np.array([0.0, 1.0, 2.0])
    # Means differ by 2, both sample SDs are 1.
    assert stats.cohens_d(pos, neg) == pytest.approx(2.0)
    assert stats.cohens_d(neg, pos) == pytest.approx(-2.0)
    assert math.isnan(stats.cohens_d([1.0], neg))
    # Pairs (pos, neg): 9 in total, 2 vs 2 tie (half), everything else pos > neg.
    assert stats.auroc(pos, neg) == pytest.approx(8.5 / 9)
    assert stats.auroc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert math.isnan(stats.auroc([], neg))


def test_first_crossing_on_known_series():
    steps = [0, 50, 100, 150, 200, 250]
    values = [0.0, 0.6, 0.2, 0.7, 0.8, 0.9]
    assert stats.first_crossing(steps, values, threshold=0.5) == 50
    assert stats.first_crossing(steps, values, threshold=0.5, persist=2) == 150
    assert stats.first_crossing(steps, values, threshold=0.5, persist=3) == 150
    assert stats.first_crossing(steps, values, threshold=0.5, persist=4) is None
    assert stats.first_crossing(steps, values, threshold=0.95) is None
    # Order of input does not matter; exactly at the threshold is not above it.
    assert stats.first_crossing(steps[::-1], values[::-1], threshold=0.5, persist=2) == 150
    assert stats.first_crossing([0, 1], [0.5, 0.6], threshold=0.5) == 1
    assert stats.first_crossing([0, 1, 2], [0.9, np.nan, 0.9], threshold=0.5, persist=2) is None


def test_control_threshold_methods():
    control = np.array([0.0, 0.1, -0.2, 0.1])
    assert stats.control_threshold(control, "step_spread", k=2.0) == pytest.approx(
        2.0 * np.std(control, ddof=1))
    assert stats.control_threshold(control, "max_abs", k=3.0) == pytest.approx(0.6)
    by_trait = np.column_stack([control, 2 * control])
    np.testing.assert_allclose(stats.control_threshold(by_trait, "max_abs", k=1.0), [0.2, 0.4])
    assert math.isnan(stats.control_threshold([0.3], "step_spread"))
    with pytest.raises(ValueError):
        stats.control_threshold(control, "median")


def test_cluster_bootstrap_is_wider_than_wilson_when_answers_repeat_a_question():
    from traitspace.core.stats import cluster_bootstrap_ratio, wilson_interval

    # 10 questions x 6 answers; a question's answers agree with each other (the usual case at
    # temperature 1 on a small model): 3 questions all misaligned, 7 all aligned.
    hits = np.array([6.0] * 3 + [0.0] * 7)
    counted = np.full(10, 6.0)
    rate, low, high = cluster_bootstrap_ratio(hits, counted, n_boot=2000, seed=0)
    wilson_rate, wilson_low, wilson_high = wilson_interval(18, 60)
    assert rate == wilson_rate == 0.3
    assert high - low > 1.5 * (wilson_high - wilson_low)
    assert low < rate < high
    assert np.isnan(cluster_bootstrap_ratio([0.0], [0.0])[0])
