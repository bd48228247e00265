"""Model diffing with an SAE: each feature's activation on the evaluation answers, per checkpoint.

For one checkpoint (its adapter active) the evaluation conversations are read and every answer
token (template tokens excluded, :func:`.activations.response_spans`) is encoded by the SAE. Per
feature: ``mean_activation`` (mean over all answer tokens), ``frequency`` (share of answer tokens
on which it fires), and per answer its mean and maximum activation (for the top-activating answers).
The same tokens give the SAE's reconstruction quality on this checkpoint's activations: an SAE trained
on the base model may reconstruct a fine-tuned model worse, and the diff is only as good as that.

One part per checkpoint (:class:`traitspace.core.parts.CheckpointParts`), so an interrupted diff
resumes at the next checkpoint and the base model is measured once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..core.parts import CheckpointParts
from .activations import capture_tokens, response_spans
from .model import SparseAutoencoder

FEATURE_COLUMNS = ["feature", "mean_activation", "frequency"]
PER_ANSWER = "per_answer.safetensors"   # attachment: {"mean": [answers, d_sae], "max": [answers, d_sae]}


@dataclass
class CheckpointFeatures:
    table: pd.DataFrame            # FEATURE_COLUMNS, one row per feature
    per_answer_mean: torch.Tensor  # [n_answers, d_sae]
    per_answer_max: torch.Tensor   # [n_answers, d_sae]
    quality: dict                  # variance_explained, mean_l0, dead_share, n_vectors
    seconds: float


@torch.inference_mode()
def feature_statistics(sae: SparseAutoencoder, vectors: torch.Tensor, owner: np.ndarray, n_answers: int,
                       batch_size: int = 4096) -> tuple[pd.DataFrame, torch.Tensor, torch.Tensor]:
    """Per feature mean activation and firing frequency over ``vectors [n_tokens, d_in]``, and per
    answer (``owner[t]`` = the answer of token t) the mean and max activation ``[n_answers, d_sae]``."""
    total = torch.zeros(sae.d_sae, dtype=torch.float64)
    fired = torch.zeros(sae.d_sae, dtype=torch.float64)
    per_sum = torch.zeros(n_answers, sae.d_sae)
    per_max = torch.zeros(n_answers, sae.d_sae)
    owner_tensor = torch.as_tensor(owner, dtype=torch.long)
    for start in range(0, len(vectors), batch_size):
        features = sae.encode(vectors[start: start + batch_size].float())
        rows = owner_tensor[start: start + batch_size]
        total += features.sum(dim=0).double()
        fired += (features > 0).sum(dim=0).double()
        per_sum.index_add_(0, rows, features)
        per_max.scatter_reduce_(0, rows[:, None].expand_as(features), features, "amax", include_self=True)
    counts = torch.bincount(owner_tensor, minlength=n_answers).clamp_min(1).float()[:, None]
    n = max(len(vectors), 1)
    table = pd.DataFrame({"feature": np.arange(sae.d_sae), "mean_activation": (total / n).numpy(),
                          "frequency": (fired / n).numpy()})
    return table, per_sum / counts, per_max


def measure_checkpoint(loaded, sae: SparseAutoencoder, layer: int, conversations: Sequence[Sequence[dict]],
                       batch_size: int = 16) -> CheckpointFeatures:
    """Feature statistics and reconstruction quality of the model as it is now on ``conversations``
    (each ending with an assistant answer)."""
    from .model import reconstruction_quality

    started = time.perf_counter()
    chats = [loaded.chat.tokenize(messages) for messages in conversations]
    vectors, owner = capture_tokens(loaded, chats, response_spans(chats), layer, batch_size)
    table, per_mean, per_max = feature_statistics(sae, vectors, owner, len(chats))
    quality = reconstruction_quality(sae, vectors).as_dict()
    return CheckpointFeatures(table, per_mean, per_max, quality, time.perf_counter() - started)


def write_part(parts: CheckpointParts, checkpoint, measured: CheckpointFeatures, fingerprint: str) -> None:
    from safetensors.torch import save_file

    def attachment(path):
        save_file({"mean": measured.per_answer_mean.contiguous(), "max": measured.per_answer_max.contiguous()}, str(path))

    parts.write(checkpoint, measured.table, fingerprint, extra={"quality": measured.quality, "seconds": measured.seconds},
                attachments={PER_ANSWER: attachment})


def read_part(parts: CheckpointParts, checkpoint) -> tuple[pd.DataFrame, dict[str, torch.Tensor], dict]:
    from safetensors.torch import load_file

    return (parts.read(checkpoint), load_file(str(parts.attachment_path(checkpoint, PER_ANSWER))),
            parts.info(checkpoint))


__all__ = ["CheckpointFeatures", "FEATURE_COLUMNS", "feature_statistics", "measure_checkpoint", "read_part",
           "write_part"]
