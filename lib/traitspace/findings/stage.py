"""Notebook 05's folder and the names of its figures, decided here once: the notebook saves the
figures under these paths and the report embeds them from the same paths.
"""

from __future__ import annotations

from pathlib import Path

from ..core.artifacts import Stage
from ..core.code_versions import code_version

OUTPUT_FOLDER = "findings"
FIGURES_FOLDER = "figures"


def open_stage(config) -> Stage:
    """``<run_dir>/findings`` with its ``figures/`` folder created; the hash covers every params
    section, since the findings read every earlier stage."""
    stage = Stage(Path(config.run_dir) / OUTPUT_FOLDER, params_hash=config.params_hash(), code_version=code_version("findings"))
    (stage.path / FIGURES_FOLDER).mkdir(parents=True, exist_ok=True)
    return stage


def timing_figure(out_dir, em: str) -> Path:
    """The fingerprint-and-behaviour figure of one EM condition."""
    return Path(out_dir) / FIGURES_FOLDER / f"timing__{em}.png"


def monitor_figure(out_dir) -> Path:
    return Path(out_dir) / FIGURES_FOLDER / "monitor_auroc.png"


def spearman_figure(out_dir) -> Path:
    return Path(out_dir) / FIGURES_FOLDER / "spearman.png"
