"""Stage 02, extract: trait vectors and the Assistant Axis from a model.

For every trait, each of its positive and negative system prompts is paired with the same
extraction questions (:mod:`.plan`); the model reads each conversation and one activation per layer
is kept (:mod:`.capture`):

- ``mode="prompt"`` (default, cheap): no generation; the residual stream at the last prompt token
  (where the answer is about to start, after the model has read both the persona and the question)
  or the mean over the prompt tokens. Shared prefixes (the system prompt) are computed once
  (:mod:`traitspace.core.prefix_cache`).
- ``mode="response"`` (the persona-vector / Assistant-Axis method): the model answers under the
  system prompt and activations are averaged over the answer tokens; an optional judge keeps only
  answers that express the trait (positive prompts) or do not (negative prompts).

Directions are fitted on part of the questions and checked on the held-out rest, which also picks
the layer (:mod:`.fit`). A stricter check holds out instruction pairs and questions together
(GroupKFold over the instruction pair, the layer chosen on inner training rows: :mod:`.crossval`).
Control contrasts, pairs of neutral personas (:mod:`.controls`), go through the same steps as a
baseline and are never stored as vectors. The library is ``extract.library``: the built-in one or a
folder (published Assistant Axis layout). :mod:`.stage` runs and caches the stage; :mod:`.report`
and :mod:`.plots` make notebook 02's tables and figures.

Output folder ``outputs/<run>/traits/``:

- ``vectors.safetensors``: one ``[layers, hidden]`` float32 tensor per trait plus
  ``assistant_axis`` (raw mean differences), metadata and provenance in the header
- ``metadata.csv`` / ``metadata.parquet``: one row per vector (``METADATA_COLUMNS``): AUROC and
  Cohen's d on held-out questions and on held-out instructions
- ``controls.csv``: the control contrasts' rows, same columns (also in the vectors file's header)
- ``instruction_folds.csv``: per vector and instruction fold, its layer, AUROC, d and n
- ``separation_by_layer.csv``: held-out-question AUROC, Cohen's d and mean gap per vector and layer
- ``heldout_projections.csv``: each held-out conversation's projection at its vector's layer
- ``plan.csv``: every conversation read; ``responses.csv/.parquet`` (response mode): the answers
- ``summary.txt`` and the figures ``separation_by_layer.png``, ``separation_per_trait.png``,
  ``heldout_projections.png``, ``trait_cosine_clustermap.png``, ``assistant_axis_cosines.png``
- ``manifest.json``: the stage manifest (params hash of ``model`` and ``extract``)

Later stages read the vectors only through :func:`load_outputs` (a :class:`TraitVectors`).
"""

from __future__ import annotations

from .capture import CaptureCounts, capture_prompts, capture_shared_prefixes, generate_and_capture
from .controls import CONTROL_KIND, CONTROL_PREFIX, control_pairs_path, load_control_pairs
from .crossval import FOLD_COLUMNS, InstructionFold, fold_table, inner_separation, instruction_folds, summarise_folds
from .fit import FittedDirection, LayerChoice, ResponseJudge, choose_layers, fit_owner, judge_keep
from .plan import (
    AXIS_NAME,
    MODEL_DEFAULT_PROMPT,
    TraitEntry,
    build_plan,
    chunks_by_owner,
    control_entries,
    extraction_questions,
    plan_conversations,
    plan_overview,
    selected_traits,
    system_or_none,
)
from .plots import (
    plot_axis_cosines,
    plot_heldout_projections,
    plot_separation_by_layer,
    plot_separation_per_trait,
    plot_trait_cosines,
)
from .report import (
    alignment_table,
    controls_table,
    extreme_pairs,
    judge_note,
    read_heldout_projections,
    read_instruction_folds,
    read_separation,
    run_report,
    settings_table,
    trait_cosines,
    trait_metadata,
    validation_summary,
    validation_table,
    validity_table,
    write_summary,
)
from .stage import (
    Extraction,
    extract_vectors,
    extraction_stage,
    library_fingerprint,
    run_extraction,
    save_extraction,
    stage_hash,
    validity_counts,
)
from .vectors import (
    FIGURES,
    FORMAT_VERSION,
    LAYER_CONVENTION,
    METADATA_COLUMNS,
    OUTPUT_FOLDER,
    VECTORS_FILE,
    TraitVectors,
    load_outputs,
    load_trait_vectors,
)

__all__ = [
    "AXIS_NAME", "CONTROL_KIND", "CONTROL_PREFIX", "FIGURES", "FOLD_COLUMNS", "FORMAT_VERSION", "LAYER_CONVENTION",
    "METADATA_COLUMNS", "MODEL_DEFAULT_PROMPT", "OUTPUT_FOLDER", "VECTORS_FILE", "CaptureCounts", "Extraction",
    "FittedDirection", "InstructionFold", "LayerChoice", "ResponseJudge", "TraitEntry", "TraitVectors",
    "alignment_table", "build_plan", "capture_prompts", "capture_shared_prefixes", "choose_layers",
    "chunks_by_owner", "control_entries", "control_pairs_path", "controls_table", "extract_vectors",
    "extraction_questions", "extraction_stage", "extreme_pairs", "fit_owner", "fold_table", "generate_and_capture", "inner_separation",
    "instruction_folds", "judge_keep", "judge_note", "library_fingerprint", "load_control_pairs", "load_outputs",
    "load_trait_vectors", "plan_conversations", "plan_overview", "plot_axis_cosines", "plot_heldout_projections",
    "plot_separation_by_layer", "plot_separation_per_trait", "plot_trait_cosines", "read_heldout_projections",
    "read_instruction_folds", "read_separation", "run_extraction", "run_report", "save_extraction",
    "selected_traits", "settings_table", "stage_hash", "summarise_folds", "system_or_none", "trait_cosines",
    "trait_metadata", "validation_summary", "validation_table", "validity_counts", "validity_table",
    "write_summary",
]
