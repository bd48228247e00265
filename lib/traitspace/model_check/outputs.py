"""Notebook 00's files: the stage folder and its cache key, writing the tables, and the one loader.

Figures are written by :mod:`.plots` under the names it defines; this module lists them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..core.artifacts import Stage, atomic_path
from ..core.code_versions import code_version
from ..core.integrity import require_intact
from .measure import PersonaContrast
from .plots import LAYER_PROFILE_FIGURE, PCA_FIGURE

OUTPUT_FOLDER = "00_model_check"
REPLIES_FILE = "replies.csv"
SEPARATION_FILE = "separation.csv"
# The sections whose values change what this stage measures; any other edit reuses its outputs.
PARAMS_SECTIONS = ("model", "capture", "model_check")


def stage(config) -> Stage:
    """The stage folder ``<run_dir>/00_model_check`` (created), cached on :data:`PARAMS_SECTIONS`."""
    result = Stage(Path(config.run_dir) / OUTPUT_FOLDER, params_hash=config.params_hash(*PARAMS_SECTIONS),
                   code_version=code_version("model_check"))
    result.path.mkdir(parents=True, exist_ok=True)
    return result


def _write_csv(table: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as temporary:
        table.to_csv(temporary, index=False)
    return path


def save_replies(replies: pd.DataFrame, folder: str | Path) -> Path:
    """``replies.csv``: setting, prompt, system_prompt_seen, reply."""
    return _write_csv(replies, Path(folder) / REPLIES_FILE)


def save_contrast(contrast: PersonaContrast, folder: str | Path) -> Path:
    """``separation.csv``: layer, cosine, relative_distance."""
    return _write_csv(contrast.separation, Path(folder) / SEPARATION_FILE)


@dataclass
class ModelCheckOutputs:
    """What notebook 00 wrote: ``replies`` and ``separation`` as in their CSV files, and the
    figures that exist."""

    replies: pd.DataFrame
    separation: pd.DataFrame
    figures: list[Path] = field(default_factory=list)


def load_outputs(run_dir: str | Path) -> ModelCheckOutputs:
    """Read notebook 00's tables and list its figures from ``<run_dir>/00_model_check``."""
    folder = Path(run_dir) / OUTPUT_FOLDER
    missing = [name for name in (REPLIES_FILE, SEPARATION_FILE) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}: run notebook 00_model_check first")
    require_intact(folder, "00")  # a damaged table is named with its fix, not met as a CSV error
    figures = [folder / name for name in (LAYER_PROFILE_FIGURE, PCA_FIGURE) if (folder / name).is_file()]
    return ModelCheckOutputs(
        replies=pd.read_csv(folder / REPLIES_FILE, keep_default_na=False),
        separation=pd.read_csv(folder / SEPARATION_FILE),
        figures=figures,
    )
