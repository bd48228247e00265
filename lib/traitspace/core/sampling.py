"""Fast, seeded, batched sampling of chat replies on one loaded model: the public entry points.

:func:`sample_token_ids` samples one continuation per (prompt, seed) with the continuous-batching
scheduler of :mod:`traitspace.core.continuous_batch` (one prefill per distinct prompt, shared
prefixes computed once, finished rows replaced at once); :func:`sample_replies` and
:func:`generate_replies` work on chat conversations. Models the scheduler cannot drive (decoder
layers that are not attention) fall back to ``model.generate``.

Sampling semantics (:mod:`traitspace.core.token_choice`): softmax of ``logits / temperature``, then
nucleus (top-p) filtering with exactly the rule of ``transformers``' ``TopPLogitsWarper``, then one
draw; no top-k (``generate`` applies ``top_k=50`` unless told otherwise). ``temperature=0`` is greedy
(argmax, as ``generate(do_sample=False)``). Each sample draws from its **own** random generator,
seeded by the caller, so a sample's text does not depend on which other samples share its batch (up
to floating-point noise of batched arithmetic), and a stored seed names each answer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch

from .continuous_batch import SampledTokens, _ContinuousBatch
from .padding import padded_batch
from .token_choice import _inverse_cdf, _top_p_mask, choose_next_tokens  # noqa: F401  (tests use the private two)

__all__ = [
    "Reply",
    "SampledTokens",
    "choose_next_tokens",
    "derive_seed",
    "generate_replies",
    "left_padded",
    "sample_replies",
    "sample_token_ids",
    "stop_token_ids",
    "supports_fast_sampling",
]


@dataclass(frozen=True)
class Reply:
    """One decoded reply: text without special tokens, how many tokens were generated (stop token
    included), whether the model ended its turn itself, and the seed that drew it."""

    text: str
    n_tokens: int
    stopped: bool
    seed: int


def derive_seed(*parts: Any) -> int:
    """A stable 63-bit seed from any printable parts (run seed, question id, sample index, ...).

    Stable across processes and Python versions (sha256, unlike ``hash()``), so a rerun or a resumed
    run draws the same answers.
    """
    text = "\x1f".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1


def stop_token_ids(loaded) -> list[int]:
    """Token ids that end a reply: the generation config's and tokenizer's end-of-sequence ids plus
    the template's end-of-turn token (found by rendering a reply, not from the model's name)."""
    ids: list[int] = []
    configured = getattr(getattr(loaded.model, "generation_config", None), "eos_token_id", None)
    for value in (configured, loaded.tokenizer.eos_token_id):
        if value is None:
            continue
        ids.extend([value] if isinstance(value, int) else list(value))
    probe = loaded.chat.tokenize(loaded.chat.conversation("Hi", assistant="Hello there"))
    if probe.response_span is not None and probe.response_span[1] < len(probe.input_ids):
        end_of_turn = probe.input_ids[probe.response_span[1]]
        # Only a special (added) token: a template that ends turns with plain text ("\n") must not
        # stop every reply at its first line break.
        added = getattr(loaded.tokenizer, "added_tokens_decoder", {})
        if end_of_turn in set(loaded.tokenizer.all_special_ids) or getattr(added.get(end_of_turn), "special", False):
            ids.append(end_of_turn)
    return sorted(set(ids))


def left_padded(prompts: Sequence[Sequence[int]], pad_token_id: int) -> tuple[dict[str, torch.Tensor], list[int]]:
    """A left-padded batch and each row's number of pad tokens (the one padder, left side)."""
    return padded_batch(prompts, pad_token_id, "left")


def supports_fast_sampling(model) -> bool:
    """True when every decoder layer is an attention layer whose cache the buffer can hold."""
    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    layer_types = getattr(config, "layer_types", None)
    if layer_types and any(kind not in ("full_attention", "sliding_attention") for kind in layer_types):
        return False
    return getattr(config, "is_encoder_decoder", False) is False


@torch.inference_mode()
def sample_token_ids(
    model,
    prompts: Sequence[Sequence[int]],
    seeds: Sequence[int],
    *,
    max_new_tokens: int | Sequence[int],
    stop_ids: Iterable[int],
    pad_token_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 64,
    refill_fraction: float = 0.125,
    prefill_tokens: int = 4096,
    min_shared_prefix: int = 8,
    progress: bool | str = False,
) -> list[SampledTokens]:
    """Sample one continuation per (prompt token ids, seed) with continuous batching.

    ``max_new_tokens``: one limit for all, or one per prompt; ``batch_size``: rows decoded
    together; ``refill_fraction``: refill once this share of rows is free; ``prefill_tokens``: token
    budget of one prefill batch. Identical prompts are prefilled once, and prompts of one prefill
    batch that begin with the same ``min_shared_prefix`` or more tokens (a system prompt) compute
    that beginning once.
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    limits = [int(max_new_tokens)] * len(prompts) if isinstance(max_new_tokens, int) else [int(n) for n in max_new_tokens]
    if len(limits) != len(prompts) or any(limit < 1 for limit in limits):
        raise ValueError(f"max_new_tokens must be >= 1, one value or one per prompt; got {max_new_tokens}")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    if not prompts:
        return []
    if not supports_fast_sampling(model):
        raise NotImplementedError("this model has non-attention decoder layers; use generate_replies(..., fast=False)")
    unique: dict[tuple[int, ...], int] = {}
    request_prompt = []
    for prompt in prompts:
        key = tuple(int(token) for token in prompt)
        if not key:
            raise ValueError("empty prompt")
        request_prompt.append(unique.setdefault(key, len(unique)))
    scheduler = _ContinuousBatch(
        model, list(unique), request_prompt, [int(seed) for seed in seeds], limits, temperature, top_p,
        stop_ids, pad_token_id, batch_size, refill_fraction, prefill_tokens, min_shared_prefix, progress,
    )
    return scheduler.run()


def sample_replies(
    loaded,
    conversations: Sequence[Sequence[dict]],
    seeds: Sequence[int],
    max_new_tokens: int | Sequence[int] = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 64,
    progress: bool | str = False,
) -> list[Reply]:
    """One sampled reply per conversation (each ending with a user turn), drawn with its own seed;
    ``max_new_tokens`` is one limit or one per conversation."""
    prompts = [loaded.chat.tokenize(messages).input_ids for messages in conversations]
    sampled = sample_token_ids(
        loaded.model, prompts, seeds, max_new_tokens=max_new_tokens, stop_ids=stop_token_ids(loaded),
        pad_token_id=loaded.tokenizer.pad_token_id, temperature=temperature, top_p=top_p,
        batch_size=batch_size, progress=progress,
    )
    return [
        Reply(loaded.tokenizer.decode(list(result.token_ids), skip_special_tokens=True).strip(),
              len(result.token_ids), result.stopped, int(seed))
        for result, seed in zip(sampled, seeds)
    ]


@torch.inference_mode()
def _generate_with_hf(loaded, conversations, max_new_tokens, temperature, top_p, batch_size, seed) -> list[str]:
    """``model.generate`` on length-sorted fixed batches (models the fast sampler cannot drive)."""
    from .hooks import collate

    chats = [loaded.chat.tokenize(messages) for messages in conversations]
    order = sorted(range(len(chats)), key=lambda index: len(chats[index].input_ids))
    replies = [""] * len(chats)
    torch.manual_seed(seed)
    sampling = ({"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
                if temperature > 0 else {"do_sample": False})
    for start in range(0, len(order), batch_size):
        batch_indices = order[start: start + batch_size]
        inputs, _ = collate([chats[index] for index in batch_indices], loaded.tokenizer.pad_token_id, "left")
        inputs.pop("position_ids")
        inputs = {name: tensor.to(loaded.device) for name, tensor in inputs.items()}
        output = loaded.model.generate(**inputs, max_new_tokens=max_new_tokens, eos_token_id=stop_token_ids(loaded),
                                       pad_token_id=loaded.tokenizer.pad_token_id, **sampling)
        for index, tokens in zip(batch_indices, output[:, inputs["input_ids"].shape[1]:]):
            replies[index] = loaded.tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return replies


def generate_replies(
    loaded,
    conversations: Sequence[Sequence[dict]],
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool | str = False,
) -> list[str]:
    """One reply per conversation (each ending with a user turn). ``temperature=0`` is greedy.

    Sample i draws with seed ``derive_seed(seed, i)``.
    """
    if not conversations:
        return []
    if not supports_fast_sampling(loaded.model):
        return _generate_with_hf(loaded, conversations, max_new_tokens, temperature, top_p, batch_size, seed)
    seeds = [derive_seed(seed, index) for index in range(len(conversations))]
    replies = sample_replies(loaded, conversations, seeds, max_new_tokens, temperature, top_p, batch_size, progress)
    return [reply.text for reply in replies]
