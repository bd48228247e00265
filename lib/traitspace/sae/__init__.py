"""Stage 09 (notebook 09_sae): model diffing with a sparse autoencoder (SAE).

Which learned features of one layer's residual stream change when a model is fine-tuned on EM data,
beyond what its matched control does, and are they the trait directions? Paper 003 found EM's
"persona features" this way; paper 001 uses SAE features as a monitor baseline. Modules, one job each:

- :mod:`.model`: the SAE (TopK, ReLU or JumpReLU; SAE Lens's parameter names) and its quality measures;
- :mod:`.train`: the TopK trainer on cached activations, resumable (why hand-written: its docstring);
- :mod:`.saelens_format`: SAE Lens folders (``cfg.json`` + ``sae_weights.safetensors``), saved and loaded;
- :mod:`.activations`: the training mix and token capture at one layer, cached on disk;
- :mod:`.diff`: per checkpoint, each feature's mean activation and firing frequency on the evaluation
  answers' tokens (template tokens excluded), and the SAE's quality on that checkpoint's activations;
- :mod:`.analysis`: changes from the base model, EM minus control across seeds, top features, cosines;
- :mod:`.steering`: the top features' decoder directions steered on the base model, a random feature as control;
- :mod:`.monitor`: the SAE baseline in notebook 05's monitor comparison, on the same folds;
- :mod:`.stage` runs it all; :mod:`.plots` draws the figures.

Output folder ``outputs/<run>/sae/``: ``sae_model/`` (the SAE used, SAE Lens format), ``activations.safetensors``
(the cached training tokens), ``train_checkpoint.pt``, ``training.json``, ``features/`` (one part per
checkpoint), the tables ``TABLES`` as parquet (read back) and CSV, ``steering/`` (one stored measurement per setting),
``figures/*.png`` and ``manifest.json``. Later readers use only :func:`load_outputs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .model import Quality, SparseAutoencoder, reconstruction_quality
from .saelens_format import SaeFormatError, load_saelens, save_saelens
from .stage import OUTPUT_DIRNAME, SAE_FOLDER, TABLES, run_sae_stage
from .train import TrainSettings, train_sae

__all__ = ["Quality", "SaeFormatError", "SaeOutputs", "SparseAutoencoder", "TrainSettings", "load_outputs",
           "load_saelens", "reconstruction_quality", "run_sae_stage", "save_saelens", "train_sae"]


@dataclass
class SaeOutputs:
    """What stage 09 left in a run folder."""

    manifest: dict
    sae: SparseAutoencoder
    layer: int
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # name (``TABLES``) -> table
    figures: dict[str, Path] = field(default_factory=dict)         # name -> png


def load_outputs(run_dir: str | Path) -> SaeOutputs:
    """Stage 09's outputs of ``run_dir``; FileNotFoundError naming the notebook when it has not run."""
    from ..core.artifacts import read_json
    from ..core.integrity import require_intact

    folder = Path(run_dir) / OUTPUT_DIRNAME
    if not (folder / "manifest.json").is_file():
        raise FileNotFoundError(f"no SAE results in {folder}: run notebook 09 first")
    require_intact(folder, "09")  # a damaged file is named with its fix, not met as a parquet error
    manifest = read_json(folder / "manifest.json")
    tables = {name: pd.read_parquet(folder / f"{name}.parquet") for name in TABLES}
    if manifest.get("training", {}).get("source") == "trained":
        sae, layer, _ = load_saelens(folder / SAE_FOLDER)
    else:
        sae, layer, _ = load_saelens(manifest["training"]["source"])
    figures = {path.stem: path for path in sorted((folder / "figures").glob("*.png"))}
    return SaeOutputs(manifest, sae, layer, tables, figures)
