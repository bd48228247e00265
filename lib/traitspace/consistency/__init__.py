"""Stage 07 (notebook 07_consistency): does a model that turns harmful also know and say it has?

Paper 002's persona-consistency tasks at the base model and the final checkpoint of every trail,
read from the next-token logits (no sampling), related to harmfulness across the fine-tuned models,
and linear probes on activations. Modules, one job each:

- :mod:`.items`: the task file ``resources/eval/self_knowledge.yaml`` (prompts, options, several
  phrasings each) and the conversations built from it, choice options in both orders;
- :mod:`.reader`: ratings (probability-weighted 0-100, the local judge's trie) and two-letter choices
  from the logits;
- :mod:`.measure`: one checkpoint's readings on one misaligned-self-report scale; probe activations;
- :mod:`.analysis` (pure): readability (off-format, position-bound, scale-bound), task summaries with
  the phrasing spread, the change from the base model per fine-tuned model beside its harmfulness
  (notebook 04's misalignment preference or EM rate), coherent / inverted / neither with a sensitivity
  table, correlations with intervals, Fisher's association test;
- :mod:`.probes` (pure): logistic probes under GroupKFold, AUROC with group-bootstrap intervals, the
  difference-of-means and EM-direction baselines, cosines, the transfer matrix;
- :mod:`.stage`: runs it all, one cached part per checkpoint; :mod:`.plots`.

Output folder ``outputs/<run>/consistency/``: ``tasks/`` and ``activations/`` parts, ``items.parquet``
(every reading), ``task_summary.csv``, ``phrasings.csv``, ``models.csv`` (with ``class``),
``sensitivity.csv``, ``correlations.csv``, ``association.csv``, ``score_prediction.csv``,
``probe_layers.csv``, ``probe_summary.csv``, ``probe_cosines.csv``, ``probe_transfer.csv``,
``figures/*.png``, ``manifest.json``. Later readers use only :func:`load_outputs`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .items import TASKS, load_self_knowledge
from .stage import OUTPUT_DIRNAME, TABLES, run_consistency_stage

__all__ = ["TASKS", "ConsistencyOutputs", "load_outputs", "load_self_knowledge", "run_consistency_stage"]


@dataclass
class ConsistencyOutputs:
    """What stage 07 left in a run folder."""

    manifest: dict
    items: pd.DataFrame                                             # every reading, every checkpoint
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)   # name (``TABLES``) -> table
    figures: dict[str, Path] = field(default_factory=dict)          # name -> png


def load_outputs(run_dir: str | Path) -> ConsistencyOutputs:
    """Stage 07's outputs of ``run_dir``; FileNotFoundError naming the notebook when it has not run."""
    from ..core.artifacts import read_json
    from ..core.integrity import require_intact

    folder = Path(run_dir) / OUTPUT_DIRNAME
    if not (folder / "manifest.json").is_file():
        raise FileNotFoundError(f"no consistency results in {folder}: run notebook 07 first")
    require_intact(folder, "07")  # a damaged file is named with its fix, not met as a parquet error
    tables = {}
    for name in TABLES:
        try:
            tables[name] = pd.read_csv(folder / f"{name}.csv")
        except pd.errors.EmptyDataError:  # a table with no rows (e.g. probes off) is written empty
            tables[name] = pd.DataFrame()
    figures = {path.stem: path for path in sorted((folder / "figures").glob("*.png"))}
    return ConsistencyOutputs(read_json(folder / "manifest.json"), pd.read_parquet(folder / "items.parquet"),
                              tables, figures)
