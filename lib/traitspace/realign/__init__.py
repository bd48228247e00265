"""Stage 08 (notebook 08_realign): emergent re-alignment. Does a little benign data undo emergent
misalignment, and do the trait shifts and the EM direction recover with the behaviour?

A fine-tuned checkpoint (by default the final one of each trail) is trained further with its LoRA
adapter loaded *trainable*, a fresh optimizer and a fresh warm-up, on a small benign set: in-domain
(the EM condition's matched control data) and out-of-domain (sound data of another domain). The
control run of each pair is continued on the same rows, every training seed. Modules, one job each:

- :mod:`.plan`: which checkpoints, which benign rows, the trail layout and params hash;
- :mod:`.train`: loading the adapter trainable (and refusing one that is not), the dense checkpoint
  trail and resume (the finetune trainer's machinery);
- :mod:`.measure`: every checkpoint measured with notebooks 03, 04 and 06's functions, on one
  combined step axis (fine-tuning, then re-alignment);
- :mod:`.recovery`: recovery fraction across seeds, returns / persists, steps to recovery (pure);
- :mod:`.plots`; :mod:`.stage`: runs it all.

Output folder ``outputs/<run>/realign/``:

- ``checkpoints/<source>/<benign dataset>/seed-<k>/step-NNNNNN/``: the trails (layout of
  :mod:`traitspace.core.checkpoints`; step 0 is the source checkpoint), each with its manifest;
- ``projections/parts/``, ``preference/``, ``behavior/{answers,scores}/``: per-checkpoint caches;
- ``trails.csv``, ``losses.csv``, ``measures.csv`` (every EM measure's shift from base along every
  combined trail), ``trait_recovery.csv``, ``measure_recovery.csv``, ``steps_to_recovery.csv``,
  ``steps_summary.csv``, ``em_rates.csv``; ``projections.parquet``, ``drift.parquet``,
  ``preference.parquet``, ``preference_summary.parquet``;
- ``figures/combined_trail__<em>.png``, ``figures/recovery__<em>.png``; ``manifest.json``.

Later readers use only :func:`load_outputs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .plan import STAGE_DIRNAME, RealignTrail, benign_datasets, dense_schedule, plan_trails, realign_root
from .recovery import recovery_fraction, recovery_status, recovery_table, steps_summary, steps_to_recovery
from .stage import PARQUETS, TABLES, run_realign_stage
from .train import (
    AdapterNotTrainable,
    RealignResult,
    load_trainable_adapter,
    realign_checkpoints,
    train_realign_trail,
    train_realign_trails,
)

__all__ = [
    "AdapterNotTrainable", "RealignOutputs", "RealignResult", "RealignTrail", "benign_datasets", "dense_schedule",
    "load_outputs", "load_trainable_adapter", "plan_trails", "realign_checkpoints", "realign_root",
    "recovery_fraction", "recovery_status", "recovery_table", "run_realign_stage", "steps_summary",
    "steps_to_recovery", "train_realign_trail", "train_realign_trails",
]


@dataclass
class RealignOutputs:
    """What stage 08 left in a run folder."""

    manifest: dict
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)   # name (TABLES, PARQUETS) -> table
    figures: dict[str, Path] = field(default_factory=dict)          # name -> png


def load_outputs(run_dir: str | Path) -> RealignOutputs:
    """Stage 08's outputs of ``run_dir``; FileNotFoundError naming the notebook when it has not run."""
    from ..core.artifacts import read_json
    from ..core.integrity import require_intact

    folder = Path(run_dir) / STAGE_DIRNAME
    if not (folder / "manifest.json").is_file():
        raise FileNotFoundError(f"no re-alignment results in {folder}: run notebook 08 first")
    require_intact(folder, "08")
    tables = {}
    for name in TABLES:
        try:
            tables[name] = pd.read_csv(folder / f"{name}.csv")
        except pd.errors.EmptyDataError:  # a table with no rows (e.g. no EM rates) is written empty
            tables[name] = pd.DataFrame()
    tables.update({name: pd.read_parquet(folder / f"{name}.parquet") for name in PARQUETS})
    figures = {path.stem: path for path in sorted((folder / "figures").glob("*.png"))}
    return RealignOutputs(read_json(folder / "manifest.json"), tables, figures)
