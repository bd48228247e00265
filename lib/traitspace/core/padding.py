"""The one padder: token-id rows of different lengths -> a rectangular batch.

Used by capture (left or right), sampling (left, so every row's next token is in the last column),
the shared-prefix engine (right) and the fine-tuning collator (right, with labels padded by the
ignore index). Position ids are computed from the attention mask, so a padded row sees the
positions it would see alone.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

PaddingSide = Literal["left", "right"]


def pad_rows(rows: Sequence[Sequence[int]], pad_value: int, side: PaddingSide = "right",
             min_width: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """``(values [n, width], attention_mask [n, width], offsets)``: each row placed at its offset
    (0 on the right side, width - length on the left), the rest filled with ``pad_value``."""
    width = max(max((len(row) for row in rows), default=0), min_width)
    values = torch.full((len(rows), width), pad_value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    offsets = []
    for index, row in enumerate(rows):
        length = len(row)
        offset = width - length if side == "left" else 0
        if length:
            values[index, offset: offset + length] = torch.as_tensor(list(row), dtype=torch.long)
            mask[index, offset: offset + length] = 1
        offsets.append(offset)
    return values, mask, offsets


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only (pads get 0)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def padded_batch(rows: Sequence[Sequence[int]], pad_token_id: int, side: PaddingSide = "left"
                 ) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Model inputs (``input_ids``, ``attention_mask``, ``position_ids``) and each row's offset."""
    input_ids, attention_mask, offsets = pad_rows(rows, pad_token_id, side)
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "position_ids": position_ids(attention_mask)}, offsets
