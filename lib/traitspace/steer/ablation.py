"""Ablation experiments: does removing a direction take the misalignment away from an EM checkpoint?

- **On activations**: the EM checkpoint with a direction projected out of the residual stream
  (:func:`.hooks.steer` with ``op="ablate"``) at the given layers, for the EM direction, each top
  trait and a random direction, beside the same checkpoint unablated and the control checkpoint.
- **In the weights**: the direction projected out of each residual-writing LoRA ``B`` matrix
  (:func:`.adapter_ablation.ablate_adapter`), saved as a new adapter and measured like any checkpoint.
  The cross-condition matrix ablates the direction read on condition A from the adapter of condition
  B (a random direction as the baseline), so a direction shared by EM runs shows up off the diagonal.

Every row's preference change is paired by question with its own unablated checkpoint (95% bootstrap
interval over questions). Each measurement is stored and resumed like the sweep's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd
import torch

from ..core.checkpoints import Checkpoint
from ..core.parts import combine_fingerprint
from .adapter_ablation import ablate_adapter
from .hooks import Intervention
from .measure import SUMMARY_KEYS, MeasureSetup, Measurement, measure, paired_preference_change
from .results import ResultStore

ABLATION_COLUMNS = ["setting", "condition", "ablated", "level", *SUMMARY_KEYS, "preference_change",
                    "preference_change_low", "preference_change_high"]
MATRIX_COLUMNS = ["adapter_condition", "direction_from", "removed_share", "preference", "preference_low",
                  "preference_high", "preference_change", "preference_change_low", "preference_change_high"]

Directions = Mapping[int, torch.Tensor]


def directions_fingerprint(directions: Directions) -> str:
    digest = hashlib.sha256()
    for layer in sorted(directions):
        digest.update(str(layer).encode())
        digest.update(torch.as_tensor(directions[layer]).detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _measured(loaded, switcher, checkpoint: Checkpoint, intervention: Intervention, setup: MeasureSetup,
              store: ResultStore, key: str, fingerprint: str, adapter_path=None) -> Measurement:
    def compute() -> Measurement:
        with switcher.use(checkpoint.adapter_path if adapter_path is None else adapter_path):
            return measure(loaded, intervention, setup, checkpoint)

    return store.measured(key, fingerprint, compute)[0]


def _row(setting: str, condition: str, ablated: str, level: str, result: Measurement, reference: Measurement,
         n_boot: int) -> dict:
    change = paired_preference_change(result.preference, reference.preference, n_boot)
    return {"setting": setting, "condition": condition, "ablated": ablated, "level": level, **result.summary, **change}


def run_activation_ablation(
    loaded, switcher, em_checkpoint: Checkpoint, control_checkpoint: Checkpoint | None,
    directions: Mapping[str, Directions], setup: MeasureSetup, store: ResultStore, *, settings_fingerprint: str,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """The EM checkpoint unablated, with each named direction ablated on activations, and the control
    checkpoint (``ABLATION_COLUMNS``; the change is from the unablated EM checkpoint)."""
    def key(name: str) -> str:
        return f"ablation/activations/{em_checkpoint.condition}/{name}"

    base = combine_fingerprint(settings_fingerprint, em_checkpoint.identity())
    reference = _measured(loaded, switcher, em_checkpoint, Intervention.none(), setup, store, key("none"), base)
    rows = [_row("EM checkpoint", em_checkpoint.condition, "", "none", reference, reference, setup.n_boot)]
    for name, per_layer in directions.items():
        fingerprint = combine_fingerprint(base, name, directions_fingerprint(per_layer))
        result = _measured(loaded, switcher, em_checkpoint, Intervention(per_layer, op="ablate"), setup, store,
                           key(name), fingerprint)
        rows.append(_row(f"EM checkpoint, {name} ablated", em_checkpoint.condition, name, "activations", result,
                         reference, setup.n_boot))
        if log:
            log(f"ablated {name}: preference {result.summary['preference']:+.4f}")
    if control_checkpoint is not None:
        fingerprint = combine_fingerprint(settings_fingerprint, control_checkpoint.identity())
        result = _measured(loaded, switcher, control_checkpoint, Intervention.none(), setup, store,
                           f"ablation/activations/{control_checkpoint.condition}/none", fingerprint)
        rows.append(_row("control checkpoint", control_checkpoint.condition, "", "none", result, reference, setup.n_boot))
    return pd.DataFrame(rows, columns=ABLATION_COLUMNS)


def run_weight_ablation(
    loaded, switcher, checkpoints: Mapping[str, Checkpoint], directions: Mapping[str, Directions],
    setup: MeasureSetup, store: ResultStore, adapters_dir: str | Path, *, settings_fingerprint: str,
    keep_norm: bool = True, log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Every direction (by the name of the condition it was read on, or ``random``) ablated from the
    weights of every condition's adapter (``checkpoints``: condition -> its trained checkpoint).

    The ablated adapters are written to ``adapters_dir/<adapter condition>__without__<direction>/``.
    Returns ``MATRIX_COLUMNS``, the change paired with the unablated adapter of the same condition.
    """
    rows = []
    for condition, checkpoint in checkpoints.items():
        if checkpoint.adapter_path is None:
            raise ValueError(f"{condition}: the base model has no adapter to ablate")
        base = combine_fingerprint(settings_fingerprint, checkpoint.identity())
        reference = _measured(loaded, switcher, checkpoint, Intervention.none(), setup, store,
                              f"ablation/weights/{condition}/none", base)
        for name, per_layer in directions.items():
            target = Path(adapters_dir) / f"{condition}__without__{name}"
            modules = ablate_adapter(checkpoint.adapter_path, target, per_layer, keep_norm=keep_norm)
            fingerprint = combine_fingerprint(base, name, directions_fingerprint(per_layer), str(keep_norm))
            result = _measured(loaded, switcher, checkpoint, Intervention.none(), setup, store,
                               f"ablation/weights/{condition}/{name}", fingerprint, adapter_path=target)
            change = paired_preference_change(result.preference, reference.preference, setup.n_boot)
            rows.append({"adapter_condition": condition, "direction_from": name,
                         "removed_share": float(modules["removed_share"].mean()),
                         **{key: result.summary[key] for key in ("preference", "preference_low", "preference_high")},
                         **change})
            if log:
                log(f"{condition} adapter without {name}: preference change {change['preference_change']:+.4f}")
    return pd.DataFrame(rows, columns=MATRIX_COLUMNS)
