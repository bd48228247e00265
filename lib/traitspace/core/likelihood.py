"""How likely a model finds a given answer: mean per-token log-probability of the answer's tokens
given the conversation before it, under the model's own chat template.

Only the tokens of the final assistant message's content count (``TokenizedChat.response_span``):
the system prompt, the question and the template's markers (``<|im_start|>assistant``, the end-of-
turn token) are context, never scored. One batched forward pass per batch of answers; rows are
right-padded with position ids from the attention mask, so a padded row scores exactly as alone.

The LM head is applied only at the positions that predict answer tokens: the full logits of a
batch (rows x length x vocabulary, ~300 MB for SmolLM2 at batch 16) would cost more memory and
time than the rest of the pass, and the scorer runs at every checkpoint.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .chat import TokenizedChat
from .hooks import decoder_backbone, unwrap_model
from .padding import padded_batch
from .prefix_cache import SharedPrefix, continuation, groups_by_key, member_passes, pack_groups


def _answer_positions(chat: TokenizedChat) -> tuple[int, int]:
    """``(first, end)`` of the answer's tokens; each is predicted by the position before it."""
    if chat.response_span is None or chat.response_span[0] >= chat.response_span[1]:
        raise ValueError("an answer to score must end the conversation and have at least one token")
    first, end = chat.response_span
    if first == 0:
        raise ValueError("the answer's first token has no context to be predicted from")
    return first, end


def _logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head on selected hidden states, with the final soft-capping some families apply."""
    base = unwrap_model(model)
    logits = base.get_output_embeddings()(hidden).float()
    cap = getattr(base.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _answer_token_logp(model, hidden: torch.Tensor, chats: Sequence[TokenizedChat], positions, rows: Sequence[int],
                       offsets: Sequence[int]) -> np.ndarray:
    """Mean log p per answer token for the batch ``rows``; ``hidden[slot]`` holds row ``rows[slot]``'s
    tokens from ``offsets[slot]`` on (its shared prefix, when it had one, ran in an earlier pass)."""
    device = hidden.device
    # Position p predicts token p + 1: gather the predicting positions of every answer token.
    batch_index, predicting, targets = [], [], []
    for slot, row in enumerate(rows):
        first, end = positions[row]
        batch_index += [slot] * (end - first)
        predicting += range(first - 1 - offsets[slot], end - 1 - offsets[slot])
        targets += chats[row].input_ids[first:end]
    logits = _logits(model, hidden[torch.tensor(batch_index, device=device), torch.tensor(predicting, device=device)])
    token_logp = torch.log_softmax(logits, dim=-1).gather(
        1, torch.tensor(targets, device=device)[:, None])[:, 0].double().cpu()
    owner = torch.tensor(batch_index)
    sums = torch.zeros(len(rows), dtype=torch.float64).index_add_(0, owner, token_logp)
    return (sums / torch.bincount(owner, minlength=len(rows)).double()).numpy()


@torch.inference_mode()
def answer_log_likelihoods(model, chats: Sequence[TokenizedChat], pad_token_id: int,
                           batch_size: int = 16, share_prefixes: bool = True) -> np.ndarray:
    """Mean log-probability per answer token of each chat's final assistant message, ``[n]``.

    Args:
        model: a causal LM (peft-wrapped or not); the active adapter is the one scored.
        chats: conversations ending with the assistant answer to score (``ChatFormat.tokenize``).
        pad_token_id: any id; padded positions are masked out.
        batch_size: conversations per forward pass (sorted by length to limit padding).
        share_prefixes: run the prompt shared by several answers (the same question under the same
            template) once and score each answer on its key/value cache
            (:mod:`traitspace.core.prefix_cache`). The preference scores ~10 answers per question, so
            this skips about half of its tokens; the scores equal the plain pass's to float rounding.
    """
    positions = [_answer_positions(chat) for chat in chats]
    if share_prefixes:
        return _shared_prefix_scores(model, chats, positions, pad_token_id, batch_size)
    device = next(model.parameters()).device
    backbone = decoder_backbone(model)
    scores = np.empty(len(chats), dtype=np.float64)
    order = sorted(range(len(chats)), key=lambda index: len(chats[index].input_ids))
    for start in range(0, len(order), batch_size):
        rows = order[start: start + batch_size]
        inputs, _ = padded_batch([chats[row].input_ids for row in rows], pad_token_id, "right")
        inputs = {key: value.to(device) for key, value in inputs.items()}
        hidden = backbone(**inputs).last_hidden_state  # [b, T, H]
        scores[rows] = _answer_token_logp(model, hidden, chats, positions, rows, [0] * len(rows))
    return scores


def _shared_prefix_scores(model, chats: Sequence[TokenizedChat], positions, pad_token_id: int,
                          batch_size: int) -> np.ndarray:
    """:func:`answer_log_likelihoods` with each prompt run once per batch of its answers; the answers
    run in passes of at most ``batch_size`` rows sorted by length, whatever their question."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    backbone = decoder_backbone(model)
    scores = np.empty(len(chats), dtype=np.float64)
    # Group by the prompt up to and including the token that predicts the answer's first token, so a
    # group's shared prefix stops before that token and every answer token is predicted in its own pass.
    prompts = [chat.input_ids[:first] for chat, (first, _) in zip(chats, positions)]
    groups = groups_by_key(prompts, [tuple(prompt) for prompt in prompts], batch_size)
    for batch in pack_groups(groups, batch_size):
        prefix = None
        if batch[0].shared > 0:  # pack_groups never mixes prefixed and unprefixed groups
            prefix = SharedPrefix([prompts[members[0]][:shared] for members, shared in batch], pad_token_id)
            prefix.run(backbone, DynamicCache(config=backbone.config), device)
        remaining = {row: len(chats[row].input_ids) - shared for members, shared in batch for row in members}
        for run in member_passes(batch, remaining, batch_size):
            slots = [slot for slot, _ in run]
            rows = [row for _, row in run]
            shared = [batch[slot].shared for slot in slots]
            step = continuation([chats[row].input_ids[start:] for row, start in zip(rows, shared)],
                                pad_token_id, "right", prefix, slots)
            inputs = {name: tensor.to(device) for name, tensor in step.inputs.items()}
            hidden = backbone(**inputs, past_key_values=step.cache, use_cache=prefix is not None).last_hidden_state
            scores[rows] = _answer_token_logp(model, hidden, chats, positions, rows, shared)
    return scores
