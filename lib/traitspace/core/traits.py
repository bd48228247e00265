"""The maths of trait directions: mean differences, the Assistant Axis, projections, held-out
separation per layer and layer selection.

Pure numpy/pandas: no model, no files. Shape names used in every docstring:

- ``n``: examples (one activation per conversation), ``n_pos`` / ``n_neg`` for the two sides;
- ``L``: layers (layer i = output of decoder block i, see :mod:`traitspace.core.hooks`);
- ``H``: hidden size (the residual-stream width);
- ``T``: traits.

A *direction* is the raw mean difference ``mean(positive) - mean(negative)`` per layer, shape
``[L, H]``, kept unnormalised (its norm says how far apart the two personas sit). A *projection* is
``activation . direction / |direction|``: signed, in the units of the residual stream, higher
meaning "more like the positive side" (for the Assistant Axis: more assistant-like).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from .stats import auroc_by_column  # the Mann-Whitney AUROC's vectorised form, re-exported

LayerRule = Literal["heldout", "middle"] | int


def _as_activations(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 3 or array.shape[0] == 0:
        raise ValueError(f"{name}: expected activations of shape [n, L, H] with n >= 1, got {array.shape}")
    return array


def mean_difference(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Trait direction per layer: ``mean(positive) - mean(negative)``.

    Args:
        positive: activations under the positive prompts, ``[n_pos, L, H]``.
        negative: activations under the negative prompts, ``[n_neg, L, H]``.

    Returns:
        ``[L, H]`` raw (unnormalised) difference of the two means.
    """
    positive = _as_activations(positive, "positive")
    negative = _as_activations(negative, "negative")
    if positive.shape[1:] != negative.shape[1:]:
        raise ValueError(f"positive {positive.shape} and negative {negative.shape} differ in [L, H]")
    return positive.mean(axis=0) - negative.mean(axis=0)


def assistant_axis(default: np.ndarray, roles: Sequence[np.ndarray]) -> np.ndarray:
    """The Assistant Axis per layer: mean activation under the default assistant prompts minus the
    mean over role personas.

    Every role counts once, however many conversations it has: the role side is the mean of the
    per-role means (a role with more prompts does not pull the axis towards itself).

    Args:
        default: activations under the default assistant prompts, ``[n_default, L, H]``.
        roles: one array per role, ``[n_role_i, L, H]`` each.

    Returns:
        ``[L, H]``; projecting onto it gives higher values for more assistant-like activations.
    """
    default = _as_activations(default, "default")
    if len(roles) == 0:
        raise ValueError("assistant_axis needs at least one role")
    role_means = np.stack([_as_activations(role, f"roles[{index}]").mean(axis=0) for index, role in enumerate(roles)])
    if role_means.shape[1:] != default.shape[1:]:
        raise ValueError(f"roles {role_means.shape[1:]} and default {default.shape[1:]} differ in [L, H]")
    return default.mean(axis=0) - role_means.mean(axis=0)


def unit_vectors(vectors: np.ndarray) -> np.ndarray:
    """Each vector divided by its norm along the last axis (``[..., H] -> [..., H]``).

    A zero vector has no direction and raises rather than silently turning into nan.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("cannot normalise a zero vector (the two sides had identical means)")
    return vectors / norms


def project(activations: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Scalar projection ``activation . direction / |direction|``.

    Two layouts:

    - one layer: ``activations [..., H]`` and ``direction [H]`` -> ``[...]``;
    - every layer at once: ``activations [..., L, H]`` and ``direction [L, H]`` -> ``[..., L]``
      (activation at layer l projected on the direction at layer l).
    """
    activations = np.asarray(activations, dtype=np.float64)
    direction = np.asarray(direction, dtype=np.float64)
    if direction.ndim not in (1, 2):
        raise ValueError(f"direction must be [H] or [L, H], got {direction.shape}")
    if activations.shape[-direction.ndim:] != direction.shape:
        raise ValueError(f"activations {activations.shape} do not end with the direction's shape {direction.shape}")
    return np.sum(activations * unit_vectors(direction), axis=-1)


def project_at_layers(activations, unit_vectors, trait_layers) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The one projection of pooled activations onto trait directions, each at its own layer.

    Used by the projection stage, the live monitor and :class:`TraitVectors`.

    Args:
        activations: ``{layer: [n, H]}`` (torch tensors or arrays) holding every needed layer.
        unit_vectors: ``{name: [H]}`` unit directions.
        trait_layers: ``{name: layer}``.

    Returns:
        ``(names, values [n, T], norms [n, T])`` in the order of ``unit_vectors``: ``values`` the
        scalar projections, ``norms`` the activation norm at each name's layer. One float32 matrix
        product per layer (names that share a layer are projected together).
    """
    import torch  # the activations come from torch; keep the product in torch's float32 kernels

    names = list(unit_vectors)
    by_layer: dict[int, list[int]] = {}
    for index, name in enumerate(names):
        layer = int(trait_layers[name])
        if layer not in activations:
            raise KeyError(f"{name} needs layer {layer}; captured layers: {sorted(activations)}")
        by_layer.setdefault(layer, []).append(index)
    n = len(next(iter(activations.values())))
    values = np.empty((n, len(names)), dtype=np.float32)
    norms = np.empty((n, len(names)), dtype=np.float32)
    for layer, indices in by_layer.items():
        acts = torch.as_tensor(activations[layer]).float()
        directions = torch.stack([torch.as_tensor(unit_vectors[names[i]]).float() for i in indices])  # [t, H]
        values[:, indices] = (acts @ directions.T).numpy()
        norms[:, indices] = acts.norm(dim=1).numpy()[:, None]
    return names, values, norms


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarities of ``[T, H]`` vectors -> ``[T, T]`` (diagonal 1)."""
    unit = unit_vectors(np.asarray(vectors, dtype=np.float64))
    if unit.ndim != 2:
        raise ValueError(f"expected [T, H] vectors, got {unit.shape}")
    return np.clip(unit @ unit.T, -1.0, 1.0)


def cosine_with(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine of each of ``[T, H]`` vectors with one ``[H]`` reference -> ``[T]``."""
    return np.clip(unit_vectors(vectors) @ unit_vectors(reference), -1.0, 1.0)


def cohens_d_by_column(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """:func:`traitspace.core.stats.cohens_d` of every column: ``[n_pos, L]``, ``[n_neg, L]`` -> ``[L]``
    (pooled sample SD; nan with fewer than two values a side or no spread)."""
    n_pos, n_neg = positive.shape[0], negative.shape[0]
    if n_pos < 2 or n_neg < 2:
        return np.full(positive.shape[1], np.nan)
    pooled_variance = ((n_pos - 1) * positive.var(axis=0, ddof=1)
                       + (n_neg - 1) * negative.var(axis=0, ddof=1)) / (n_pos + n_neg - 2)
    gap = positive.mean(axis=0) - negative.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pooled_variance > 0, gap / np.sqrt(pooled_variance), np.nan)


def layer_separation(positive_projections: np.ndarray, negative_projections: np.ndarray) -> pd.DataFrame:
    """How well projections separate the two sides, layer by layer.

    Args:
        positive_projections: ``[n_pos, L]`` projections of positive-side activations (usually
            held-out ones) onto each layer's direction.
        negative_projections: ``[n_neg, L]``, likewise for the negative side.

    Returns:
        One row per layer: ``layer``, ``auroc`` (0.5 = chance, 1 = every positive above every
        negative), ``cohens_d`` (standardised gap; nan with fewer than two examples a side or no
        spread) and ``mean_gap`` (mean positive minus mean negative projection). Same definitions
        as :func:`traitspace.core.stats.auroc` and :func:`traitspace.core.stats.cohens_d`.
    """
    positive = np.asarray(positive_projections, dtype=np.float64)
    negative = np.asarray(negative_projections, dtype=np.float64)
    if positive.ndim != 2 or negative.ndim != 2 or positive.shape[1] != negative.shape[1]:
        raise ValueError(f"expected [n_pos, L] and [n_neg, L] with the same L, got {positive.shape} and {negative.shape}")
    return pd.DataFrame({
        "layer": np.arange(positive.shape[1]),
        "auroc": auroc_by_column(positive, negative),
        "cohens_d": cohens_d_by_column(positive, negative),
        "mean_gap": positive.mean(axis=0) - negative.mean(axis=0),
    })


def _ranking_key(auroc_values: np.ndarray, cohens_d_values: np.ndarray) -> np.ndarray:
    """Order layers by AUROC, then by Cohen's d among ties (AUROC saturates at 1.0 on many layers
    for an easy trait; d still tells them apart). nan ranks last."""
    auroc_values = np.nan_to_num(np.asarray(auroc_values, dtype=np.float64), nan=-np.inf)
    cohens_d_values = np.nan_to_num(np.asarray(cohens_d_values, dtype=np.float64), nan=-np.inf)
    return np.lexsort((cohens_d_values, auroc_values))


def middle_layer(num_layers: int) -> int:
    """The "middle" layer, ``num_layers // 2``: the Assistant Axis release's choice for unknown
    models. The one definition, used by layer selection here and by ``layers: middle`` in capture."""
    return num_layers // 2


def select_layer(separation: pd.DataFrame, rule: LayerRule, num_layers: int) -> int:
    """The layer to use for a direction.

    Args:
        separation: table with columns ``layer``, ``auroc``, ``cohens_d`` (from
            :func:`layer_separation`); several traits' rows may be stacked (an extra ``trait``
            column), in which case layers are ranked by their mean over traits, giving one shared
            layer.
        rule: ``"heldout"`` (best held-out AUROC, ties broken by Cohen's d), ``"middle"``
            (``num_layers // 2``, the Assistant Axis release's choice for unknown models) or an int
            (negative counts from the end).
        num_layers: ``L``.

    Returns:
        A layer index in ``0 .. L-1``.
    """
    if rule == "middle":
        return middle_layer(num_layers)
    if isinstance(rule, (int, np.integer)) and not isinstance(rule, bool):
        layer = int(rule) + num_layers if rule < 0 else int(rule)
        if not 0 <= layer < num_layers:
            raise ValueError(f"layer {rule} out of range for a model with {num_layers} layers (0..{num_layers - 1})")
        return layer
    if rule != "heldout":
        raise ValueError(f"unknown layer rule {rule!r}; use 'heldout', 'middle' or an int")
    by_layer = separation.groupby("layer")[["auroc", "cohens_d"]].mean()
    order = _ranking_key(by_layer["auroc"].to_numpy(), by_layer["cohens_d"].to_numpy())
    return int(by_layer.index[order[-1]])


def split_heldout(n_items: int, heldout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split item indices ``0 .. n_items-1`` into fitting and held-out sets, at random.

    The held-out set has ``round(n_items * heldout_fraction)`` items, clamped so that both sets
    keep at least one. Returns ``(fit_indices, heldout_indices)``, each sorted.
    """
    if n_items < 2:
        raise ValueError(f"need at least 2 items to hold some out, got {n_items}")
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must lie in (0, 1), got {heldout_fraction}")
    n_heldout = min(max(int(round(n_items * heldout_fraction)), 1), n_items - 1)
    permutation = np.random.default_rng(seed).permutation(n_items)
    return np.sort(permutation[n_heldout:]), np.sort(permutation[:n_heldout])


def separates(auroc_value: float, threshold: float) -> bool:
    """A direction *separates* when its held-out AUROC reaches ``threshold`` (nan never does)."""
    return bool(not math.isnan(auroc_value) and auroc_value >= threshold)
