"""Uncertainty and significance for trait-space measurements: bootstrap intervals, permutation
tests, false-discovery control, binomial intervals, effect sizes and threshold crossings.

Every function is pure (arrays in, numbers out) and every random draw comes from a numpy
Generator seeded by the caller, so a notebook re-run reproduces the same intervals and p-values.
Shapes use ``n`` for the resampled axis (usually prompts) and ``...`` for any other axes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats
from sklearn.metrics import roc_auc_score
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

ArrayOrFloat = np.ndarray | float

# scipy evaluates resamples in batches of this many so that a prompts x traits matrix with
# thousands of resamples never materialises as one huge array.
_RESAMPLE_BATCH = 200


def _mean_along(values: np.ndarray, axis: int) -> np.ndarray:
    return np.mean(values, axis=axis)


def bootstrap_mean_ci(
    values: np.ndarray | Sequence[float],
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    axis: int = 0,
) -> tuple[ArrayOrFloat, ArrayOrFloat, ArrayOrFloat]:
    """Percentile-bootstrap interval for the mean along one axis.

    Args:
        values: array of shape (n, ...) when axis=0; the mean and its interval are taken over
            ``axis`` (e.g. prompts) independently for every other position (e.g. traits).
        n_boot: number of bootstrap resamples.
        ci: confidence level of the two-sided percentile interval.
        seed: seed of the numpy Generator that draws the resamples.
        axis: the axis that is resampled.

    Returns:
        (mean, low, high), each of shape ``values.shape`` without ``axis`` (a float for 1-D
        input). With a single observation along ``axis`` the interval collapses to the value.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim == 0 or values.shape[axis] == 0:
        raise ValueError(f"bootstrap_mean_ci: need at least one value along axis {axis}, "
                         f"got shape {values.shape}")
    if not 0 < ci < 1:
        raise ValueError(f"bootstrap_mean_ci: ci must lie in (0, 1), got {ci}")
    mean = np.mean(values, axis=axis)
    if values.shape[axis] == 1:
        # One observation has no spread to resample; scipy would return nan with a warning.
        return _scalar_or_array(mean), _scalar_or_array(mean), _scalar_or_array(mean)
    result = scipy_stats.bootstrap(
        (values,),
        _mean_along,
        n_resamples=n_boot,
        batch=_RESAMPLE_BATCH,
        axis=axis,
        vectorized=True,
        confidence_level=ci,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return _scalar_or_array(mean), _scalar_or_array(low), _scalar_or_array(high)


def paired_bootstrap_diff_ci(
    a: np.ndarray | Sequence[float],
    b: np.ndarray | Sequence[float],
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    axis: int = 0,
) -> tuple[ArrayOrFloat, ArrayOrFloat, ArrayOrFloat]:
    """Percentile-bootstrap interval for mean(a) - mean(b) with observations paired by position.

    Pairing means row i of ``a`` and row i of ``b`` come from the same prompt, so whole pairs
    are resampled together; this equals bootstrapping the per-prompt difference a - b.

    Args:
        a, b: arrays of identical shape (n, ...) (when axis=0).
        n_boot, ci, seed, axis: as in :func:`bootstrap_mean_ci`.

    Returns:
        (difference, low, high), each of shape ``a.shape`` without ``axis``.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired_bootstrap_diff_ci: paired arrays need one shape, "
                         f"got a{a.shape} and b{b.shape}")
    return bootstrap_mean_ci(a - b, n_boot=n_boot, ci=ci, seed=seed, axis=axis)


def permutation_test_diff(
    a: np.ndarray | Sequence[float],
    b: np.ndarray | Sequence[float],
    n_perm: int = 2000,
    seed: int = 0,
    paired: bool = True,
    axis: int = 0,
) -> ArrayOrFloat:
    """Two-sided permutation p-value for mean(a) - mean(b) != 0.

    Paired (the default): a[i] and b[i] share a prompt; each permutation swaps a and b within
    a random subset of pairs, i.e. flips the sign of the per-prompt difference. Unpaired: the
    pooled observations are reshuffled between the two groups.

    scipy enumerates every permutation exactly when there are no more than ``n_perm`` of them;
    otherwise it draws ``n_perm`` at random and adds one to numerator and denominator, so a
    random-draw p-value is never exactly 0.

    Args:
        a: array of shape (n_a, ...) (when axis=0).
        b: array of shape (n_b, ...); n_b == n_a and same shape when paired.
        n_perm: number of random permutations.
        seed: seed of the numpy Generator that draws them.
        paired: sign-flip test on paired observations versus a two-sample shuffle.
        axis: the observation axis; the test is run independently at every other position.

    Returns:
        p-value(s) of shape ``a.shape`` without ``axis`` (a float for 1-D input).
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if paired and a.shape != b.shape:
        raise ValueError(f"permutation_test_diff: paired arrays need one shape, "
                         f"got a{a.shape} and b{b.shape}")

    def mean_difference(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
        return np.mean(x, axis=axis) - np.mean(y, axis=axis)

    result = scipy_stats.permutation_test(
        (a, b),
        mean_difference,
        permutation_type="samples" if paired else "independent",
        vectorized=True,
        n_resamples=n_perm,
        batch=_RESAMPLE_BATCH,
        alternative="two-sided",
        axis=axis,
        rng=np.random.default_rng(seed),
    )
    return _scalar_or_array(result.pvalue)


def benjamini_hochberg(
    p_values: np.ndarray | Sequence[float], alpha: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini-Hochberg false-discovery-rate control (statsmodels ``fdr_bh``).

    Args:
        p_values: array of shape (m,); nan entries (untestable hypotheses) are left out of the
            correction and come back as q = nan, rejected = False.
        alpha: target false discovery rate.

    Returns:
        (rejected, q_values): bool array of shape (m,) and the BH-adjusted p-values, shape (m,).
    """
    p_values = np.asarray(p_values, dtype=float)
    if p_values.ndim != 1:
        raise ValueError(f"benjamini_hochberg: expected a 1-D array of p-values, "
                         f"got shape {p_values.shape}")
    rejected = np.zeros(p_values.shape, dtype=bool)
    q_values = np.full(p_values.shape, np.nan)
    testable = ~np.isnan(p_values)
    if testable.any():
        rejected_testable, q_testable, _, _ = multipletests(
            p_values[testable], alpha=alpha, method="fdr_bh"
        )
        rejected[testable] = rejected_testable
        q_values[testable] = q_testable
    return rejected, q_values


def cluster_bootstrap_ratio(numerators: Sequence[float], denominators: Sequence[float], n_boot: int = 1000,
                            seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """sum(numerators) / sum(denominators) with a percentile interval from resampling the clusters
    (one entry per cluster, e.g. per question whose answers repeat), because answers to one question
    are not independent draws. (nan, nan, nan) when the denominators sum to 0."""
    numerators, denominators = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    total = denominators.sum()
    if total == 0:
        return (float("nan"),) * 3
    draws = np.random.default_rng(seed).integers(0, len(numerators), size=(n_boot, len(numerators)))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = numerators[draws].sum(axis=1) / denominators[draws].sum(axis=1)
    ratios = ratios[np.isfinite(ratios)]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(ratios, [tail, 100 - tail]) if ratios.size else (np.nan, np.nan)
    return float(numerators.sum() / total), float(low), float(high)


def fieller_ratio_interval(numerators: Sequence[float], denominators: Sequence[float], level: float = 0.95
                           ) -> tuple[float, float, float]:
    """mean(numerators) / mean(denominators) with Fieller's interval, for paired values of a few
    independent units (training seeds): the set of ratios R for which mean(n) - R mean(d) = 0 is not
    rejected by a t-test on n_i - R d_i with units - 1 degrees of freedom.

    Written here because neither scipy nor statsmodels offers it, and the alternative, a percentile
    bootstrap over units, is degenerate with the two or three seeds a CPU run has (two seeds give at
    most three distinct resampled means, an interval far narrower than the data support). With few
    units Fieller's interval is wide, as it should be; when the denominator's mean is not clearly away
    from 0 the set is unbounded and the ends are -inf and +inf. NaN ends with fewer than two units;
    everything NaN when the denominators' mean is 0.
    """
    numerators, denominators = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    if numerators.shape != denominators.shape or numerators.ndim != 1:
        raise ValueError(f"fieller_ratio_interval: need two equal 1-D arrays, got {numerators.shape} and {denominators.shape}")
    n = numerators.size
    mean_n, mean_d = (float(numerators.mean()), float(denominators.mean())) if n else (0.0, 0.0)
    if mean_d == 0:
        return (float("nan"),) * 3
    ratio = mean_n / mean_d
    if n < 2:
        return ratio, float("nan"), float("nan")
    covariance = np.cov(numerators, denominators, ddof=1)
    q = scipy_stats.t.ppf(0.5 + level / 2, n - 1) ** 2 / n
    # The R with (mean_n - R mean_d)^2 <= q var(n_i - R d_i): the quadratic A R^2 - 2 B R + C <= 0.
    a = mean_d ** 2 - q * covariance[1, 1]
    b = mean_n * mean_d - q * covariance[0, 1]
    c = mean_n ** 2 - q * covariance[0, 0]
    if a <= 0:  # the denominator's mean is not significantly non-zero: the set is unbounded
        return ratio, float("-inf"), float("inf")
    half = np.sqrt(max(b * b - a * c, 0.0))  # >= 0 whenever a > 0 (the estimate lies in the set)
    return ratio, float((b - half) / a), float((b + half) / a)


def wilson_interval(k: int, n: int, alpha: float = 0.05) -> tuple[float, float, float]:
    """Observed rate k / n with its Wilson score interval (statsmodels ``proportion_confint``).

    Args:
        k: number of successes (e.g. misaligned answers), 0 <= k <= n.
        n: number of trials; n == 0 gives (nan, nan, nan) because no rate was observed.
        alpha: 1 - confidence level.

    Returns:
        (rate, low, high) as floats.
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson_interval: need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    low, high = proportion_confint(k, n, alpha=alpha, method="wilson")
    return k / n, float(low), float(high)


def cohens_d(pos: np.ndarray | Sequence[float], neg: np.ndarray | Sequence[float]) -> float:
    """Standardised mean difference (mean(pos) - mean(neg)) / pooled standard deviation.

    The pooled SD weights each group's sample variance (ddof=1) by its degrees of freedom.
    Returns nan when either group has fewer than two values or the pooled SD is zero.

    Args:
        pos: shape (n_pos,).
        neg: shape (n_neg,).
    """
    pos = np.asarray(pos, dtype=float).ravel()
    neg = np.asarray(neg, dtype=float).ravel()
    if pos.size < 2 or neg.size < 2:
        return float("nan")
    pooled_variance = (
        (pos.size - 1) * np.var(pos, ddof=1) + (neg.size - 1) * np.var(neg, ddof=1)
    ) / (pos.size + neg.size - 2)
    if pooled_variance == 0:
        return float("nan")
    return float((pos.mean() - neg.mean()) / np.sqrt(pooled_variance))


def auroc(pos_scores: np.ndarray | Sequence[float], neg_scores: np.ndarray | Sequence[float]) -> float:
    """Area under the ROC curve for separating positives (should score higher) from negatives.

    One pair of score sets at a time (sklearn's trapezoid, kept so the judge-validity tables stay
    bit-identical); :func:`mann_whitney_auroc` is the same statistic vectorised.

    Args:
        pos_scores: shape (n_pos,).
        neg_scores: shape (n_neg,).

    Returns:
        AUROC in [0, 1] (0.5 = chance); nan when either group is empty.
    """
    pos_scores = np.asarray(pos_scores, dtype=float).ravel()
    neg_scores = np.asarray(neg_scores, dtype=float).ravel()
    if pos_scores.size == 0 or neg_scores.size == 0:
        return float("nan")
    labels = np.concatenate([np.ones(pos_scores.size), np.zeros(neg_scores.size)])
    return float(roc_auc_score(labels, np.concatenate([pos_scores, neg_scores])))


def mann_whitney_auroc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC along the last axis in its Mann-Whitney form: the probability that a positive outscores a
    negative, ties counting one half, i.e. (rank sum of positives - n_pos (n_pos + 1) / 2) / (n_pos n_neg)
    with average ranks. The one vectorised implementation (:func:`auroc_by_column`, the drift
    monitor's bootstrap resamples); equal to :func:`auroc` up to float rounding.

    Args:
        labels: bool, shape (..., n), True = positive.
        scores: shape (..., n), higher = more positive.

    Returns:
        shape (...); nan where a row lacks positives or negatives.
    """
    labels = np.asarray(labels, dtype=bool)
    n_positive = labels.sum(axis=-1)
    n_negative = labels.shape[-1] - n_positive
    ranks = scipy_stats.rankdata(scores, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = ((np.where(labels, ranks, 0.0).sum(axis=-1) - n_positive * (n_positive + 1) / 2)
                 / (n_positive * n_negative))
    return np.where((n_positive == 0) | (n_negative == 0), np.nan, value)


def auroc_by_column(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """AUROC of every column at once: ``[n_pos, L]`` and ``[n_neg, L]`` -> ``[L]``.

    :func:`mann_whitney_auroc` with the positives first in each column, vectorised over columns
    (layers): scanning 30 layers x 250 traits one ``roc_auc_score`` call at a time costs ~30 s.
    nan for an empty side.
    """
    n_pos, n_neg = positive.shape[0], negative.shape[0]
    if n_pos == 0 or n_neg == 0:
        return np.full(positive.shape[1], np.nan)
    labels = np.arange(n_pos + n_neg) < n_pos
    return mann_whitney_auroc(labels, np.concatenate([positive, negative], axis=0).T)


def first_crossing(
    steps: np.ndarray | Sequence[int],
    values: np.ndarray | Sequence[float],
    threshold: float,
    persist: int = 1,
) -> int | None:
    """First step whose value exceeds ``threshold`` and stays above it.

    The series is sorted by step first. A step qualifies when it and the next ``persist - 1``
    observed steps all have value > threshold (strictly; nan never counts as above). A run
    that is cut short by the end of the series does not qualify, because persistence was not
    observed.

    Args:
        steps: shape (n,), checkpoint steps (any order, no duplicates).
        values: shape (n,), the monitored quantity at each step.
        threshold: level to exceed.
        persist: number of consecutive observed steps that must be above threshold (>= 1).

    Returns:
        The qualifying step (as int), or None if the series never crosses persistently.
    """
    steps = np.asarray(steps)
    values = np.asarray(values, dtype=float)
    if steps.shape != values.shape or steps.ndim != 1:
        raise ValueError(f"first_crossing: steps and values must be 1-D and of one length, "
                         f"got {steps.shape} and {values.shape}")
    if persist < 1:
        raise ValueError(f"first_crossing: persist must be >= 1, got {persist}")
    if len(np.unique(steps)) != len(steps):
        raise ValueError("first_crossing: steps contain duplicates")
    order = np.argsort(steps, kind="stable")
    above = values[order] > threshold  # nan > x is False
    if above.size < persist:
        return None
    # windows[i] is True when steps i .. i+persist-1 are all above threshold.
    windows = np.lib.stride_tricks.sliding_window_view(above, persist).all(axis=1)
    hits = np.flatnonzero(windows)
    if hits.size == 0:
        return None
    return int(steps[order][hits[0]])


def control_threshold(
    control_values_by_step: np.ndarray | pd.Series | Sequence[float],
    method: Literal["step_spread", "max_abs"] = "step_spread",
    k: float = 2.0,
) -> ArrayOrFloat:
    """Detection threshold derived from how much the control condition moves on its own.

    The control run sees matched but benign data, so whatever its measurement does across
    checkpoints is the noise floor an EM effect has to clear.

    Methods (values are taken over the step axis, axis 0, ignoring nan):
        "step_spread": k x the sample standard deviation (ddof=1) of the control's values
            across its steps, i.e. how widely it wanders between checkpoints.
        "max_abs": k x the largest absolute value the control reaches at any step, i.e. its
            worst-case excursion from zero (appropriate for drift, which is 0 at step 0).

    Args:
        control_values_by_step: shape (steps,) or (steps, traits); a pandas Series/DataFrame
            indexed by step also works.
        method: "step_spread" or "max_abs".
        k: multiplier.

    Returns:
        A float for 1-D input, else an array of shape (traits,). "step_spread" with fewer than
        two non-nan steps gives nan.
    """
    values = np.asarray(control_values_by_step, dtype=float)
    if values.ndim not in (1, 2) or values.shape[0] == 0:
        raise ValueError(f"control_threshold: expected shape (steps,) or (steps, traits) with "
                         f"at least one step, got {values.shape}")
    if method == "step_spread":
        by_column = values.reshape(values.shape[0], -1)
        spread = np.full(by_column.shape[1], np.nan)
        enough_steps = np.sum(~np.isnan(by_column), axis=0) >= 2
        spread[enough_steps] = np.nanstd(by_column[:, enough_steps], axis=0, ddof=1)
        return _scalar_or_array(k * spread.reshape(values.shape[1:]))
    if method == "max_abs":
        return _scalar_or_array(k * np.nanmax(np.abs(values), axis=0))
    raise ValueError(f"control_threshold: unknown method {method!r}; "
                     f"use 'step_spread' or 'max_abs'")


def _scalar_or_array(values: np.ndarray | float) -> ArrayOrFloat:
    """0-d results come back as plain floats so 1-D callers get numbers, not arrays."""
    values = np.asarray(values, dtype=float)
    return float(values) if values.ndim == 0 else values
