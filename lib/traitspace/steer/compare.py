"""Reading one direction against the trait vectors: signed cosines against a random-direction null,
and a least-squares reading in the trait basis. Pure functions: no model, no files.

Cosine null: ``n_random`` directions drawn uniformly on the sphere (isotropic Gaussian, normalised)
give the distribution of |cos| between the direction and a direction unrelated to it; a trait's
p-value is the share of random |cos| at least as large as its own ((k + 1) / (n + 1)), BH over the
vectors. The null is isotropic, while activation-space directions are not (mean differences share the
few large directions of the residual stream), so a cosine beyond it says "more aligned than chance in
this dimension", not "the same mechanism"; the trait-to-trait cosines of notebook 02 show how much
the trait vectors themselves overlap.

The least-squares reading (:func:`traitspace.core.seed_tests.activation_shift`, used with the
direction as the "shift") splits the direction between the overlapping trait vectors once and says
how much of it lies in their span, against the share a random direction would show (rank / hidden).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..core.seed_tests import ActivationShift, activation_shift
from ..core.stats import benjamini_hochberg

COSINE_COLUMNS = ["name", "cosine", "abs_cosine", "null_abs_q95", "p_value", "q_value", "beyond_null"]


def random_unit_vectors(n: int, hidden_size: int, seed: int = 0) -> np.ndarray:
    """``[n, hidden_size]`` directions uniform on the sphere."""
    draws = np.random.default_rng(seed).standard_normal((n, hidden_size))
    return draws / np.linalg.norm(draws, axis=1, keepdims=True)


def cosines_against_null(direction: np.ndarray, vectors: Mapping[str, np.ndarray], n_random: int = 1000,
                         seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """Signed cosine of ``direction [H]`` with each named vector ``[H]``, against the random null.

    Returns ``COSINE_COLUMNS``, sorted by |cosine|: ``null_abs_q95`` is the 95th percentile of |cos|
    with random directions, ``beyond_null`` the BH decision at ``alpha``.
    """
    direction = np.asarray(direction, dtype=float)
    unit = direction / np.linalg.norm(direction)
    names = list(vectors)
    matrix = np.stack([np.asarray(vectors[name], dtype=float) for name in names])
    cosines = matrix @ unit / np.linalg.norm(matrix, axis=1)
    null = np.abs(random_unit_vectors(n_random, unit.size, seed) @ unit)
    p_values = (1 + (null[None, :] >= np.abs(cosines)[:, None]).sum(axis=1)) / (n_random + 1)
    rejected, q_values = benjamini_hochberg(p_values, alpha=alpha)
    table = pd.DataFrame({"name": names, "cosine": cosines, "abs_cosine": np.abs(cosines),
                          "null_abs_q95": float(np.quantile(null, 0.95)), "p_value": p_values, "q_value": q_values,
                          "beyond_null": rejected})
    return table.sort_values("abs_cosine", ascending=False, kind="stable", ignore_index=True)[COSINE_COLUMNS]


def trait_basis_reading(direction: np.ndarray, basis: Mapping[str, np.ndarray], layer: int) -> ActivationShift:
    """Least squares of ``direction`` on the unit vectors in ``basis`` (name -> ``[H]``), as
    :func:`traitspace.core.seed_tests.activation_shift` reads the EM-minus-control shift: here the
    "shift" is the direction itself (one run, compared with the origin)."""
    direction = np.asarray(direction, dtype=float)
    runs = {("direction", 0, 0): {layer: direction}, ("origin", 0, 0): {layer: np.zeros_like(direction)}}
    return activation_shift(runs, "direction", "origin", 0, layer, basis)


def reading_table(reading: ActivationShift, top: int = 10) -> pd.DataFrame:
    """The reading's largest coefficients with the explained and chance shares beside them."""
    coefficients = reading.coefficients.head(top)
    return pd.DataFrame({"name": coefficients.index, "coefficient": coefficients.to_numpy(),
                         "explained_share": reading.explained_share, "chance_share": reading.chance_share})
