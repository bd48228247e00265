"""Held-out instructions: how well a direction separates its two sides on instruction pairs *and*
questions that did not fit it, with the layer chosen without looking at the rows it is scored on.

The held-out-questions check (:mod:`.fit`) fits a direction on every instruction pair and scores it
on other questions under the *same* prompts: a direction that only recognises the wording of its own
prompts passes it. Here the rows of one vector (a trait or a control contrast) are split by
scikit-learn's ``GroupKFold`` over the instruction pair (``prompt_index``), one fold per pair. A
fold's direction is the mean difference on the other pairs' fitting questions; its test rows are
the held-out pair's held-out questions, so neither the instruction nor the question was seen.

The layer of a fold is chosen in an *inner* split of the fold's training rows only: an inner
GroupKFold over the training pairs when there are two or more, crossed with a second split of the
fitting questions (``extract.heldout_fraction`` of them held out again). A fold's AUROC is therefore
never computed on rows that chose its layer. With ``layer_scope: shared`` the fold's layer is the
best inner separation averaged over the real traits (controls never pick layers); with
``per_trait`` each vector uses its own. The reported AUROC is the mean over folds.

With a single instruction pair nothing can be held out: the measure is nan, never faked. The
Assistant Axis has no instruction pairs and is scored on held-out questions only.

Numpy, pandas and scikit-learn on captured activations; no model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold

from ..core import traits as trait_math

FOLD_COLUMNS = ["trait", "kind", "heldout_pair", "layer", "auroc", "cohens_d", "n_test_positive", "n_test_negative"]
NO_FOLDS_NOTE = ("held-out instructions need at least 2 instruction pairs (extract.n_instruction_pairs); "
                 "with one pair the measure is nan")


@dataclass
class InstructionFold:
    """One fold of one vector: the held-out pair, the inner separation that picks the layer
    (None when the training rows cannot be split again), and the separation on the test rows."""

    heldout_pair: int
    inner: pd.DataFrame | None  # layer, auroc, cohens_d, mean_gap: mean over the inner folds
    test: pd.DataFrame  # layer, auroc, cohens_d, mean_gap on the fold's test rows
    n_test_positive: int
    n_test_negative: int


def _both_sides(mask: np.ndarray, positive: np.ndarray) -> bool:
    return bool((mask & positive).any() and (mask & ~positive).any())


def _separation(activations: np.ndarray, positive: np.ndarray, fit: np.ndarray, score: np.ndarray) -> pd.DataFrame:
    """Separation per layer of the ``score`` rows on the mean difference of the ``fit`` rows."""
    direction = trait_math.mean_difference(activations[fit & positive], activations[fit & ~positive])
    projections = trait_math.project(activations[score], direction)  # [n_score, L]
    side = positive[score]
    return trait_math.layer_separation(projections[side], projections[~side])


def _leave_one_pair_out(mask: np.ndarray, pairs: np.ndarray) -> Iterable[tuple[int, np.ndarray, np.ndarray]]:
    """``(held-out pair, rows of the other pairs, rows of that pair)`` within ``mask``, one per pair
    (GroupKFold with as many splits as pairs)."""
    index = np.flatnonzero(mask)
    groups = pairs[index]
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        return
    for train, test in GroupKFold(n_splits=n_groups).split(index, groups=groups):
        train_rows = np.zeros_like(mask)
        train_rows[index[train]] = True
        test_rows = np.zeros_like(mask)
        test_rows[index[test]] = True
        yield int(groups[test][0]), train_rows, test_rows


def inner_separation(activations: np.ndarray, positive: np.ndarray, train: np.ndarray, pairs: np.ndarray,
                     questions: np.ndarray, heldout_fraction: float, seed: int) -> pd.DataFrame | None:
    """Separation per layer measured inside the training rows ``train`` only (mean over inner folds).

    Inner validation rows hold out a training pair (when there are two or more) and a share of the
    fitting questions (when there are two or more); a direction fitted on the remaining rows scores
    them. None when neither can be held out or no inner fold keeps both sides.
    """
    fit_questions = np.unique(questions[train])
    question_out = None
    if len(fit_questions) >= 2:
        _, held = trait_math.split_heldout(len(fit_questions), heldout_fraction, seed)
        question_out = np.isin(questions, fit_questions[held])
    splits = list(_leave_one_pair_out(train, pairs)) or [(-1, train, train)]
    if question_out is None and len(splits) == 1 and splits[0][0] == -1:
        return None
    tables = []
    for _, pair_in, pair_out in splits:
        fit, score = train & pair_in, train & pair_out
        if question_out is not None:
            fit, score = fit & ~question_out, score & question_out
        if _both_sides(fit, positive) and _both_sides(score, positive):
            tables.append(_separation(activations, positive, fit, score))
    if not tables:
        return None
    return pd.concat(tables).groupby("layer", as_index=False).mean()


def instruction_folds(rows: pd.DataFrame, activations: np.ndarray, usable: np.ndarray, positive: np.ndarray,
                      heldout_fraction: float, seed: int) -> list[InstructionFold]:
    """The folds of one vector (see the module doc); empty with fewer than two instruction pairs.

    Args:
        rows: the vector's plan rows (``prompt_index``, ``question_index``, ``heldout``).
        activations: ``[n, L, H]`` one per row.
        usable: rows with an activation that the judge kept.
        positive: rows on the positive side.
    """
    pairs = rows["prompt_index"].to_numpy()
    questions = rows["question_index"].to_numpy()
    heldout = rows["heldout"].to_numpy().astype(bool)
    folds = []
    for pair, pair_in, pair_out in _leave_one_pair_out(usable, pairs):
        train, test = pair_in & ~heldout, pair_out & heldout
        if not (_both_sides(train, positive) and _both_sides(test, positive)):
            continue  # response mode can empty one side of a fold; that fold measures nothing
        folds.append(InstructionFold(
            heldout_pair=pair,
            inner=inner_separation(activations, positive, train, pairs, questions, heldout_fraction, seed),
            test=_separation(activations, positive, train, test),
            n_test_positive=int((test & positive).sum()), n_test_negative=int((test & ~positive).sum()),
        ))
    return folds


def _fold_layer(inner: pd.DataFrame | None, rule, num_layers: int) -> int | None:
    if rule == "heldout" and inner is None:
        return None
    return trait_math.select_layer(inner if inner is not None else pd.DataFrame(), rule, num_layers)


def fold_table(folds: Mapping[str, tuple[str, list[InstructionFold]]], layer_rule, layer_scope: str,
               num_layers: int, layer_choosers: Iterable[str]) -> pd.DataFrame:
    """One row per (vector, fold): the fold's layer, chosen on inner rows, and its test separation
    there (``FOLD_COLUMNS``; ``layer`` and ``auroc`` nan where no layer could be chosen).

    ``folds``: name -> (kind, folds); ``layer_choosers``: the names whose inner separation picks the
    shared layer of each fold (the real traits).
    """
    choosers = set(layer_choosers)
    shared: dict[int, int | None] = {}
    if layer_scope == "shared":
        by_pair: dict[int, list[pd.DataFrame]] = {}
        for name, (_, items) in folds.items():
            for fold in items:
                if name in choosers and fold.inner is not None:
                    by_pair.setdefault(fold.heldout_pair, []).append(fold.inner.assign(trait=name))
        pairs = {fold.heldout_pair for _, items in folds.values() for fold in items}
        shared = {pair: _fold_layer(pd.concat(by_pair[pair]) if pair in by_pair else None, layer_rule, num_layers)
                  for pair in pairs}
    records = []
    for name, (kind, items) in folds.items():
        for fold in items:
            layer = shared[fold.heldout_pair] if layer_scope == "shared" else _fold_layer(fold.inner, layer_rule, num_layers)
            at_layer = fold.test.set_index("layer").loc[layer] if layer is not None else None
            records.append({
                "trait": name, "kind": kind, "heldout_pair": fold.heldout_pair,
                "layer": np.nan if layer is None else layer,
                "auroc": np.nan if at_layer is None else float(at_layer["auroc"]),
                "cohens_d": np.nan if at_layer is None else float(at_layer["cohens_d"]),
                "n_test_positive": fold.n_test_positive, "n_test_negative": fold.n_test_negative,
            })
    return pd.DataFrame(records, columns=FOLD_COLUMNS)


def summarise_folds(table: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per vector (index ``trait``): ``auroc_heldout_instructions`` and
    ``cohens_d_heldout_instructions`` (means over the folds that have a value),
    ``separates_heldout_instructions``, ``n_instruction_folds`` (folds with a value) and
    ``n_heldout_instructions`` (their test rows, both sides)."""
    scored = table.dropna(subset=["auroc"])
    summary = scored.groupby("trait").agg(
        auroc_heldout_instructions=("auroc", "mean"),
        cohens_d_heldout_instructions=("cohens_d", "mean"),
        n_instruction_folds=("auroc", "size"),
        n_heldout_instructions=("n_test_positive", "sum"),
        n_negative=("n_test_negative", "sum"),
    )
    summary["n_heldout_instructions"] += summary.pop("n_negative")
    summary["separates_heldout_instructions"] = [
        trait_math.separates(value, threshold) for value in summary["auroc_heldout_instructions"]]
    return summary
