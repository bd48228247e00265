"""The unit of a steering coefficient: a layer's typical residual norm.

A steering vector is added to every steered token, so its size is compared with the size of one
token's residual vector at that layer. The typical size is the **median per-token norm** of the
block's output over the extraction conversations (the prompts the trait directions were read from),
on the model being steered. The first token of each conversation is left out: many models park a
huge "attention sink" activation there, which says nothing about the other tokens. With alpha in
these units a sweep means the same at every layer and model size (alpha 1 adds a vector as long as a
typical token's residual).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..core.hooks import collate, decoder_backbone, residual_stream, run_until_stop


@torch.inference_mode()
def residual_norms(loaded, conversations: Sequence[Sequence[dict]], layers: Sequence[int],
                   batch_size: int = 16) -> dict[int, float]:
    """``{layer: median per-token residual norm}`` over ``conversations`` (first token of each left out).

    The forward pass stops after the deepest layer and skips the LM head (only norms are kept).
    """
    if not conversations:
        raise ValueError("residual_norms: no conversations")
    layers = sorted(set(layers))
    chats = [loaded.chat.tokenize(messages) for messages in conversations]
    backbone = decoder_backbone(loaded.model)
    norms: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
    for start in range(0, len(chats), batch_size):
        batch = chats[start: start + batch_size]
        inputs, offsets = collate(batch, loaded.tokenizer.pad_token_id, "left")
        keep = inputs["attention_mask"].bool().clone()
        for row, offset in enumerate(offsets):
            keep[row, offset] = False  # the first real token (attention sink)
        inputs = {name: tensor.to(loaded.device) for name, tensor in inputs.items()}
        with residual_stream(loaded.model, layers, on_output=lambda _layer, hidden: hidden.float().norm(dim=-1).cpu(),
                             stop_after_deepest=True) as captured:
            run_until_stop(lambda: backbone(**inputs, use_cache=False))
        for layer in layers:
            norms[layer].append(captured[layer][keep].numpy())
    return {layer: float(np.median(np.concatenate(values))) for layer, values in norms.items()}


def extraction_conversations(config, loaded, n: int, seed: int = 0) -> list[list[dict]]:
    """Up to ``n`` conversations of stage 02's plan (the extraction prompts), drawn without replacement."""
    from ..extract.plan import build_plan, plan_conversations
    from ..library.traits import load_library

    plan = build_plan(load_library(config.extract.library), config.extract)
    if len(plan) > n:
        plan = plan.iloc[np.sort(np.random.default_rng(seed).choice(len(plan), n, replace=False))]
    return plan_conversations(loaded, plan)
