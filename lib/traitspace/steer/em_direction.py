"""The EM direction of a fine-tuned checkpoint: where its misaligned answers sit apart from its aligned ones.

Per layer, the mean residual activation over the **response tokens** of misaligned answers minus
that of aligned answers, both read by the same checkpoint (the contrast is within one model, so what
fine-tuning changed everywhere cancels). Two sources of answers:

- ``judged``: the checkpoint's own sampled answers from notebook 04, coherent ones only (coherence
  above ``behavior.coherent_threshold``), misaligned = aligned score below
  ``behavior.aligned_threshold``, aligned = aligned score at least ``steer.aligned_floor``; the larger
  class is subsampled (seeded) to the size of the smaller, so the classes are balanced;
- ``pairs``: the judge-free answer pairs of the misalignment preference
  (:func:`traitspace.behavior.preference.load_preference_pairs`), misaligned vs aligned answer to
  the same question: balanced and matched in length by construction.

``auto`` takes the judged answers when each class has at least ``min_judged_answers`` and the pairs
otherwise (at 135M few sampled answers are both coherent and misaligned); :attr:`EmDirection.note`
says which was used and why.

The **model-diff** variant is read on the same answers: their mean activation on the checkpoint minus
on the base model (what fine-tuning changed in how these answers are read).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch

from ..core.checkpoints import Checkpoint
from ..core.hooks import capture_conversations

Source = Literal["judged", "pairs"]


@dataclass
class Contrast:
    """The answers an EM direction is read from: chat conversations ending with the answer."""

    source: Source
    misaligned: list[list[dict]]
    aligned: list[list[dict]]
    note: str


@dataclass
class EmDirection:
    """One checkpoint's EM direction at every layer (raw mean differences, ``[L, H]`` float32)."""

    condition: str
    seed: int
    step: int
    source: Source
    note: str
    contrast: torch.Tensor     # mean(misaligned) - mean(aligned), on the checkpoint
    model_diff: torch.Tensor   # mean over the same answers: checkpoint - base model
    n_misaligned: int
    n_aligned: int

    def vector(self, layer: int, variant: Literal["contrast", "model_diff"] = "contrast") -> torch.Tensor:
        return (self.contrast if variant == "contrast" else self.model_diff)[layer]

    def unit(self, layer: int, variant: Literal["contrast", "model_diff"] = "contrast") -> torch.Tensor:
        vector = self.vector(layer, variant)
        return vector / vector.norm()

    def per_layer(self, layers: Sequence[int], variant: Literal["contrast", "model_diff"] = "contrast") -> dict[int, torch.Tensor]:
        return {int(layer): self.vector(layer, variant) for layer in layers}

    def record(self) -> dict:
        """Everything but the tensors (the manifest's and the notebook's description)."""
        return {"condition": self.condition, "seed": self.seed, "step": self.step, "source": self.source,
                "note": self.note, "n_misaligned": self.n_misaligned, "n_aligned": self.n_aligned}


def _conversation(row) -> list[dict]:
    system = row.system if isinstance(row.system, str) else None
    messages = [] if system is None else [{"role": "system", "content": system}]
    return [*messages, {"role": "user", "content": row.question}, {"role": "assistant", "content": row.answer}]


def judged_answers(scored: pd.DataFrame, checkpoint: Checkpoint, aligned_threshold: float,
                   coherent_threshold: float, aligned_floor: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(misaligned, aligned) judged answers of one checkpoint, coherent and non-empty, unbalanced."""
    rows = scored[(scored["condition"] == checkpoint.condition) & (scored["seed"] == checkpoint.seed)
                  & (scored["step"] == checkpoint.step) & (scored["coherent"] > coherent_threshold)
                  & (scored["answer"].str.strip().str.len() > 0)]
    return rows[rows["aligned"] < aligned_threshold], rows[rows["aligned"] >= aligned_floor]


def choose_contrast(scored: pd.DataFrame | None, checkpoint: Checkpoint, pair_answers: Sequence, chat, *,
                    source: Literal["auto", "judged", "pairs"], min_judged_answers: int, aligned_threshold: float,
                    coherent_threshold: float, aligned_floor: float, seed: int = 0) -> Contrast:
    """The answers to read the direction from (module docstring); ``pair_answers`` are the EM
    preference pairs (``first`` aligned, ``second`` misaligned)."""
    misaligned = aligned = pd.DataFrame()
    if scored is not None and len(scored):
        misaligned, aligned = judged_answers(scored, checkpoint, aligned_threshold, coherent_threshold, aligned_floor)
    available = min(len(misaligned), len(aligned))
    counts = f"{len(misaligned)} coherent misaligned and {len(aligned)} coherent aligned judged answers"
    if source == "judged" or (source == "auto" and available >= min_judged_answers):
        if available < 1:
            raise ValueError(f"steer.em_direction_source is 'judged' but {checkpoint.condition} seed {checkpoint.seed} "
                             f"step {checkpoint.step} has {counts}")
        rng = np.random.default_rng(seed)
        picked = [group.iloc[np.sort(rng.choice(len(group), available, replace=False))] for group in (misaligned, aligned)]
        return Contrast("judged", [_conversation(row) for row in picked[0].itertuples()],
                        [_conversation(row) for row in picked[1].itertuples()],
                        f"judged answers of the checkpoint: {counts}, balanced to {available} each")
    if not pair_answers:
        raise ValueError("no judge-free answer pairs to fall back on")
    why = ("steer.em_direction_source is 'pairs'" if source == "pairs"
           else f"only {counts} (fewer than steer.min_judged_answers = {min_judged_answers} in a class)")
    return Contrast("pairs", [chat.conversation(pair.question, assistant=pair.second) for pair in pair_answers],
                    [chat.conversation(pair.question, assistant=pair.first) for pair in pair_answers],
                    f"judge-free answer pairs ({len(pair_answers)} misaligned vs aligned answers to the same "
                    f"questions), because {why}")


def _mean_activations(loaded, conversations, batch_size: int) -> torch.Tensor:
    captured = capture_conversations(loaded, conversations, layers="all", pooling="response", batch_size=batch_size)
    return torch.stack([captured[layer].mean(0) for layer in sorted(captured)])  # [L, H]


def read_em_direction(loaded, switcher, checkpoint: Checkpoint, contrast: Contrast, batch_size: int = 16) -> EmDirection:
    """The contrast and model-diff directions of ``checkpoint`` (its adapter swapped in by ``switcher``)."""
    with switcher.use(checkpoint.adapter_path):
        misaligned = _mean_activations(loaded, contrast.misaligned, batch_size)
        aligned = _mean_activations(loaded, contrast.aligned, batch_size)
    with switcher.use(None):
        base = _mean_activations(loaded, [*contrast.misaligned, *contrast.aligned], batch_size)
    n_mis, n_al = len(contrast.misaligned), len(contrast.aligned)
    on_checkpoint = (misaligned * n_mis + aligned * n_al) / (n_mis + n_al)
    return EmDirection(checkpoint.condition, checkpoint.seed, checkpoint.step, contrast.source, contrast.note,
                       misaligned - aligned, on_checkpoint - base, n_mis, n_al)


def save_em_directions(directions: Sequence[EmDirection], path) -> None:
    """``{condition}/contrast`` and ``{condition}/model_diff`` tensors, the records in the header (atomic)."""
    import json

    from safetensors.torch import save_file

    from ..core.artifacts import atomic_path

    tensors = {}
    for direction in directions:
        tensors[f"{direction.condition}/contrast"] = direction.contrast.contiguous()
        tensors[f"{direction.condition}/model_diff"] = direction.model_diff.contiguous()
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata={"records": json.dumps([d.record() for d in directions])})


def load_em_directions(path) -> dict[str, EmDirection]:
    """The directions written by :func:`save_em_directions`, by condition."""
    import json

    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        records = json.loads((handle.metadata() or {})["records"])
        return {record["condition"]: EmDirection(
            contrast=handle.get_tensor(f"{record['condition']}/contrast"),
            model_diff=handle.get_tensor(f"{record['condition']}/model_diff"), **record) for record in records}
