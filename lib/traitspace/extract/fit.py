"""Fitting the directions: each vector's mean difference on the fitting questions, its separation
on held-out questions at every layer, its instruction folds (:mod:`.crossval`), the optional judge
filter (response mode), and the choice of layer with the per-vector metadata table.

The held-out-questions AUROC picks the layer from the same rows it reports (as the Assistant Axis
release does); the held-out-instructions AUROC does not (:mod:`.crossval`). Numpy/pandas on
captured activations (:mod:`traitspace.core.traits` holds the maths); no model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..core import traits as trait_math
from ..core.config import ExtractSection
from ..library import Trait
from .controls import CONTROL_KIND
from .crossval import InstructionFold, fold_table, instruction_folds, summarise_folds
from .plan import AXIS_NAME, TraitEntry
from .vectors import METADATA_COLUMNS

# A judge scores how strongly each answer expresses the trait, 0-100:
# judge(trait, questions, answers) -> scores (one per answer).
ResponseJudge = Callable[[Trait, Sequence[str], Sequence[str]], Sequence[float]]


@dataclass
class FittedDirection:
    """One vector fitted on its owner's conversations, with its held-out check at every layer."""

    name: str
    kind: str
    direction: np.ndarray  # [L, H]
    separation: pd.DataFrame
    heldout_rows: pd.DataFrame  # plan rows held out, in order
    heldout_projections: np.ndarray  # [n_heldout, L]
    activation_norms: np.ndarray  # [L] mean activation norm over the owner's conversations
    n_prompts: int
    n_dropped: int = 0
    folds: list[InstructionFold] = field(default_factory=list)  # held-out instructions (none for the axis)


def fit_owner(name: str, rows: pd.DataFrame, activations: np.ndarray, keep: np.ndarray,
              heldout_fraction: float = 1 / 3, seed: int = 0) -> FittedDirection:
    """Direction, held-out-question separation and instruction folds for one trait, control or the
    axis from its rows' activations (``heldout_fraction`` and ``seed`` split the folds' training
    questions again to choose their layers)."""
    kind = rows["kind"].iloc[0]
    usable = keep & ~np.isnan(activations).any(axis=(1, 2))
    heldout = rows["heldout"].to_numpy()
    positive_side = (rows["side"] == ("default" if kind == "axis" else "positive")).to_numpy()
    fit = usable & ~heldout
    held = usable & heldout
    for label, mask in (("fitting", fit), ("held-out", held)):
        if not (mask & positive_side).any() or not (mask & ~positive_side).any():
            raise ValueError(f"{name}: no {label} conversations left on one side (all answers empty or rejected)")
    if kind == "axis":
        groups = rows["group"].to_numpy()
        roles = [activations[fit & (groups == role)] for role in pd.unique(groups[fit & ~positive_side])]
        direction = trait_math.assistant_axis(activations[fit & positive_side], roles)
    else:
        direction = trait_math.mean_difference(activations[fit & positive_side], activations[fit & ~positive_side])
    projections = trait_math.project(activations[held], direction)  # [n_held, L]
    separation = trait_math.layer_separation(projections[positive_side[held]], projections[~positive_side[held]])
    return FittedDirection(
        name=name, kind=kind, direction=direction.astype(np.float32), separation=separation,
        heldout_rows=rows[held], heldout_projections=projections,
        activation_norms=np.linalg.norm(activations[usable], axis=-1).mean(axis=0),
        n_prompts=int(fit.sum()), n_dropped=int((~keep).sum()),
        folds=[] if kind == "axis" else instruction_folds(rows, activations, usable, positive_side,
                                                          heldout_fraction, seed),
    )


def judge_keep(entry: TraitEntry, rows: pd.DataFrame, answers: Sequence[str], judge: ResponseJudge,
               threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Keep positive-side answers the judge scores >= threshold and negative-side ones below it."""
    scores = np.asarray(judge(entry.trait, list(rows["question"]), list(answers)), dtype=float)
    if scores.shape != (len(rows),):
        raise ValueError(f"judge returned {scores.shape[0] if scores.ndim else 0} scores for {len(rows)} answers")
    expresses = scores >= threshold
    keep = np.where((rows["side"] == "positive").to_numpy(), expresses, ~expresses)
    return keep, scores


@dataclass
class LayerChoice:
    """The fitted vectors tabulated at their chosen layers."""

    metadata: pd.DataFrame  # one row per vector, controls included (METADATA_COLUMNS)
    separation: pd.DataFrame  # trait, kind, layer, auroc, cohens_d, mean_gap: every vector at every layer
    heldout_projections: pd.DataFrame  # each held-out conversation's projection at its vector's layer
    shared_layer: int
    instruction_folds: pd.DataFrame  # one row per vector and instruction fold (crossval.FOLD_COLUMNS)


def choose_layers(fitted: Mapping[str, FittedDirection], entries: Mapping[str, TraitEntry], settings: ExtractSection,
                  num_layers: int) -> LayerChoice:
    """Pick each vector's layer (``extract.layer_selection``; ``layer_scope: shared`` gives every
    vector the layer that is best on average over the real traits, never the controls) and tabulate
    the vectors there, with their held-out-instructions separation from the folds."""
    separation = pd.concat(
        [item.separation.assign(trait=name, kind=item.kind) for name, item in fitted.items()], ignore_index=True
    )[["trait", "kind", "layer", "auroc", "cohens_d", "mean_gap"]]
    trait_rows = separation[~separation["kind"].isin(["axis", CONTROL_KIND])]
    shared_layer = trait_math.select_layer(trait_rows if len(trait_rows) else separation, settings.layer_selection,
                                           num_layers)
    chosen = {
        name: shared_layer if settings.layer_scope == "shared"
        else trait_math.select_layer(item.separation, settings.layer_selection, num_layers)
        for name, item in fitted.items()
    }
    real_traits = [name for name, item in fitted.items() if item.kind not in ("axis", CONTROL_KIND)]
    folds = fold_table({name: (item.kind, item.folds) for name, item in fitted.items()}, settings.layer_selection,
                       settings.layer_scope, num_layers, real_traits)
    by_folds = summarise_folds(folds, settings.separation_threshold)
    axis = fitted[AXIS_NAME].direction
    records, projection_tables = [], []
    for name, item in fitted.items():
        layer = chosen[name]
        at_layer = item.separation.set_index("layer").loc[layer]
        trait = entries[name].trait if name in entries else None
        instructions = by_folds.loc[name] if name in by_folds.index else None
        records.append({
            "trait": name, "kind": item.kind,
            "category": trait.category if trait else None, "polarity": trait.polarity if trait else None,
            "layer": layer, "auroc_heldout_questions": float(at_layer["auroc"]),
            "cohens_d_heldout_questions": float(at_layer["cohens_d"]),
            "separates_heldout_questions": trait_math.separates(float(at_layer["auroc"]), settings.separation_threshold),
            "auroc_heldout_instructions": np.nan if instructions is None else float(instructions["auroc_heldout_instructions"]),
            "cohens_d_heldout_instructions":
                np.nan if instructions is None else float(instructions["cohens_d_heldout_instructions"]),
            "separates_heldout_instructions":
                False if instructions is None else bool(instructions["separates_heldout_instructions"]),
            "n_instruction_folds": 0 if instructions is None else int(instructions["n_instruction_folds"]),
            "norm": float(np.linalg.norm(item.direction[layer])),
            "activation_norm": float(item.activation_norms[layer]),
            "cos_assistant_axis": float(trait_math.cosine_with(item.direction[layer][None], axis[layer])[0]),
            "n_prompts": item.n_prompts, "n_heldout": len(item.heldout_rows),
            "n_heldout_instructions": 0 if instructions is None else int(instructions["n_heldout_instructions"]),
            "n_dropped_by_judge": item.n_dropped,
        })
        projection_tables.append(item.heldout_rows[["owner", "side", "group", "prompt_index", "question_index"]]
                                 .rename(columns={"owner": "trait"})
                                 .assign(layer=layer, value=item.heldout_projections[:, layer]))
    return LayerChoice(
        metadata=pd.DataFrame(records, columns=list(METADATA_COLUMNS)),
        separation=separation,
        heldout_projections=pd.concat(projection_tables, ignore_index=True),
        shared_layer=shared_layer,
        instruction_folds=folds,
    )
