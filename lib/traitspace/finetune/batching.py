"""Batches for fine-tuning: the right-padding collator, the epoch-seeded sampler, and the step count.

Both the collator and the sampler are our own rather than transformers' (or TRL's), each for a
reason given in its docstring; the collator pads through :func:`traitspace.core.padding.pad_rows`,
the project's one padder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from ..core.padding import pad_rows
from .data import IGNORE_INDEX


@dataclass
class RightPaddingCollator:
    """Pads a batch on the right, counts real and padding tokens, and skips the LM head where no
    token is scored.

    Our own rather than DataCollatorForSeq2Seq because that one pads on the tokenizer's side, and
    several chat tokenizers default to left padding (fine for generation, but it shifts position ids in
    training); counting padding here measures what length grouping saves.

    With the loss on the response only, the positions before the batch's earliest scored token
    predict nothing that counts, yet the model would apply its LM head there (vocabulary-wide
    logits, their log-softmax and its backward). The batch asks the model for logits from the
    position that predicts that token on (``logits_to_keep``, which transformers' causal LMs
    accept) and carries the labels from the same position, so logits and labels stay aligned and
    the loss and its gradient are the full pass's to float rounding. For SmolLM2-135M (a 49k
    vocabulary on a 576-wide model) the LM head is ~20% of a step's FLOPs, and its log-softmax and
    backward alone took 5% of a profiled CPU step.
    """

    pad_token_id: int
    real_tokens: int = 0
    padded_tokens: int = 0

    def __call__(self, features: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask, _ = pad_rows([feature["input_ids"] for feature in features], self.pad_token_id)
        labels, _, _ = pad_rows([feature["labels"] for feature in features], IGNORE_INDEX)
        self.real_tokens += int(attention_mask.sum())
        self.padded_tokens += attention_mask.numel()
        batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        scored = (labels != IGNORE_INDEX).any(dim=0).nonzero()
        # Position p's logits predict token p + 1: keep from the one before the first scored token.
        keep_from = int(scored[0]) - 1 if len(scored) else 0
        if keep_from > 0:
            batch["labels"] = labels[:, keep_from:]
            batch["logits_to_keep"] = labels.shape[1] - keep_from
        return batch

    @property
    def padding_share(self) -> float:
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0


class EpochSeededSampler(torch.utils.data.Sampler[int]):
    """Example order that depends only on (seed, epoch), optionally grouped by length.

    Our own because transformers' LengthGroupedSampler draws from the global RNG (so it follows the
    model seed, not ``data_seed``) and cannot replay a given epoch; here ``set_epoch`` (called by the
    Trainer every epoch, also when resuming) fixes the order, so a resumed run sees the same batches.
    Grouping uses transformers' own ``get_length_grouped_indices`` (mega-batches sorted by length).
    """

    def __init__(self, lengths: Sequence[int], group_size: int | None, seed: int):
        self.lengths = list(lengths)
        self.group_size = group_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        from transformers.trainer_pt_utils import get_length_grouped_indices

        state = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(state)
        if self.group_size:
            return iter(get_length_grouped_indices(self.lengths, self.group_size, generator=generator))
        return iter(torch.randperm(len(self.lengths), generator=generator).tolist())


def total_optimizer_steps(n_examples: int, batch_size: int, grad_accum: int, epochs: float) -> int:
    """Optimizer steps of a run, computed as transformers' Trainer does (last partial batch kept)."""
    batches = math.ceil(n_examples / batch_size)
    per_epoch = max(batches // grad_accum + int(batches % grad_accum > 0), 1)
    return max(math.ceil(epochs * per_epoch), 1)
