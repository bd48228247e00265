"""Reading the model for extraction: one activation per layer and planned conversation.

- Prompt mode: the residual stream at the last prompt token, or the mean over the prompt tokens,
  with shared prefixes computed once (:func:`capture_shared_prefixes`, on the engine of
  :mod:`traitspace.core.prefix_cache`). Conversations that share a system prompt share every token
  before the question: that prefix runs once, its key/value cache is reused, and only the question
  tokens run on top, which is exact (causal attention) and cuts the tokens processed by more than
  half for the trait library.
- Response mode: the model answers each question under its system prompt
  (:func:`traitspace.core.sampling.generate_replies`), then activations are averaged over the answer
  tokens (:func:`traitspace.core.hooks.capture_conversations`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..core.config import ExtractSection
from ..core.hooks import capture_conversations, decoder_backbone, resolve_layers, residual_stream, run_until_stop
from ..core.prefix_cache import PrefixGroup, SharedPrefix, continuation, groups_by_key, pack_groups
from .plan import plan_conversations, system_or_none


@dataclass
class CaptureCounts:
    """Tokens run through the model, against what plain batched capture would have run."""

    tokens_run: int = 0
    tokens_plain: int = 0
    forward_passes: int = 0


def _capture_batch(loaded, prompts: Sequence[Sequence[int]], batch: Sequence[PrefixGroup], layers: list[int],
                   pooling: str, counts: CaptureCounts) -> tuple[list[int], dict[int, torch.Tensor]]:
    """Run one batch of prefix groups: all their prefixes in one forward pass, then, for k = 0, 1, ...,
    the k-th member of every group on its group's prefix cache (one pass per k, so the rows of a pass
    have similar lengths). Returns (conversation indices, pooled rows in that order)."""
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
    for k in range(max(len(members) for members, _ in batch)):
        rows = [row for row, (members, _) in enumerate(batch) if len(members) > k]
        indices = [batch[row].members[k] for row in rows]
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
) -> dict[int, torch.Tensor]:
    """Prompt-pooled activations ``{layer: Tensor[n, H]}``, equal to
    :func:`traitspace.core.hooks.capture_conversations` with ``pooling="last_prompt"`` or ``"prompt"``,
    but each run of shared leading tokens is computed once.

    Conversations are grouped by everything before their last message (the system prompt, in
    practice); a group's common token prefix is run once, its key/value cache is reused by every
    member, and only each member's remaining tokens are run on top. Several groups share one pair
    of forward passes (at most ``batch_size`` members). ``counts`` (optional) accumulates the tokens
    run, against those plain capture would run.
    """
    if pooling not in ("last_prompt", "prompt"):
        raise ValueError(f"capture_shared_prefixes pools over the prompt; got pooling={pooling!r}")
    if not conversations:
        raise ValueError("no conversations to capture")
    chats = [loaded.chat.tokenize(messages) for messages in conversations]
    for index, chat in enumerate(chats):
        if chat.response_span is not None:
            raise ValueError(f"conversation {index} ends with an answer; prompt pooling reads prompts only")
    prompts = [chat.input_ids[: chat.prompt_span[1]] for chat in chats]
    contexts = [json.dumps(list(messages)[:-1], sort_keys=True) for messages in conversations]
    layers = resolve_layers(layers, loaded.num_layers)
    counts = counts if counts is not None else CaptureCounts()
    outputs = {layer: torch.zeros(len(chats), loaded.hidden_size) for layer in layers}
    for batch in pack_groups(groups_by_key(prompts, contexts, batch_size), batch_size):
        indices, pooled = _capture_batch(loaded, prompts, batch, layers, pooling, counts)
        for layer in layers:
            outputs[layer][torch.tensor(indices)] = pooled[layer]
    return outputs


def capture_prompts(loaded, plan: pd.DataFrame, settings: ExtractSection, layers: list[int],
                    timings: dict[str, float], counts: CaptureCounts) -> np.ndarray:
    """Prompt mode: ``[n rows, L, H]`` activations of the plan's conversations (shared prefixes
    computed once unless ``extract.share_prefixes`` is off)."""
    conversations = plan_conversations(loaded, plan)
    started = time.perf_counter()
    if settings.share_prefixes:
        captured = capture_shared_prefixes(loaded, conversations, layers, settings.pooling, settings.batch_size, counts)
    else:
        captured = capture_conversations(loaded, conversations, layers=layers, pooling=settings.pooling,
                                         batch_size=settings.batch_size)
        lengths = sum(len(loaded.chat.tokenize(messages).input_ids) for messages in conversations)
        counts.tokens_run += lengths
        counts.tokens_plain += lengths
    timings["capture_s"] = timings.get("capture_s", 0.0) + time.perf_counter() - started
    return np.stack([captured[layer].numpy() for layer in layers], axis=1)


def generate_and_capture(loaded, plan: pd.DataFrame, settings: ExtractSection, layers: list[int],
                         timings: dict[str, float]) -> tuple[np.ndarray, list[str]]:
    """Response mode: the answers to the plan's conversations and ``[n rows, L, H]`` activations
    averaged over each answer (nan rows where the answer is empty)."""
    conversations = plan_conversations(loaded, plan)
    started = time.perf_counter()
    from ..core.sampling import generate_replies

    answers = generate_replies(loaded, conversations, max_new_tokens=settings.max_new_tokens,
                               temperature=settings.temperature, batch_size=settings.batch_size, seed=settings.seed)
    timings["generate_s"] = timings.get("generate_s", 0.0) + time.perf_counter() - started
    activations = np.full((len(plan), len(layers), loaded.hidden_size), np.nan, dtype=np.float32)
    answered = [index for index, answer in enumerate(answers) if answer.strip()]
    if answered:
        started = time.perf_counter()
        with_answers = [loaded.chat.conversation(plan["question"].iloc[index], system=system_or_none(plan["system"].iloc[index]),
                                                 assistant=answers[index]) for index in answered]
        captured = capture_conversations(loaded, with_answers, layers=layers, pooling="response",
                                         batch_size=settings.batch_size)
        activations[answered] = np.stack([captured[layer].numpy() for layer in layers], axis=1)
        timings["capture_s"] = timings.get("capture_s", 0.0) + time.perf_counter() - started
    return activations, answers
