"""The sparse autoencoder itself and its quality measures: pure tensor maths, no I/O, no model.

An SAE reads one residual-stream vector ``x [d_in]`` (layer i = output of decoder block i, the
convention of :mod:`traitspace.core.hooks`) and writes it as a sparse sum of learned directions:

    pre = (x - b_dec * apply_b_dec_to_input) @ W_enc + b_enc        [d_sae]
    f   = activation(pre)                                           [d_sae], mostly zeros
    x^  = f @ W_dec + b_dec                                         [d_in]

``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]`` (row j = feature j's decoder direction),
``b_enc [d_sae]``, ``b_dec [d_in]``: the parameter names and shapes of SAE Lens, so a published SAE
loads into this class unchanged (:mod:`.saelens_format`). Activations:

- ``topk``: keep the ``k`` largest pre-activations of each vector, ReLU them, zero the rest
  (Gao et al. 2024; SAE Lens's ``topk``: top-k first, then ReLU);
- ``relu``: SAE Lens's ``standard`` architecture;
- ``jumprelu``: ``pre`` where ``pre > threshold`` (a per-feature ``threshold [d_sae]``), else 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

Activation = Literal["topk", "relu", "jumprelu"]


class SparseAutoencoder(nn.Module):
    """One layer's SAE (see the module docstring for the maths and the parameter shapes)."""

    def __init__(self, d_in: int, d_sae: int, k: int | None = None, activation: Activation = "topk",
                 apply_b_dec_to_input: bool = True, seed: int = 0):
        super().__init__()
        if activation == "topk" and (k is None or not 0 < k <= d_sae):
            raise ValueError(f"a TopK SAE needs 0 < k <= d_sae ({d_sae}), got k={k}")
        self.d_in, self.d_sae, self.k, self.activation = int(d_in), int(d_sae), k, activation
        self.apply_b_dec_to_input = bool(apply_b_dec_to_input)
        generator = torch.Generator().manual_seed(int(seed))
        # Decoder rows start as random unit vectors and the encoder as their transpose (Gao et al.):
        # every feature begins by reading the direction it writes.
        decoder = torch.randn(self.d_sae, self.d_in, generator=generator)
        decoder /= decoder.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(decoder)
        self.W_enc = nn.Parameter(decoder.T.clone().contiguous())
        self.b_enc = nn.Parameter(torch.zeros(self.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(self.d_in))
        if activation == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(self.d_sae), requires_grad=False)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., d_in] -> [..., d_sae]`` before the sparsifying activation."""
        x = x.to(self.W_enc.dtype)
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations ``[..., d_sae]`` (non-negative, sparse)."""
        pre = self.pre_activation(x)
        if self.activation == "relu":
            return torch.relu(pre)
        if self.activation == "jumprelu":
            return torch.where(pre > self.threshold, pre, torch.zeros_like(pre))
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, top.indices, torch.relu(top.values))

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def decoder_directions(self) -> torch.Tensor:
        """Unit decoder directions ``[d_sae, d_in]`` (float32): what each feature adds to the residual."""
        rows = self.W_dec.detach().float()
        return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)


@dataclass(frozen=True)
class Quality:
    """How well an SAE reconstructs a set of activation vectors.

    ``variance_explained``: 1 - sum ||x - x^||^2 / sum ||x - mean(x)||^2 over the vectors;
    ``mean_l0``: features active per vector; ``dead_share``: share of features that fired on none
    of the vectors (it depends on how many vectors were read: ``n_vectors``).
    """

    variance_explained: float
    mean_l0: float
    dead_share: float
    n_vectors: int

    def as_dict(self) -> dict:
        return {"variance_explained": self.variance_explained, "mean_l0": self.mean_l0,
                "dead_share": self.dead_share, "n_vectors": self.n_vectors}


@torch.inference_mode()
def firing_counts(sae: SparseAutoencoder, x: torch.Tensor, batch_size: int = 4096) -> tuple[torch.Tensor, float, float]:
    """(per-feature firing counts ``[d_sae]``, summed squared error, summed L0) over ``x [n, d_in]``."""
    counts = torch.zeros(sae.d_sae, dtype=torch.long)
    squared_error = l0 = 0.0
    for start in range(0, len(x), batch_size):
        batch = x[start: start + batch_size].float()
        features = sae.encode(batch)
        active = features > 0
        counts += active.sum(dim=0)
        l0 += float(active.sum())
        squared_error += float((sae.decode(features) - batch).pow(2).sum())
    return counts, squared_error, l0


def reconstruction_quality(sae: SparseAutoencoder, x: torch.Tensor, batch_size: int = 4096) -> Quality:
    """:class:`Quality` of ``sae`` on ``x [n, d_in]``."""
    if x.ndim != 2 or x.shape[1] != sae.d_in or len(x) < 2:
        raise ValueError(f"reconstruction_quality: need [n >= 2, {sae.d_in}] vectors, got {tuple(x.shape)}")
    counts, squared_error, l0 = firing_counts(sae, x, batch_size)
    x = x.float()
    total = float((x - x.mean(dim=0)).pow(2).sum())
    return Quality(1.0 - squared_error / total if total > 0 else float("nan"), l0 / len(x),
                   float((counts == 0).float().mean()), int(len(x)))
