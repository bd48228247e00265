"""Prompt-pooled activations with shared prefixes computed once: the capture extraction and
projection use when they read prompts (``last_prompt`` or ``prompt`` pooling).

Conversations that share everything before their last message (a system prompt, or the template's
default one) share every token before the question: that prefix runs once, its key/value cache is
reused, and only each conversation's own tokens run on top (:mod:`traitspace.core.prefix_cache`).
This is exact (causal attention) and equals :func:`traitspace.core.hooks.capture_conversations` to
float rounding; for the trait library it cuts the tokens run by more than half, for the projection
prompts (one default system prompt) by about half.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .hooks import decoder_backbone, resolve_layers, residual_stream, run_until_stop
from .prefix_cache import PrefixGroup, SharedPrefix, continuation, groups_by_key, member_passes, pack_groups


@dataclass
class CaptureCounts:
    """Tokens run through the model, against what plain batched capture would have run."""

    tokens_run: int = 0
    tokens_plain: int = 0
    forward_passes: int = 0


def _capture_batch(loaded, prompts: Sequence[Sequence[int]], batch: Sequence[PrefixGroup], layers: list[int],
                   pooling: str, counts: CaptureCounts, max_rows: int) -> tuple[list[int], dict[int, torch.Tensor]]:
    """Run one batch of prefix groups: all their prefixes in one forward pass, then the members on
    their group's prefix cache, in passes of at most ``max_rows`` sorted by length
    (:func:`traitspace.core.prefix_cache.member_passes`). Returns (conversation indices, pooled rows
    in that order)."""
    from transformers import DynamicCache

    model, device, pad_id = loaded.model, loaded.device, loaded.tokenizer.pad_token_id
    backbone = decoder_backbone(model)
    prefix = None
    prefix_sums: dict[int, torch.Tensor] = {}
    if batch[0].shared > 0:  # pack_groups never mixes prefixed and unprefixed groups
        prefix = SharedPrefix([prompts[members[0]][:shared] for members, shared in batch], pad_id)

        def sum_prefix(_layer: int, hidden: torch.Tensor) -> torch.Tensor | None:
            if pooling != "prompt":
                return None  # last-token pooling needs only the prefix's keys and values
            return torch.einsum("bs,bsh->bh", prefix.mask.float().to(hidden.device), hidden.float()).cpu()

        # Stopping after the deepest requested layer is safe: the member passes stop there too, so
        # deeper layers' keys and values are never read.
        with residual_stream(model, layers, on_output=sum_prefix, stop_after_deepest=True) as seen:
            prefix.run(lambda **inputs: run_until_stop(lambda: backbone(**inputs)),
                       DynamicCache(config=backbone.config), device)
        prefix_sums = dict(seen) if pooling == "prompt" else {}
        counts.tokens_run += int(prefix.mask.sum())
        counts.forward_passes += 1

    order: list[int] = []
    results: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    remaining = {index: len(prompts[index]) - shared for members, shared in batch for index in members}
    for run in member_passes(batch, remaining, max_rows):
        rows = [slot for slot, _ in run]
        indices = [index for _, index in run]
        suffixes = [prompts[index][batch[row].shared:] for row, index in zip(rows, indices)]
        step = continuation(suffixes, pad_id, "right", prefix, rows)
        last = torch.tensor([len(suffix) - 1 for suffix in suffixes])

        def pool_members(_layer: int, hidden: torch.Tensor) -> torch.Tensor:
            if pooling == "last_prompt":
                return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.to(hidden.device)].float().cpu()
            return torch.einsum("bs,bsh->bh", step.mask.float().to(hidden.device), hidden.float()).cpu()

        inputs = {name: tensor.to(device) for name, tensor in step.inputs.items()}
        with residual_stream(model, layers, on_output=pool_members, stop_after_deepest=True) as pooled:
            run_until_stop(lambda: backbone(**inputs, past_key_values=step.cache, use_cache=prefix is not None))
        counts.tokens_run += int(step.mask.sum())
        counts.tokens_plain += sum(len(prompts[index]) for index in indices)
        counts.forward_passes += 1
        prompt_lengths = torch.tensor([len(prompts[index]) for index in indices], dtype=torch.float32)
        for layer in layers:
            values = pooled[layer]
            if pooling == "prompt":  # mean over the whole prompt = (prefix sum + member sum) / prompt length
                if prefix_sums:
                    values = values + prefix_sums[layer][rows]
                values = values / prompt_lengths[:, None]
            results[layer].append(values)
        order.extend(indices)
    return order, {layer: torch.cat(parts) for layer, parts in results.items()}


@torch.inference_mode()
def capture_shared_prefixes(
    loaded,
    conversations: Sequence[Sequence[dict]],
    layers: Sequence[int] | str = "all",
    pooling: str = "last_prompt",
    batch_size: int = 64,
    counts: CaptureCounts | None = None,
    max_length: int | None = None,
) -> dict[int, torch.Tensor]:
    """Prompt-pooled activations ``{layer: Tensor[n, H]}``, equal to
    :func:`traitspace.core.hooks.capture_conversations` with ``pooling="last_prompt"`` or ``"prompt"``,
    but each run of shared leading tokens is computed once.

    Conversations are grouped by everything before their last message (the system prompt, in
    practice); a group's common token prefix is run once, its key/value cache is reused by every
    member, and only each member's remaining tokens are run on top. Several groups share one prefix
    pass, and their members run in passes of at most ``batch_size`` rows. ``counts`` (optional)
    accumulates the tokens run, against those plain capture would run; ``max_length`` is passed to
    the tokenizer as in :func:`traitspace.core.hooks.capture_conversations`.
    """
    if pooling not in ("last_prompt", "prompt"):
        raise ValueError(f"capture_shared_prefixes pools over the prompt; got pooling={pooling!r}")
    if not conversations:
        raise ValueError("no conversations to capture")
    chats = [loaded.chat.tokenize(messages, max_length=max_length) for messages in conversations]
    for index, chat in enumerate(chats):
        if chat.response_span is not None:
            raise ValueError(f"conversation {index} ends with an answer; prompt pooling reads prompts only")
    prompts = [chat.input_ids[: chat.prompt_span[1]] for chat in chats]
    contexts = [json.dumps(list(messages)[:-1], sort_keys=True) for messages in conversations]
    layers = resolve_layers(layers, loaded.num_layers)
    counts = counts if counts is not None else CaptureCounts()
    outputs = {layer: torch.zeros(len(chats), loaded.hidden_size) for layer in layers}
    for batch in pack_groups(groups_by_key(prompts, contexts, batch_size), batch_size):
        indices, pooled = _capture_batch(loaded, prompts, batch, layers, pooling, counts, batch_size)
        for layer in layers:
            outputs[layer][torch.tensor(indices)] = pooled[layer]
    return outputs
