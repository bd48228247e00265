"""What notebook 02 shows of the extraction: its settings and run, the stage's tables read back, the
validity summary (traits separating on held-out questions, on held-out instructions, and against
the control contrasts, with counts, n and intervals), the trait cosines and ``summary.txt``.

Tables only (pandas, :mod:`traitspace.core.stats`); figures are in :mod:`.plots`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core import traits as trait_math
from ..core.artifacts import atomic_write_text, read_json
from ..core.config import ExtractSection
from ..core.stats import bootstrap_mean_ci, wilson_interval
from .controls import CONTROL_KIND
from .fit import ResponseJudge
from .plan import AXIS_NAME
from .vectors import TraitVectors

HELDOUT = {"questions": "held-out questions", "instructions": "held-out instructions"}


def settings_table(settings: ExtractSection) -> pd.DataFrame:
    """The ``extract`` parameters, one row each."""
    return pd.Series(settings.model_dump(), name="value").to_frame()


def judge_note(settings: ExtractSection, judge: ResponseJudge | None) -> str:
    """Whether generated answers are filtered by a trait judge."""
    if settings.mode != "response":
        return "prompt mode: nothing is generated, so there is nothing to judge"
    if judge is None:
        return "response mode: no trait judge available, so every generated answer is kept"
    return f"response mode: answers filtered by the judge {getattr(judge, '__name__', type(judge).__name__)}"


def run_report(vectors: TraitVectors, cached: bool) -> str:
    """How the vectors were obtained (cache or now), the timings and token counts of the run that
    made them (its manifest), and their shape."""
    manifest = read_json(Path(vectors.path).parent / "manifest.json")
    return "\n".join([
        "loaded from cache" if cached else "extracted now",
        f"extraction took {manifest['seconds']:.0f} s when it ran; timings: {manifest['timings']}",
        f"tokens run: {manifest['tokens_run']:,} (without prefix sharing: {manifest['tokens_without_prefix_sharing']:,})",
        f"{len(vectors)} vectors of shape {tuple(vectors.vectors[AXIS_NAME].shape)} "
        f"(layers x hidden); layer convention: {vectors.info['layer_convention']}",
        f"library: {vectors.info.get('library', 'builtin')}; {len(vectors.controls)} control contrasts scored, "
        f"not stored as vectors",
    ])


def read_separation(folder: str | Path) -> pd.DataFrame:
    """``separation_by_layer.csv``: every vector's held-out-question separation at every layer."""
    return pd.read_csv(Path(folder) / "separation_by_layer.csv")


def read_heldout_projections(folder: str | Path) -> pd.DataFrame:
    """``heldout_projections.csv``: each held-out conversation's projection at its vector's layer."""
    return pd.read_csv(Path(folder) / "heldout_projections.csv")


def read_instruction_folds(folder: str | Path) -> pd.DataFrame:
    """``instruction_folds.csv``: one row per vector and instruction fold (its layer, AUROC, n)."""
    return pd.read_csv(Path(folder) / "instruction_folds.csv")


def trait_metadata(vectors: TraitVectors) -> pd.DataFrame:
    """The metadata rows of the traits (the Assistant Axis left out), in stored order."""
    metadata = vectors.metadata.reset_index(drop=True)
    return metadata[~metadata["kind"].isin(["axis", CONTROL_KIND])]


def validity_table(vectors: TraitVectors, threshold: float) -> pd.DataFrame:
    """One row per held-out measure (``held-out questions``, ``held-out instructions``).

    Columns: ``n_traits`` (traits with a value), ``n_separating`` (AUROC >= ``threshold``) with
    ``share`` and its Wilson 95% interval (``share_low``, ``share_high``); ``mean_auroc`` over traits
    with a bootstrap 95% interval; ``conversations`` (median held-out conversations a trait is scored
    on, both sides); ``n_controls`` and ``n_controls_separating`` (control contrasts reaching the
    threshold) with ``mean_control_auroc``; ``best_control`` and ``best_control_auroc`` (the control
    contrast with the highest AUROC on that measure); ``n_beating_control`` (traits strictly above
    it) with its share's Wilson interval. Values are nan where a measure has no value (one
    instruction pair).
    """
    traits = trait_metadata(vectors)
    controls = vectors.controls
    rows = []
    for heldout, label in HELDOUT.items():
        auroc = traits[f"auroc_heldout_{heldout}"].astype(float).dropna()
        n_column = "n_heldout" if heldout == "questions" else "n_heldout_instructions"
        control_auroc = controls.set_index("trait")[f"auroc_heldout_{heldout}"].astype(float).dropna()
        best = control_auroc.idxmax() if len(control_auroc) else None
        best_auroc = float(control_auroc.max()) if best is not None else np.nan
        separating = int((auroc >= threshold).sum())
        beating = int((auroc > best_auroc).sum()) if best is not None else 0
        share, share_low, share_high = wilson_interval(separating, len(auroc))
        beat, beat_low, beat_high = wilson_interval(beating, len(auroc)) if best is not None else (np.nan,) * 3
        mean, mean_low, mean_high = bootstrap_mean_ci(auroc.to_numpy()) if len(auroc) else (np.nan,) * 3
        rows.append({
            "measure": label, "n_traits": len(auroc), "n_separating": separating,
            "share": share, "share_low": share_low, "share_high": share_high,
            "mean_auroc": mean, "mean_auroc_low": mean_low, "mean_auroc_high": mean_high,
            "conversations": float(traits.loc[auroc.index, n_column].median()) if len(auroc) else np.nan,
            "n_controls": len(control_auroc), "n_controls_separating": int((control_auroc >= threshold).sum()),
            "mean_control_auroc": float(control_auroc.mean()) if len(control_auroc) else np.nan,
            "best_control": best, "best_control_auroc": best_auroc,
            "n_beating_control": beating if best is not None else np.nan,
            "beating_share": beat, "beating_low": beat_low, "beating_high": beat_high,
        })
    return pd.DataFrame(rows).set_index("measure")


def _percent(share: float, low: float, high: float) -> str:
    return "n/a" if np.isnan(share) else f"{share:.0%} (95% CI {low:.0%}-{high:.0%})"


def validation_summary(vectors: TraitVectors, threshold: float) -> str:
    """The two counts of separating traits (held-out questions; held-out instructions), each against
    the best control contrast, with n and intervals; the Assistant Axis; the traits flagged."""
    table = validity_table(vectors, threshold)
    metadata = vectors.metadata.reset_index(drop=True)
    traits = trait_metadata(vectors)
    axis = metadata[metadata["kind"] == "axis"].iloc[0]
    folds = vectors.info.get("instruction_folds", 0)
    lines = []
    for label, row in table.iterrows():
        if row["n_traits"] == 0:
            lines.append(f"{label}: no value ({vectors.info.get('instruction_note', 'nothing could be held out')})")
            continue
        scope = (f"{folds} folds, one per instruction pair; layer chosen on inner training rows"
                 if label == HELDOUT["instructions"] else "all instruction pairs; layer chosen on these rows")
        lines.append(
            f"{label} ({scope}; median n = {row['conversations']:.0f} conversations a trait): "
            f"{row['n_separating']} of {row['n_traits']} traits reach AUROC >= {threshold} "
            f"[{_percent(row['share'], row['share_low'], row['share_high'])}]; mean AUROC {row['mean_auroc']:.3f} "
            f"(95% CI {row['mean_auroc_low']:.3f}-{row['mean_auroc_high']:.3f})")
        if row["best_control"] is not None:
            lines.append(
                f"  controls: {row['n_controls_separating']} of {row['n_controls']} reach the threshold, mean AUROC "
                f"{row['mean_control_auroc']:.3f}; best: {row['best_control']} at {row['best_control_auroc']:.3f}; "
                f"traits above the best: {row['n_beating_control']:.0f} of {row['n_traits']} "
                f"[{_percent(row['beating_share'], row['beating_low'], row['beating_high'])}]")
    flagged = traits.loc[~traits["separates_heldout_instructions"].eq(True), "trait"].tolist()
    if table.loc[HELDOUT["instructions"], "n_traits"] == 0:
        flagged = traits.loc[~traits["separates_heldout_questions"].eq(True), "trait"].tolist()
    lines += [
        f"Assistant Axis: layer {axis['layer']}, AUROC on held-out questions {axis['auroc_heldout_questions']:.2f}, "
        f"Cohen's d {axis['cohens_d_heldout_questions']:.2f} (no instruction pairs to hold out)",
        f"flagged (do not separate on the stricter measure available): {len(flagged)}: "
        f"{', '.join(flagged[:40])}{' ...' if len(flagged) > 40 else ''}",
    ]
    return "\n".join(lines)


VALIDATION_COLUMNS = ["trait", "kind", "category", "layer", "auroc_heldout_questions", "auroc_heldout_instructions",
                      "cohens_d_heldout_questions", "cohens_d_heldout_instructions", "separates_heldout_questions",
                      "separates_heldout_instructions", "n_heldout", "n_heldout_instructions", "n_instruction_folds",
                      "norm", "activation_norm", "cos_assistant_axis", "n_prompts"]


def validation_table(vectors: TraitVectors, n: int = 15) -> pd.DataFrame:
    """The ``n`` vectors least separated on held-out instructions (then on held-out questions), at
    their layers, rounded for display."""
    metadata = vectors.metadata.reset_index(drop=True)
    ordered = metadata.sort_values(["auroc_heldout_instructions", "auroc_heldout_questions"], na_position="first")
    return ordered[VALIDATION_COLUMNS].round(3).head(n)


def controls_table(vectors: TraitVectors) -> pd.DataFrame:
    """The control contrasts scored like the traits: both AUROCs, Cohen's d and their n."""
    columns = ["trait", "layer", "auroc_heldout_questions", "auroc_heldout_instructions", "cohens_d_heldout_questions",
               "cohens_d_heldout_instructions", "n_heldout", "n_heldout_instructions", "n_instruction_folds"]
    return vectors.controls[columns].rename(columns={"trait": "control"}).round(3)


def trait_cosines(vectors: TraitVectors, layer: int) -> pd.DataFrame:
    """Cosine similarity of every pair of trait vectors at ``layer`` (traits x traits)."""
    names = vectors.trait_names
    matrix = vectors.unit_matrix(names, layers=layer).numpy()
    return pd.DataFrame(trait_math.cosine_matrix(matrix), index=names, columns=names)


def extreme_pairs(cosines: pd.DataFrame, k: int = 8) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``k`` most similar and the ``k`` most opposite trait pairs (``trait_a``, ``trait_b``, ``cosine``)."""
    # stack() keeps nan in pandas 3: drop the masked lower triangle and diagonal explicitly.
    pairs = cosines.where(np.triu(np.ones(cosines.shape, dtype=bool), k=1)).stack().dropna().rename("cosine").reset_index()
    pairs.columns = ["trait_a", "trait_b", "cosine"]
    return pairs.nlargest(k, "cosine").round(3), pairs.nsmallest(k, "cosine").round(3)


def alignment_table(vectors: TraitVectors) -> pd.DataFrame:
    """The alignment traits: polarity, cosine with the Assistant Axis, both held-out AUROCs."""
    metadata = vectors.metadata.reset_index(drop=True)
    columns = ["trait", "polarity", "cos_assistant_axis", "auroc_heldout_questions", "auroc_heldout_instructions"]
    return metadata[metadata["kind"] == "alignment"][columns].round(3)


def write_summary(vectors: TraitVectors, folder: str | Path, threshold: float) -> Path:
    """A short human-readable ``summary.txt`` next to the vectors: both counts of separating traits
    and how many beat the best control."""
    traits = trait_metadata(vectors)
    lines = [
        f"vectors: {len(vectors)} ({len(traits)} traits + assistant_axis); controls scored: {len(vectors.controls)}",
        f"library: {vectors.info.get('library', 'builtin')}; mode: {vectors.info.get('mode')}, "
        f"pooling: {vectors.info.get('pooling')}",
        f"shared layer: {vectors.info.get('shared_layer')}",
    ]
    for label, row in validity_table(vectors, threshold).iterrows():
        if row["n_traits"] == 0:
            lines.append(f"separating on {label}: n/a ({vectors.info.get('instruction_note', '')})")
            continue
        line = f"separating on {label} (AUROC >= {threshold}): {row['n_separating']} / {row['n_traits']}"
        if row["best_control"] is not None:
            line += (f"; above the best control ({row['best_control']}, AUROC {row['best_control_auroc']:.3f}): "
                     f"{row['n_beating_control']:.0f} / {row['n_traits']}")
        lines.append(line)
    return atomic_write_text(Path(folder) / "summary.txt", "\n".join(lines) + "\n")
