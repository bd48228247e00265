"""Ablate a direction from a LoRA adapter's weights, and the same ablation done on activations.

A LoRA module adds ``scaling * B A x`` to its base layer's output. The modules whose output is added
straight into the residual stream, the attention output (``o_proj``) and the MLP output
(``down_proj``), write along the columns of their ``B [hidden, r]``. Projecting a residual direction
``u`` out of ``B``, ``B' = B - u (u^T B)``, removes everything the adapter writes along ``u`` in that
block and leaves the rest of the adapter as it was. With ``keep_norm`` the projected ``B'`` is
rescaled to ``B``'s Frobenius norm, so the ablated adapter is as large as the original and a change
in behaviour is not just a weaker adapter (this rescaling also scales the kept components, so only
``keep_norm=False`` equals the activation-level ablation exactly).

The ablated adapter is saved as a new adapter folder (the safetensors file rewritten, the config
copied) and can be evaluated like any checkpoint (``AdapterSwitcher.use(folder)``).

:func:`adapter_contribution_ablated` does the same on activations: it projects ``u`` out of each such
module's LoRA branch output during the forward pass. The tests check the two agree.

In architectures with a norm after each sublayer (Gemma 2 and 3) the module output is normalised
before it reaches the residual stream, so there the ablation is exact in the module's output, not in
the residual stream.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ..core.artifacts import atomic_directory

RESIDUAL_WRITERS = ("o_proj", "down_proj")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_B_KEY = re.compile(r"layers\.(\d+)\.(?:.+\.)?(" + "|".join(RESIDUAL_WRITERS) + r")\.lora_B(?:\.[^.]+)?\.weight$")


def _units(directions: Mapping[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    units = {}
    for layer, vector in directions.items():
        vector = torch.as_tensor(vector).detach().float().flatten()
        if vector.norm() == 0:
            raise ValueError(f"direction at layer {layer} has norm 0")
        units[int(layer)] = vector / vector.norm()
    return units


def project_out(matrix: torch.Tensor, unit: torch.Tensor, keep_norm: bool) -> torch.Tensor:
    """``matrix [H, r]`` with ``unit [H]`` projected out of its columns, optionally rescaled to its
    Frobenius norm (float32 arithmetic, the matrix's dtype back)."""
    original = matrix.float()
    projected = original - torch.outer(unit, unit @ original)
    if keep_norm and projected.norm() > 0:
        projected = projected * (original.norm() / projected.norm())
    return projected.to(matrix.dtype)


def ablate_adapter(adapter_dir: str | Path, target_dir: str | Path, directions: Mapping[int, torch.Tensor],
                   keep_norm: bool = True) -> pd.DataFrame:
    """Write a copy of the adapter at ``adapter_dir`` into ``target_dir`` with each residual-writing
    module's ``B`` in block ``layer`` projected orthogonal to ``directions[layer]``.

    Returns one row per changed matrix: ``key``, ``layer``, ``module``, ``removed_share`` (share of
    ``B``'s squared norm that lay along the direction). Raises when the adapter has no residual-writing
    LoRA module at any of the layers (nothing would be ablated), or uses DoRA.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    adapter_dir, target_dir = Path(adapter_dir), Path(target_dir)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if config.get("use_dora"):
        raise NotImplementedError("DoRA adapters rescale B's output by a learned magnitude; weight ablation covers plain LoRA")
    units = _units(directions)
    with safe_open(str(adapter_dir / ADAPTER_WEIGHTS), framework="pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    rows = []
    for key, matrix in tensors.items():
        found = _B_KEY.search(key)
        if not found or int(found.group(1)) not in units:
            continue
        unit = units[int(found.group(1))]
        if matrix.shape[0] != unit.numel():
            raise ValueError(f"{key}: B has {matrix.shape[0]} rows, the direction {unit.numel()} values")
        along = (unit @ matrix.float()).pow(2).sum() / matrix.float().pow(2).sum().clamp_min(1e-30)
        tensors[key] = project_out(matrix, unit, keep_norm).contiguous()
        rows.append({"key": key, "layer": int(found.group(1)), "module": found.group(2), "removed_share": float(along)})
    if not rows:
        raise ValueError(f"{adapter_dir}: no {'/'.join(RESIDUAL_WRITERS)} LoRA weights at layers {sorted(units)}")
    with atomic_directory(target_dir) as temporary:
        for item in adapter_dir.iterdir():
            if item.is_file() and item.name != ADAPTER_WEIGHTS:
                shutil.copy2(item, temporary / item.name)
        save_file(tensors, str(temporary / ADAPTER_WEIGHTS), metadata=metadata)
        (temporary / "ablation.json").write_text(json.dumps(
            {"source": str(adapter_dir), "layers": sorted(units), "keep_norm": keep_norm, "modules": rows}, indent=2))
    return pd.DataFrame(rows)


def residual_writer_loras(model: nn.Module) -> list[tuple[int, nn.Module]]:
    """``(layer, peft LoRA layer)`` of every residual-writing module that carries LoRA weights."""
    found = []
    for name, module in model.named_modules():
        match = re.search(r"layers\.(\d+)\.(?:.+\.)?(" + "|".join(RESIDUAL_WRITERS) + r")$", name)
        if match and hasattr(module, "lora_B"):
            found.append((int(match.group(1)), module))
    return found


@contextlib.contextmanager
def adapter_contribution_ablated(model: nn.Module, directions: Mapping[int, torch.Tensor]) -> Iterator[int]:
    """Inside the block, each residual-writing LoRA branch in block ``layer`` has ``directions[layer]``
    projected out of its output (the activation-level twin of :func:`ablate_adapter` with
    ``keep_norm=False``); yields the number of hooked branches. Hooks are removed on exit."""
    units = _units(directions)
    handles = []
    merged = [layer for layer, module in residual_writer_loras(model) if getattr(module, "merged", False)]
    if merged:  # a merged branch never runs, so its hook would silently ablate nothing
        raise ValueError(f"the LoRA weights of blocks {sorted(set(merged))} are merged into the base weights; "
                         "use AdapterSwitcher(loaded, merge=False) to ablate the adapter's contribution")

    def hook(unit):
        def project(_module, _inputs, output):
            unit_here = unit.to(device=output.device)
            result = output.float()
            return (result - (result @ unit_here)[..., None] * unit_here).to(output.dtype)

        return project

    try:
        for layer, module in residual_writer_loras(model):
            if layer in units:
                for branch in module.lora_B.values():
                    handles.append(branch.register_forward_hook(hook(units[layer])))
        if not handles:
            raise ValueError(f"no residual-writing LoRA module at layers {sorted(units)}")
        yield len(handles)
    finally:
        for handle in handles:
            handle.remove()
