"""Stage 03 (notebook 03_project): every checkpoint projected onto every trait direction.

Output folder ``outputs/<run>/projections/``:

- ``projections.parquet``: condition, seed, step, trait, layer, prompt, value, act_norm (one row per
  checkpoint x trait x projection prompt; step 0 of each trail is the shared base model);
- ``drift.parquet``: condition, seed, step, trait, drift, base_norm, drift_pct_of_norm;
- per EM/control pair (:mod:`.analysis`): ``top_shifts__<em>__vs__<control>.csv`` (seed-level test at
  the final step), ``seed_shifts_by_step__...csv`` (at every step), ``precision__...csv`` (prompt
  resampling within each seed's two runs), ``activation_shift__...csv``, ``pca_seed_test__...csv`` (PCA
  coordinates, EM minus control, against the seed-pair null), ``decomposition__<em>.csv``;
  ``assistant_axis.csv``, ``pca_coordinates.csv``;
- ``figures/*.png`` (:mod:`.plots`);
- ``parts/<condition>/seed-<k>/step-<N>.{parquet,json,mean_activation.safetensors}``: the per-checkpoint
  cache (:class:`traitspace.core.parts.CheckpointParts`), with each checkpoint's mean activation;
- ``manifest.json``: params hash, conditions, the EM -> control pairs, timings.

Later stages read these only through :func:`load_outputs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from .analysis import (
    AXIS,
    PairAnalysis,
    ProjectionAnalysis,
    analyse_projections,
    read_pair_tables,
    write_analysis,
)
from .plots import projection_figures, save_projection_figures
from .stage import (
    ProjectionResult,
    load_mean_activations,
    load_projection_parts,
    norm_rescaled_drift_table,
    project_activations,
    project_checkpoints,
    projection_conversations,
    resolve_pairs,
    run_projection_stage,
)

__all__ = [
    "AXIS", "PairAnalysis", "ProjectionAnalysis", "ProjectionOutputs", "ProjectionResult", "analyse_projections",
    "load_mean_activations", "load_outputs", "load_projection_parts", "norm_rescaled_drift_table",
    "project_activations", "project_checkpoints", "projection_conversations", "projection_figures",
    "read_pair_tables", "resolve_pairs", "run_projection_stage", "save_projection_figures", "write_analysis",
]

OUTPUT_DIRNAME = "projections"


@dataclass
class ProjectionOutputs:
    """What stage 03 left in a run folder."""

    projections: pd.DataFrame       # as projections.parquet
    drift: pd.DataFrame             # as drift.parquet
    pairs: dict[str, str]           # em -> control
    mean_activations: dict[tuple[str, int, int], dict[int, torch.Tensor]]  # (condition, seed, step) -> {layer: [hidden]}
    top_shifts: dict[tuple[str, str], pd.DataFrame]     # (em, control) -> seed-level test at the final step
    decomposition: dict[tuple[str, str], pd.DataFrame]  # (em, control) -> decomposition__<em>.csv
    figures: list[Path]
    shifts_by_step: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)    # seed-level test per step
    precision: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)         # prompt resampling per seed
    activation_shift: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)  # per layer
    pca_test: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)  # PCA coordinates vs seed-pair null

    @property
    def seeds(self) -> list[int]:
        return sorted(int(seed) for seed in self.projections["seed"].unique())


def load_outputs(run_dir: str | Path) -> ProjectionOutputs:
    """Stage 03's outputs of ``run_dir``; FileNotFoundError naming the notebook when it has not run."""
    from ..core.artifacts import read_json
    from ..core.checkpoints import Checkpoint

    from ..core.integrity import require_intact

    folder = Path(run_dir) / OUTPUT_DIRNAME
    if not (folder / "projections.parquet").is_file() or not (folder / "manifest.json").is_file():
        raise FileNotFoundError(f"no projections in {folder}: run notebook 03 first")
    require_intact(folder, "03")  # a damaged file is named with its fix, not met as a parquet error
    projections = pd.read_parquet(folder / "projections.parquet")
    drift = pd.read_parquet(folder / "drift.parquet")
    pairs = dict(read_json(folder / "manifest.json").get("pairs", {}))
    checkpoints = [Checkpoint(condition, int(step), None, int(seed)) for condition, seed, step
                   in projections[["condition", "seed", "step"]].drop_duplicates().itertuples(index=False)]
    mean_activations = load_mean_activations(folder / "parts", checkpoints)
    tables = read_pair_tables(folder, pairs)
    figures = sorted((folder / "figures").glob("*.png"))
    return ProjectionOutputs(projections, drift, pairs, mean_activations, tables["top_shifts"],
                             tables["decomposition"], figures, tables["shifts_by_step"], tables["precision"],
                             tables["activation_shift"], tables["pca_test"])
