"""Stage 06 (notebook 06_steering): causal tests along trait directions and the EM direction.

Notebooks 03-05 correlate trait drift with behaviour; this stage intervenes. Modules, one job each:

- :mod:`.hooks`: the one steering context manager ``steer(model, {layer: direction}, alpha, op=...)``
  (add, ablate, ablate-then-add; all tokens or the response's), used for generation, likelihood
  scoring and capture alike;
- :mod:`.scale`: the unit of alpha, a layer's median token residual norm over the extraction prompts;
- :mod:`.em_direction`: the EM direction of a checkpoint (misaligned minus aligned answers, response
  tokens; judged answers or the judge-free pairs) and its model-diff variant;
- :mod:`.compare`: cosines with every trait vector against a random-direction null; least squares in
  the trait basis;
- :mod:`.adapter_ablation`: a direction projected out of a LoRA adapter's B matrices (saved as a new
  adapter), and its activation-level twin;
- :mod:`.measure`: one setting's misalignment preference, sampled EM rate and coherence;
- :mod:`.results`: each measured setting stored as files, skipped on rerun;
- :mod:`.sweep`: steering sweeps with a random control and a coherence stop;
- :mod:`.ablation`: ablation on the EM checkpoint (activations), and in the weights across conditions;
- :mod:`.stage`: runs it all on the final checkpoint of training seed ``steer.seed``; :mod:`.plots`.

Output folder ``outputs/<run>/steering/``:

- ``em_directions.safetensors``: ``<condition>/contrast`` and ``<condition>/model_diff`` ``[L, H]``
  per condition of the tested pair, with each one's source and counts in the header;
- ``norms.csv`` (median token norm per layer), ``top_traits.csv`` (the steered traits, their EM
  drift and sign), ``em_direction_cosines.csv``, ``em_direction_reading.csv``,
  ``direction_agreement.csv``, ``sweep.csv``, ``ablation.csv``, ``ablation_matrix.csv``;
- ``results/``: one stored measurement per setting (``sweep/<direction>/alpha<+a>``,
  ``ablation/...``); ``adapters/<condition>__without__<direction>/``: the weight-ablated adapters;
- ``figures/*.png``, ``judge_cache/``, ``manifest.json`` (pair, layer, scale, checkpoints, EM
  direction sources).

Later readers use only :func:`load_outputs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .adapter_ablation import ablate_adapter, adapter_contribution_ablated
from .em_direction import EmDirection, load_em_directions
from .hooks import Intervention, steer
from .stage import EM_DIRECTIONS_FILE, OUTPUT_DIRNAME, TABLES, run_steering_stage

__all__ = ["EmDirection", "Intervention", "SteeringOutputs", "ablate_adapter", "adapter_contribution_ablated",
           "load_outputs", "run_steering_stage", "steer"]


@dataclass
class SteeringOutputs:
    """What stage 06 left in a run folder."""

    manifest: dict
    em_directions: dict[str, EmDirection]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)   # name (``TABLES``) -> table
    figures: dict[str, Path] = field(default_factory=dict)          # name -> png


def load_outputs(run_dir: str | Path) -> SteeringOutputs:
    """Stage 06's outputs of ``run_dir``; FileNotFoundError naming the notebook when it has not run."""
    from ..core.artifacts import read_json
    from ..core.integrity import require_intact

    folder = Path(run_dir) / OUTPUT_DIRNAME
    if not (folder / "manifest.json").is_file():
        raise FileNotFoundError(f"no steering results in {folder}: run notebook 06 first")
    require_intact(folder, "06")  # a damaged file is named with its fix, not met as a CSV or safetensors error
    tables = {}
    for name in TABLES:
        path = folder / f"{name}.csv"
        try:
            tables[name] = pd.read_csv(path)
        except pd.errors.EmptyDataError:  # a table with no rows (e.g. ablation off) is written empty
            tables[name] = pd.DataFrame()
    figures = {path.stem: path for path in sorted((folder / "figures").glob("*.png"))}
    return SteeringOutputs(read_json(folder / "manifest.json"), load_em_directions(folder / EM_DIRECTIONS_FILE),
                           tables, figures)
