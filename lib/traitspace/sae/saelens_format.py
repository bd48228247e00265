"""SAEs in SAE Lens's folder format: ``cfg.json`` + ``sae_weights.safetensors``.

The format (SAE Lens 6, ``sae_lens/saes/sae.py`` and ``topk_sae.py``): the weights file holds
``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``, ``b_enc [d_sae]``, ``b_dec [d_in]`` (and
``threshold [d_sae]`` for ``jumprelu``); ``cfg.json`` holds ``architecture`` (``standard`` |
``topk`` | ``jumprelu`` | ...), ``d_in``, ``d_sae``, ``dtype``, ``device``, ``apply_b_dec_to_input``,
``normalize_activations``, ``k`` (topk) and a ``meta`` dict (``model_name``, ``hook_name``,
``hook_layer``, ...). Releases saved before SAE Lens 6 keep the same weights and put the metadata at
the top level, with the activation as ``activation_fn_str`` / ``activation_fn_kwargs.k``; both are read.

Which layer: SAE Lens names a hook point. ``blocks.N.hook_resid_post`` (TransformerLens) and
``model.layers.N`` (a transformers module's output) are the output of block N, this workbook's layer
N; ``blocks.N.hook_resid_pre`` is the input of block N, i.e. layer N - 1 here. Any other hook (an
attention or MLP output) is not the residual stream and is refused.

Only ``normalize_activations: none`` is accepted: the other settings rescale inputs by statistics the
folder does not carry (SAE Lens reads them from its release registry), so numbers would silently be
off. Published SAEs are usually saved with the scaling already folded in.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..core.artifacts import atomic_path, atomic_write_json
from .model import SparseAutoencoder

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
_ARCHITECTURES = {"topk": "topk", "standard": "relu", "jumprelu": "jumprelu"}
_HOOKS = ((re.compile(r"^blocks\.(\d+)\.hook_resid_post$"), 0), (re.compile(r"^model\.layers\.(\d+)$"), 0),
          (re.compile(r"^blocks\.(\d+)\.hook_resid_pre$"), -1))


class SaeFormatError(ValueError):
    """A folder that is not a usable SAE Lens SAE; the message names the file and the key."""


def layer_of_hook(hook_name: str) -> int:
    """This workbook's layer (output of block i) read by an SAE Lens hook point (module docstring)."""
    for pattern, shift in _HOOKS:
        match = pattern.match(hook_name)
        if match:
            layer = int(match.group(1)) + shift
            if layer < 0:
                raise SaeFormatError(f"hook {hook_name!r} reads the embeddings, not a block's output")
            return layer
    raise SaeFormatError(f"hook {hook_name!r} is not a residual-stream hook this workbook can read "
                         "(blocks.N.hook_resid_post, blocks.N.hook_resid_pre or model.layers.N)")


def save_saelens(sae: SparseAutoencoder, folder: str | Path, layer: int, model_name: str | None = None,
                 extra_meta: dict | None = None) -> Path:
    """Write ``sae`` as an SAE Lens folder whose hook is ``blocks.<layer>.hook_resid_post``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    architecture = {value: key for key, value in _ARCHITECTURES.items()}[sae.activation]
    tensors = {name: getattr(sae, name).detach().float().contiguous() for name in ("W_enc", "W_dec", "b_enc", "b_dec")}
    if sae.activation == "jumprelu":
        tensors["threshold"] = sae.threshold.detach().float().contiguous()
    with atomic_path(folder / WEIGHTS_FILE) as temporary:
        save_file(tensors, str(temporary))
    cfg = {"architecture": architecture, "d_in": sae.d_in, "d_sae": sae.d_sae, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": sae.apply_b_dec_to_input, "normalize_activations": "none",
           "reshape_activations": "none",
           "meta": {"model_name": model_name, "hook_name": f"blocks.{layer}.hook_resid_post", "hook_layer": layer,
                    **(extra_meta or {})}}
    if sae.activation == "topk":
        cfg["k"] = sae.k
    atomic_write_json(folder / CFG_FILE, cfg)
    return folder


def _cfg_value(cfg: dict, key: str):
    """A metadata key from ``meta`` (SAE Lens 6) or the top level (earlier releases)."""
    meta = cfg.get("meta") or {}
    return meta.get(key, cfg.get(key))


def load_saelens(folder: str | Path) -> tuple[SparseAutoencoder, int, dict]:
    """(SAE, layer in this workbook's convention, cfg) from an SAE Lens folder; errors name the key."""
    folder = Path(folder).expanduser()
    cfg_path, weights_path = folder / CFG_FILE, folder / WEIGHTS_FILE
    for path in (cfg_path, weights_path):
        if not path.is_file():
            raise SaeFormatError(f"{folder}: no {path.name} (an SAE Lens folder holds {CFG_FILE} and {WEIGHTS_FILE})")
    cfg = json.loads(cfg_path.read_text())
    legacy_activation = cfg.get("activation_fn_str")
    architecture = cfg.get("architecture") or ("topk" if legacy_activation == "topk" else "standard")
    if architecture not in _ARCHITECTURES:
        raise SaeFormatError(f"{cfg_path}: architecture {architecture!r} is not supported "
                             f"(supported: {', '.join(_ARCHITECTURES)})")
    normalize = cfg.get("normalize_activations", "none") or "none"
    if normalize != "none":
        raise SaeFormatError(f"{cfg_path}: normalize_activations {normalize!r} needs a scaling statistic the folder "
                             "does not hold; fold it into the weights first (SAE Lens: fold_activation_norm_scaling_factor)")
    hook_name = _cfg_value(cfg, "hook_name")
    if not hook_name:
        raise SaeFormatError(f"{cfg_path}: no hook_name (in meta or at the top level)")
    layer = layer_of_hook(str(hook_name))
    k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
    tensors = load_file(str(weights_path))
    missing = [name for name in ("W_enc", "W_dec", "b_enc", "b_dec") if name not in tensors]
    if architecture == "jumprelu" and "threshold" not in tensors:
        missing.append("threshold")
    if missing:
        raise SaeFormatError(f"{weights_path}: missing tensor(s) {missing}")
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    expected = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_enc": (d_sae,), "b_dec": (d_in,)}
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise SaeFormatError(f"{weights_path}: {name} has shape {tuple(tensors[name].shape)}, cfg.json's "
                                 f"d_in={d_in}, d_sae={d_sae} make it {shape}")
    sae = SparseAutoencoder(d_in, d_sae, int(k) if k is not None else None, _ARCHITECTURES[architecture],
                            apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)))
    with torch.no_grad():
        for name in expected:
            getattr(sae, name).copy_(tensors[name].float())
        if architecture == "jumprelu":
            sae.threshold.copy_(tensors["threshold"].float())
    sae.requires_grad_(False)
    return sae, layer, cfg
