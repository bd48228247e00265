"""The feature sets a drift monitor is evaluated on: the trait library's drift, the alignment
traits, and the baselines the trait profile has to beat (|PC1| of trait drift, activation-norm
drift, random directions and principal components of the raw activation drift).

Baselines that learn from data are sklearn transformers, fitted inside each training fold by
:func:`traitspace.findings.monitor.leave_one_group_out_eval`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA


class AbsProjection(BaseEstimator, TransformerMixin):
    """|projection| of each row onto one direction, as a single feature (rows, 1).

    direction: shape (features,), normalised to unit length; None means "first principal
    component of the training rows", fitted in ``fit`` so it stays inside a CV fold. Rows are
    projected without centring, because drift is already measured from the base model (0).
    """

    def __init__(self, direction: np.ndarray | None = None):
        self.direction = direction

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> "AbsProjection":
        X = np.asarray(X, dtype=float)
        if self.direction is None:
            axis = PCA(n_components=1).fit(X).components_[0]
        else:
            axis = np.asarray(self.direction, dtype=float)
            if axis.shape != (X.shape[1],):
                raise ValueError(f"AbsProjection: direction has shape {axis.shape}, "
                                 f"features have {X.shape[1]} columns")
        norm = np.linalg.norm(axis)
        if norm == 0:
            raise ValueError("AbsProjection: direction is the zero vector")
        self.unit_direction_ = axis / norm
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return np.abs(np.asarray(X, dtype=float) @ self.unit_direction_)[:, None]


def norm_drift(features: np.ndarray | pd.DataFrame) -> np.ndarray:
    """Baseline: overall size of the drift, the L2 norm of each row.

    Args:
        features: shape (rows, dims): trait drift, or raw activation drift from step 0.

    Returns:
        shape (rows, 1).
    """
    return np.linalg.norm(np.asarray(features, dtype=float), axis=1)[:, None]


def random_direction_features(activations_or_features: np.ndarray | pd.DataFrame, k: int = 7,
                              seed: int = 0) -> np.ndarray:
    """Baseline: projections onto k random unit directions (Gaussian, then normalised).

    The directions are drawn independently of the data, so computing this on all rows leaks
    nothing across folds. Compare with k trait directions to ask whether traits beat chance.

    Args:
        activations_or_features: shape (rows, dims).
        k: number of random directions.
        seed: seed of the Generator that draws them.

    Returns:
        shape (rows, k).
    """
    data = np.asarray(activations_or_features, dtype=float)
    if data.ndim != 2:
        raise ValueError(f"random_direction_features: expected (rows, dims), got {data.shape}")
    directions = np.random.default_rng(seed).standard_normal((data.shape[1], k))
    directions /= np.linalg.norm(directions, axis=0, keepdims=True)
    return data @ directions


class PCAFeatures(BaseEstimator, TransformerMixin):
    """Baseline: the top k principal components of the training rows, as a pipeline step.

    Fitting happens in ``fit`` so that, inside :func:`.monitor.leave_one_group_out_eval`, the components
    come from the training fold only. k is capped at min(rows, features) of the training fold.
    """

    def __init__(self, k: int = 7):
        self.k = k

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> "PCAFeatures":
        X = np.asarray(X, dtype=float)
        self.pca_ = PCA(n_components=min(self.k, *X.shape)).fit(X)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return self.pca_.transform(np.asarray(X, dtype=float))


def pca_features(k: int = 7) -> PCAFeatures:
    """A :class:`PCAFeatures` step (k components) to pass as ``feature_step``."""
    return PCAFeatures(k=k)


def raw_activation_drift(mean_activations: dict[tuple[str, int], dict[int, "object"]], layer: int) -> pd.DataFrame:
    """Mean raw activation at ``layer`` minus the condition's step-0 mean, one row per checkpoint
    (columns condition, step, dim_0..dim_{hidden-1})."""
    rows = []
    for (condition, step), layers in sorted(mean_activations.items()):
        base = mean_activations[(condition, 0)][layer]
        rows.append({"condition": condition, "step": step, **{
            f"dim_{index}": value for index, value in enumerate((layers[layer] - base).tolist())}})
    return pd.DataFrame(rows)


def monitor_feature_sets(
    features: pd.DataFrame,
    raw_drift: pd.DataFrame | None,
    alignment_traits: Sequence[str],
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, object | None]]:
    """Named feature sets with an optional in-fold transformer: the trait library, the 7
    alignment traits, and the baselines (|PC1| drift, activation-norm drift, random 7-D
    directions and PCA-7 of raw activation drift). ``features`` and ``raw_drift`` rows align."""
    trait_columns = [column for column in features.columns if column != "assistant_axis"]
    sets: dict[str, tuple[np.ndarray, object | None]] = {
        f"trait library ({len(trait_columns)} traits)": (features[trait_columns].to_numpy(), None),
        "|PC1| of trait drift": (features[trait_columns].to_numpy(), AbsProjection()),
    }
    aligned = [trait for trait in alignment_traits if trait in features.columns]
    if aligned:
        sets[f"alignment traits ({len(aligned)})"] = (features[aligned].to_numpy(), None)
        # Paper 001's monitor: |PC1| of the alignment cluster's drift (beside the library-wide PC1).
        sets["|PC1| of alignment-trait drift"] = (features[aligned].to_numpy(), AbsProjection())
    if raw_drift is not None:
        raw = raw_drift.to_numpy(dtype=float)
        sets["activation-norm drift"] = (norm_drift(raw).reshape(-1, 1), None)
        sets["random 7-D directions"] = (random_direction_features(raw, k=7, seed=seed), None)
        sets["PCA-7 of raw activations"] = (raw, pca_features(k=min(7, raw.shape[0] - 1, raw.shape[1])))
    return sets
