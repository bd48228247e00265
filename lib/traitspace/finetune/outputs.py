"""Where stage 01 keeps its tables and figures, writing them, and the one loader later stages use.

The checkpoint trail itself lives in ``<run>/checkpoints/`` (layout: :mod:`traitspace.core.checkpoints`);
the notebook's tables and figures in ``<run>/01_finetune/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..core.artifacts import Stage, atomic_path
from ..core.checkpoints import Checkpoint, list_trails, trail_dir
from ..core.code_versions import code_version
from ..core.integrity import require_intact
from ..core.plots import save_figure
from .tables import loss_table

STAGE_DIRNAME = "01_finetune"


def stage_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / STAGE_DIRNAME


def open_stage(config) -> Stage:
    """The stage's manifest (its hash covers the model and finetune sections), folder created."""
    stage = Stage(stage_dir(config.run_dir), params_hash=config.params_hash("model", "finetune"),
                  code_version=code_version("finetune"))
    stage.path.mkdir(parents=True, exist_ok=True)
    return stage


def write_table(frame: pd.DataFrame, folder: str | Path, name: str) -> pd.DataFrame:
    """Write ``frame`` atomically as CSV ``folder/name`` and return it (to display)."""
    with atomic_path(Path(folder) / name) as temporary:
        frame.to_csv(temporary, index=False)
    return frame


def write_figure(fig, folder: str | Path, name: str):
    """Save ``fig`` as ``folder/name`` and return it (to show)."""
    save_figure(fig, Path(folder) / name)
    return fig


def stage_summary(checkpoints: pd.DataFrame) -> dict:
    """What the stage manifest records: the conditions, the seeds and each trail's checkpoint steps."""
    return {
        "conditions": list(dict.fromkeys(checkpoints["condition"])),
        "seeds": sorted(int(seed) for seed in checkpoints["seed"].unique()),
        "checkpoints": {f"{name} seed {seed}": [int(step) for step in group["step"]]
                        for (name, seed), group in checkpoints.groupby(["condition", "seed"])},
    }


@dataclass
class FinetuneOutputs:
    """What stage 01 leaves for later stages."""

    trails: dict[tuple[str, int], list[Checkpoint]]  # (condition, seed) -> trail, step 0 (base, path None) first
    losses: pd.DataFrame                      # step, epoch, loss, learning_rate, grad_norm, condition, seed

    @property
    def seeds(self) -> list[int]:
        """The training seeds that have a trail, sorted."""
        return sorted({seed for _, seed in self.trails})
    figures: list[Path] = field(default_factory=list)


def load_outputs(run_dir: str | Path, conditions: Sequence[str]) -> FinetuneOutputs:
    """Every trail of ``conditions`` (each training seed present), their per-step losses and the
    stage's figures. A trail whose files no longer match its manifest raises DamagedOutput."""
    figures_dir = stage_dir(run_dir)
    trails = list_trails(run_dir, list(conditions))
    for trail in trails:  # an adapter damaged after training is named here, not met inside peft
        require_intact(trail_dir(run_dir, trail[0].condition, trail[0].seed), "01")
    require_intact(figures_dir, "01")
    return FinetuneOutputs(
        trails={(trail[0].condition, trail[0].seed): trail for trail in trails},
        losses=loss_table(run_dir, conditions),
        figures=sorted(figures_dir.glob("*.png")) if figures_dir.is_dir() else [],
    )
