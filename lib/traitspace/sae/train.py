"""Train a TopK sparse autoencoder on cached activation vectors, resumable from a checkpoint file.

Why hand-written (about 60 lines of loop) rather than a library: SAE Lens 6.54 (the maintained
trainer, on PyPI as ``sae-lens``) requires transformer-lens, datasets, plotly, nltk, babe and
simple-parsing (read from its wheel's metadata), and its training runner collects activations through
TransformerLens hooks, not through this workbook's capture on a transformers model with LoRA adapters;
``dictionary_learning`` likewise brings nnsight. Here the activations are already captured and cached
(:mod:`.activations`), so training is only the optimisation below. Its output keeps SAE Lens's
parameter names and file format (:mod:`.saelens_format`), so published SAEs and ours are used alike.

The recipe is Gao et al. 2024 (TopK SAEs), as SAE Lens implements it:

- inputs are divided by one scalar, ``scale = sqrt(mean ||x||^2 / d_in)``, so the learning rate means
  the same at any model size; the scale is folded into the weights at the end (the returned SAE reads
  raw activations);
- ``b_dec`` starts at the mean input, decoder rows at random unit vectors, the encoder at their
  transpose; decoder rows are renormalised to unit length after every step;
- loss = squared reconstruction error + ``aux_coefficient`` x the AuxK loss: the ``d_in // 2``
  largest pre-activations among *dead* features (no firing for ``dead_after_steps`` steps) are asked
  to reconstruct the residual the live features left, so dead features get gradient and revive.

The checkpoint (``torch.save`` of parameters, optimiser state, step, sampler state, firing counters
and the loss log, written atomically every ``checkpoint_every`` steps) lets an interrupted training
resume at the step it reached, with the same batches it would have drawn.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..core.artifacts import atomic_path
from .model import SparseAutoencoder


@dataclass(frozen=True)
class TrainSettings:
    d_sae: int
    k: int
    steps: int
    batch_size: int = 512
    learning_rate: float = 5e-4
    aux_coefficient: float = 1 / 32
    dead_after_steps: int = 50
    checkpoint_every: int = 100
    seed: int = 0


@dataclass
class TrainResult:
    sae: SparseAutoencoder            # reads raw activations (the input scale folded in)
    losses: pd.DataFrame              # step, mse (normalised units), aux, dead_share
    scale: float
    seconds: float                    # training time of this call (0 when read back finished)
    resumed_from: int                 # the step the checkpoint held when this call started
    info: dict = field(default_factory=dict)


def _aux_loss(pre: torch.Tensor, residual: torch.Tensor, sae: SparseAutoencoder, dead: torch.Tensor) -> torch.Tensor:
    """AuxK: the top pre-activations among dead features reconstruct the live features' residual."""
    n_dead = int(dead.sum())
    if n_dead == 0:
        return pre.new_zeros(())
    k_aux = min(sae.d_in // 2, n_dead)
    masked = torch.where(dead[None], pre, torch.full_like(pre, -torch.inf))
    top = masked.topk(k_aux, dim=-1)
    features = torch.zeros_like(pre).scatter_(-1, top.indices, torch.relu(top.values))
    return (features @ sae.W_dec - residual).pow(2).sum(dim=-1).mean() * min(n_dead / (sae.d_in // 2), 1.0)


def _save(path: Path, state: dict) -> None:
    # Serialised in memory first: torch.save names the zip's inner folder after the file it writes,
    # which here is a randomly named temporary, so the same state would give different bytes (and
    # content hashes) in every run.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_path(path) as temporary:
        temporary.write_bytes(buffer.getvalue())


def train_sae(activations: torch.Tensor, settings: TrainSettings, checkpoint: str | Path | None = None,
              progress: bool | str = False, log: Callable[[str], None] | None = None,
              identity_extra: dict | None = None) -> TrainResult:
    """Train a TopK SAE on ``activations [n, d_in]`` (see the module docstring); resume from
    ``checkpoint`` when it holds a run with the same settings, data and ``identity_extra`` (what else
    the caller says the training depends on, e.g. its code version)."""
    if activations.ndim != 2 or len(activations) < settings.batch_size:
        raise ValueError(f"train_sae: need [n >= batch_size={settings.batch_size}, d_in] activations, "
                         f"got {tuple(activations.shape)}")
    started = time.perf_counter()
    data = activations.float()
    d_in = data.shape[1]
    scale = float(data.pow(2).sum(dim=1).mean().div(d_in).sqrt())
    sae = SparseAutoencoder(d_in, settings.d_sae, settings.k, "topk", seed=settings.seed)
    optimizer = torch.optim.Adam(sae.parameters(), lr=settings.learning_rate, betas=(0.9, 0.999))
    sampler = torch.Generator().manual_seed(settings.seed)
    since_fired = torch.zeros(settings.d_sae, dtype=torch.long)
    rows: list[dict] = []
    step = 0
    # What the checkpoint must have been trained on: the settings and a content check of the data.
    identity = {"settings": settings.__dict__, "shape": list(data.shape),
                "data": [float(data.double().sum()), float(data.double().pow(2).sum())], **(identity_extra or {})}
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.is_file():
        state = torch.load(path, weights_only=False)
        if state.get("identity") == identity:
            sae.load_state_dict(state["sae"])
            optimizer.load_state_dict(state["optimizer"])
            sampler.set_state(state["sampler"])
            since_fired, rows, step = state["since_fired"], state["losses"], int(state["step"])
            if log:
                log(f"SAE training resumed at step {step} of {settings.steps} ({path})")
    resumed_from = step
    if step == 0:
        with torch.no_grad():
            sae.b_dec.copy_((data / scale).mean(dim=0))
    steps = range(step, settings.steps)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=progress if isinstance(progress, str) else "train SAE", initial=step,
                     total=settings.steps, leave=False)
    for step in steps:
        x = data[torch.randint(len(data), (settings.batch_size,), generator=sampler)] / scale
        pre = sae.pre_activation(x)
        top = pre.topk(settings.k, dim=-1)
        # Decode only the k active rows of W_dec (k x d_in per vector, not d_sae x d_in): same result.
        reconstruction = torch.einsum("bk,bkd->bd", torch.relu(top.values), sae.W_dec[top.indices]) + sae.b_dec
        mse = (reconstruction - x).pow(2).sum(dim=-1).mean()
        dead = since_fired >= settings.dead_after_steps
        aux = _aux_loss(pre, (x - reconstruction).detach(), sae, dead)
        optimizer.zero_grad(set_to_none=True)
        (mse + settings.aux_coefficient * aux).backward()
        optimizer.step()
        with torch.no_grad():
            sae.W_dec.div_(sae.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))
            fired = torch.zeros(settings.d_sae, dtype=torch.bool)
            fired[top.indices[top.values > 0]] = True
            since_fired = torch.where(fired, torch.zeros_like(since_fired), since_fired + 1)
        rows.append({"step": step + 1, "mse": mse.item(), "aux": aux.item(), "dead_share": float(dead.float().mean())})
        if path is not None and ((step + 1) % settings.checkpoint_every == 0 or step + 1 == settings.steps):
            _save(path, {"identity": identity, "sae": sae.state_dict(), "optimizer": optimizer.state_dict(),
                         "sampler": sampler.get_state(), "since_fired": since_fired, "losses": rows, "step": step + 1})
    with torch.no_grad():  # fold the input scale in: the SAE reads raw activations from here on
        sae.W_enc.div_(scale)
        sae.W_dec.mul_(scale)
        sae.b_dec.mul_(scale)
    sae.requires_grad_(False)
    losses = pd.DataFrame(rows, columns=["step", "mse", "aux", "dead_share"])
    seconds = time.perf_counter() - started if resumed_from < settings.steps else 0.0
    return TrainResult(sae, losses, scale, seconds, resumed_from,
                       {"variance_of_normalised_input": float((data / scale).var(dim=0).sum())})
