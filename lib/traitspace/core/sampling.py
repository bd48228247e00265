"""Fast, seeded, batched sampling of chat replies (continuous batching on one loaded model).

Why not ``model.generate`` on fixed batches: evaluating emergent misalignment asks every question
many times (N samples per question, at every checkpoint), and a fixed batch spends much of its time
on repeated prompts, finished rows and cache copies. This module does the same sampling with less
work:

- **one prefill per distinct prompt**: the N samples of a question share the prompt's key/value
  cache, copied into N rows, instead of N identical prefills;
- **shared prefixes**: prompts that begin alike (the same system prompt) compute that beginning
  once per prefill batch;
- **continuous batching**: rows live in one preallocated key/value buffer per layer; a row that
  stops (end of turn) leaves the batch and a waiting sample takes its slot, so no compute is spent
  on finished rows and the batch stays full until the queue runs dry;
- **a preallocated cache**: keys and values are written in place instead of being concatenated
  (copied) at every step, and the buffer is trimmed of columns no live row uses;
- **the LM head only where needed**: prefill computes logits for the last prompt token only.

Sampling semantics are those of the EM evaluations: softmax of ``logits / temperature``, then
nucleus (top-p) filtering with exactly the rule of ``transformers``' ``TopPLogitsWarper``, then one
draw; no top-k (``generate`` applies ``top_k=50`` unless told otherwise). ``temperature=0`` is
greedy (argmax, as ``generate(do_sample=False)``). Each sample draws from its **own** random
generator, seeded by the caller, so a sample's text does not depend on which other samples share its
batch (up to floating-point noise of batched arithmetic), and a stored seed names each answer.

Rows are right-aligned in the buffer (left padding), with per-row position ids, so every row sees
exactly the positions and keys it would see alone.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .padding import padded_batch

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
class SampledTokens:
    """Tokens generated for one request; ``stopped`` is False when ``max_new_tokens`` cut it off.
    ``token_ids`` include the stop token when there is one."""

    token_ids: tuple[int, ...]
    stopped: bool


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


# -- choosing tokens ---------------------------------------------------------------------------------
def _top_p_mask(probabilities: torch.Tensor, top_p: float) -> torch.Tensor:
    """True for tokens that nucleus filtering removes, by the rule of transformers'
    ``TopPLogitsWarper``: sort ascending, remove tokens whose cumulative probability is
    <= 1 - top_p, always keep the most probable token."""
    sorted_probabilities, sorted_indices = torch.sort(probabilities, dim=-1, descending=False)
    cumulative = sorted_probabilities.cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - top_p)
    remove_sorted[..., -1] = False
    return remove_sorted.scatter(-1, sorted_indices, remove_sorted)


_BLOCK = 256  # vocabulary block of the two-level inverse-CDF search


def _inverse_cdf(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Index i per row with probability weights[i] / sum(weights), at the row's uniform number.

    Two levels instead of one cumulative sum over the whole vocabulary: float64 sums of blocks of
    256 tokens, a cumulative sum over the blocks to find the block holding the target mass, then a
    cumulative sum inside that block only. Same result as ``searchsorted(cumsum(weights), u * total)``
    at a fraction of the memory traffic (a float64 cumsum over 49k tokens cost up to 15% of a
    decoding step of a 135M model on a CPU).
    """
    rows, vocab = weights.shape
    padded = -vocab % _BLOCK
    if padded:
        weights = torch.nn.functional.pad(weights, (0, padded))
    blocks = weights.view(rows, -1, _BLOCK)
    # Block sums in float32 (7x faster than float64; rounding ~1e-7 of a block's mass, the same
    # order as the float32 softmax itself), accumulated across blocks in float64.
    block_cumulative = blocks.sum(dim=-1).double().cumsum(dim=-1)
    targets = uniforms.to(block_cumulative) * block_cumulative[:, -1]
    block = torch.searchsorted(block_cumulative, targets[:, None], right=True).squeeze(-1)
    block = block.clamp_(max=blocks.shape[1] - 1)
    # Zero-weight blocks never hold the target: searchsorted(right=True) skips flat stretches.
    before = torch.where(block > 0, block_cumulative.gather(1, (block - 1).clamp(min=0)[:, None]).squeeze(-1),
                         torch.zeros_like(targets))
    inside = blocks[torch.arange(rows, device=weights.device), block].double().cumsum(dim=-1)
    within = torch.searchsorted(inside, (targets - before)[:, None], right=True).squeeze(-1)
    within = within.clamp_(max=_BLOCK - 1)
    # Float rounding can land the target just past the block's last non-zero weight: step back to it.
    last_nonzero = _BLOCK - 1 - (blocks[torch.arange(rows, device=weights.device), block] > 0).flip(-1).int().argmax(-1)
    within = torch.minimum(within, last_nonzero)
    return (block * _BLOCK + within).clamp_(max=vocab - 1)


def choose_next_tokens(
    logits: torch.Tensor, uniforms: torch.Tensor | None, temperature: float, top_p: float = 1.0
) -> torch.Tensor:
    """Next token per row of ``logits [rows, vocab]``.

    ``temperature == 0``: argmax. Otherwise each row samples from softmax(logits / temperature)
    after top-p filtering, by inverting its cumulative distribution at ``uniforms[row]`` (one
    uniform number in [0, 1) per row, from that row's own generator): token i is chosen with
    probability exactly p_i.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    if uniforms is None or uniforms.shape != logits.shape[:1]:
        raise ValueError("sampling needs one uniform number per row")
    logits = logits.float()
    probabilities = torch.softmax(logits if temperature == 1 else logits / temperature, dim=-1)
    if top_p < 1.0:
        # Removed tokens get zero weight; the search renormalises by the remaining mass.
        probabilities = probabilities.masked_fill(_top_p_mask(probabilities, top_p), 0.0)
    return _inverse_cdf(probabilities, uniforms)


def left_padded(prompts: Sequence[Sequence[int]], pad_token_id: int) -> tuple[dict[str, torch.Tensor], list[int]]:
    """A left-padded batch and each row's number of pad tokens (the one padder, left side)."""
    return padded_batch(prompts, pad_token_id, "left")


def _length_chunks(items: Sequence[int], length, max_padding: float = 0.25) -> list[list[int]]:
    """Items sorted by ``length(item)`` and cut into chunks whose padding (to the chunk's longest)
    stays under ``max_padding`` of the chunk's real tokens."""
    chunks: list[list[int]] = []
    total = 0
    for item in sorted(items, key=length):
        size = length(item)
        if chunks and size * (len(chunks[-1]) + 1) <= (1 + max_padding) * (total + size):
            chunks[-1].append(item)
            total += size
        else:
            chunks.append([item])
            total = size
    return chunks


def _common_prefix_length(first: Sequence[int], second: Sequence[int]) -> int:
    length = 0
    for a, b in zip(first, second):
        if a != b:
            break
        length += 1
    return length


# -- the key/value buffer ----------------------------------------------------------------------------
def supports_fast_sampling(model) -> bool:
    """True when every decoder layer is an attention layer whose cache the buffer can hold."""
    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    layer_types = getattr(config, "layer_types", None)
    if layer_types and any(kind not in ("full_attention", "sliding_attention") for kind in layer_types):
        return False
    return getattr(config, "is_encoder_decoder", False) is False


def _buffer_cache_class():
    """The cache classes are built on first use so importing this module does not import transformers."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    class BufferLayer(DynamicLayer):
        """One layer's keys and values in a preallocated buffer ``[rows, heads, columns, dim]``.

        ``update`` writes the new keys of the live rows at column ``length`` in place and returns
        views of the filled columns; the scheduler moves rows and columns between steps.
        """

        def __init__(self) -> None:
            super().__init__()
            self.key_buffer: torch.Tensor | None = None
            self.value_buffer: torch.Tensor | None = None
            self.length = 0

        def allocate(self, rows: int, heads: int, columns: int, key_dim: int, value_dim: int, dtype, device) -> None:
            self.key_buffer = torch.zeros((rows, heads, columns, key_dim), dtype=dtype, device=device)
            self.value_buffer = torch.zeros((rows, heads, columns, value_dim), dtype=dtype, device=device)
            self.dtype, self.device = dtype, device
            self.is_initialized = True

        def lazy_initialization(self, key_states, value_states) -> None:
            raise RuntimeError("BufferLayer must be allocated before use")

        def update(self, key_states, value_states, *args, **kwargs):
            rows, new = key_states.shape[0], key_states.shape[-2]
            end = self.length + new
            self.key_buffer[:rows, :, self.length:end] = key_states
            self.value_buffer[:rows, :, self.length:end] = value_states
            self.length = end
            self.keys = self.key_buffer[:rows, :, :end]
            self.values = self.value_buffer[:rows, :, :end]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.length + query_length, 0

    class BufferCache(DynamicCache):
        def __init__(self, num_layers: int) -> None:
            super(DynamicCache, self).__init__(layers=[BufferLayer() for _ in range(num_layers)])

    return BufferCache


@dataclass
class _Prefilled:
    """A prompt's keys/values (real tokens only) and its last-token logits, kept until all of its
    samples have a row."""

    keys: list[torch.Tensor]  # per layer [heads, prompt_len, dim]
    values: list[torch.Tensor]
    logits: torch.Tensor  # [vocab]
    length: int


class _ContinuousBatch:
    """The scheduler: rows in a shared buffer, refilled from a queue of samples as rows finish."""

    def __init__(
        self,
        model,
        prompts: list[tuple[int, ...]],
        request_prompt: list[int],
        seeds: list[int],
        max_new_tokens: list[int],
        temperature: float,
        top_p: float,
        stop_ids: Iterable[int],
        pad_token_id: int,
        batch_size: int,
        refill_fraction: float,
        prefill_tokens: int,
        min_shared_prefix: int,
        progress,
    ) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.prompts = prompts
        self.seeds = seeds
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.stop_set = {int(token) for token in stop_ids}
        self.pad_token_id = pad_token_id
        self.capacity = batch_size
        self.refill_at = max(1, int(round(refill_fraction * batch_size)))
        self.prefill_tokens = prefill_tokens
        self.min_shared_prefix = max(1, min_shared_prefix)
        self.progress = progress
        self.num_layers = int(model.config.get_text_config(decoder=True).num_hidden_layers)
        # Room for the longest live row: its prompt plus its answer (trimmed when full).
        self.columns = max(len(prompts[index]) + limit for index, limit in zip(request_prompt, max_new_tokens))
        # Samples grouped by prompt.
        self.samples_of_prompt: dict[int, list[int]] = {}
        for request, prompt_index in enumerate(request_prompt):
            self.samples_of_prompt.setdefault(prompt_index, []).append(request)
        # Lexicographic order puts prompts with a common beginning (system prompt) side by side.
        self.prompt_queue = deque(sorted(self.samples_of_prompt, key=lambda index: prompts[index]))
        self.ready: list[tuple[int, int]] = []  # (request, prompt index) waiting for a row
        self.prefilled: dict[int, _Prefilled] = {}
        self.outputs: list[list[int] | None] = [None] * len(seeds)
        self.stopped: list[bool] = [False] * len(seeds)
        self.completed = 0
        self.generators = [np.random.default_rng(seed) for seed in seeds]
        self.cache = _buffer_cache_class()(self.num_layers)
        self.allocated = False
        # Per-row state; rows [0, live) are in use.
        self.live = 0
        self.width = 0
        self.row_request: list[int] = []
        self.mask = torch.zeros((batch_size, self.columns), dtype=torch.long, device=self.device)
        self.positions = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        self.next_token = torch.zeros(batch_size, dtype=torch.long, device=self.device)

    # -- drawing -------------------------------------------------------------------------------
    def _uniforms(self, requests: Sequence[int]) -> torch.Tensor | None:
        if self.temperature == 0:
            return None
        return torch.tensor([self.generators[request].random() for request in requests], dtype=torch.float64)

    # -- prefill -------------------------------------------------------------------------------
    def _shared_prefix_groups(self, prompt_indices: list[int]) -> list[tuple[int, list[int]]]:
        """Split a prefill batch (in queue order: lexicographic, so prompts with the same system
        prompt are neighbours) into runs sharing at least ``min_shared_prefix`` leading tokens.

        Returns (tokens shared, prompt indices) per run; 0 shared tokens means no sharing. Every
        prompt keeps at least one token of its own, whose logits give its first answer token.
        """
        groups: list[tuple[int, list[int]]] = []
        for index in prompt_indices:
            prompt = self.prompts[index]
            if groups:
                shared, members = groups[-1]
                common = min(shared, _common_prefix_length(self.prompts[members[-1]], prompt), len(prompt) - 1)
                if common >= self.min_shared_prefix:
                    groups[-1] = (common, members + [index])
                    continue
            groups.append((len(prompt) - 1, [index]))
        return [(shared if len(members) > 1 else 0, members) for shared, members in groups]

    def _prefill(self, prompt_indices: list[int]) -> None:
        alone: list[int] = []  # prompts sharing nothing are prefilled together in one batch
        for shared, members in self._shared_prefix_groups(prompt_indices):
            if shared:
                self._prefill_group(members, shared)
            else:
                alone += members
        if alone:
            self._prefill_group(alone, 0)

    def _prefill_group(self, prompt_indices: list[int], shared: int) -> None:
        """Keys, values and last-token logits of each prompt. With ``shared`` > 0 the common prefix
        runs once and its keys are reused by every prompt (each row then reads [prefix, padding,
        own suffix], padding masked and positions continuing after the prefix: what the prompt alone
        would see). Suffixes run in chunks of similar length, so little compute goes to padding."""
        from transformers.cache_utils import DynamicCache

        prefix_cache = None
        if shared:
            prefix_cache = DynamicCache()
            prefix = torch.tensor([self.prompts[prompt_indices[0]][:shared]], device=self.device)
            self.model(input_ids=prefix, attention_mask=torch.ones_like(prefix),
                       position_ids=torch.arange(shared, device=self.device)[None], past_key_values=prefix_cache,
                       use_cache=True, logits_to_keep=1)
        for chunk in _length_chunks(prompt_indices, lambda index: len(self.prompts[index]) - shared):
            cache = DynamicCache()
            if prefix_cache is not None:
                for layer_index, layer in enumerate(prefix_cache.layers):
                    cache.update(layer.keys.expand(len(chunk), -1, -1, -1),
                                 layer.values.expand(len(chunk), -1, -1, -1), layer_index)
            self._prefill_chunk(chunk, shared, cache)

    def _prefill_chunk(self, prompt_indices: list[int], shared: int, cache) -> None:
        rows = len(prompt_indices)
        inputs, offsets = left_padded([self.prompts[index][shared:] for index in prompt_indices], self.pad_token_id)
        inputs["position_ids"] = inputs["position_ids"] + shared
        inputs["attention_mask"] = torch.cat(
            [torch.ones((rows, shared), dtype=torch.long), inputs["attention_mask"]], dim=1)
        inputs = {name: tensor.to(self.device) for name, tensor in inputs.items()}
        output = self.model(**inputs, past_key_values=cache, use_cache=True, logits_to_keep=1)
        logits = output.logits[:, -1, :].float()
        for row, (index, offset) in enumerate(zip(prompt_indices, offsets)):
            keys, values = [], []
            for layer in cache.layers:
                keys.append(torch.cat([layer.keys[row, :, :shared], layer.keys[row, :, shared + offset:]], dim=1))
                values.append(torch.cat([layer.values[row, :, :shared], layer.values[row, :, shared + offset:]], dim=1))
            self.prefilled[index] = _Prefilled(keys, values, logits[row], len(self.prompts[index]))
            for request in self.samples_of_prompt[index]:
                self.ready.append((request, index))
        if not self.allocated:
            first = cache.layers[0]
            for layer in self.cache.layers:
                layer.allocate(self.capacity, first.keys.shape[1], self.columns, first.keys.shape[-1],
                               first.values.shape[-1], first.keys.dtype, self.device)
            self.allocated = True

    def _prefill_more(self, wanted: int) -> None:
        """Prefill queued prompts until ``wanted`` samples are ready (batched, up to a token budget)."""
        while len(self.ready) < wanted and self.prompt_queue:
            chosen, tokens, samples = [], 0, len(self.ready)
            while self.prompt_queue and samples < wanted:
                length = len(self.prompts[self.prompt_queue[0]])
                if chosen and tokens + length > self.prefill_tokens:
                    break
                index = self.prompt_queue.popleft()
                chosen.append(index)
                tokens += length
                samples += len(self.samples_of_prompt[index])
            self._prefill(chosen)

    # -- rows ----------------------------------------------------------------------------------
    def _set_width(self, width: int) -> None:
        self.width = width
        for layer in self.cache.layers:
            layer.length = width

    def _shift_columns(self, shift: int) -> None:
        """Move every live row's columns by ``shift`` (negative: drop unused columns on the left)."""
        live, width = self.live, self.width
        if shift < 0:
            source, target = slice(-shift, width), slice(0, width + shift)
        else:
            source, target = slice(0, width), slice(shift, width + shift)
        for layer in self.cache.layers:
            layer.key_buffer[:live, :, target] = layer.key_buffer[:live, :, source].clone()
            layer.value_buffer[:live, :, target] = layer.value_buffer[:live, :, source].clone()
        moved = self.mask[:live, source].clone()
        self.mask[:live] = 0
        self.mask[:live, target] = moved
        self._set_width(width + shift)

    def _trim(self) -> None:
        """Drop the columns on the left that no live row uses (padding of rows that have left)."""
        if self.live == 0:
            self._set_width(0)
            return
        used = self.mask[: self.live, : self.width].any(dim=0).nonzero()
        first_used = int(used[0]) if len(used) else self.width
        if first_used > 0:
            self._shift_columns(-first_used)

    def _drop_rows(self, finished_rows: list[int]) -> None:
        """Remove finished rows: the last live rows move into the holes (row order is free), so
        only as many rows are copied as have finished."""
        finished = set(finished_rows)
        kept = self.live - len(finished)
        holes = [row for row in sorted(finished) if row < kept]
        movers = [row for row in range(kept, self.live) if row not in finished]
        if holes:
            target = torch.tensor(holes, device=self.device)
            source = torch.tensor(movers, device=self.device)
            for layer in self.cache.layers:
                layer.key_buffer[target, :, : self.width] = layer.key_buffer[source, :, : self.width]
                layer.value_buffer[target, :, : self.width] = layer.value_buffer[source, :, : self.width]
            self.mask[target] = self.mask[source]
            self.positions[target] = self.positions[source]
            self.next_token[target] = self.next_token[source]
            for hole, mover in zip(holes, movers):
                self.row_request[hole] = self.row_request[mover]
        self.mask[kept: self.live] = 0
        del self.row_request[kept:]
        self.live = kept

    def _record(self, request: int, token: int) -> bool:
        """Append ``token`` to ``request``'s output; True when the request is complete."""
        tokens = self.outputs[request]
        tokens.append(token)
        if token in self.stop_set:
            self.stopped[request] = True
        complete = self.stopped[request] or len(tokens) >= self.max_new_tokens[request]
        self.completed += complete
        return complete

    def _refill(self) -> None:
        free = self.capacity - self.live
        self._prefill_more(free)
        if not self.ready:
            return
        taken, self.ready = self.ready[:free], self.ready[free:]
        # First tokens come from the prompt's last-token logits, one draw per sample.
        logits = torch.stack([self.prefilled[index].logits for _, index in taken])
        first_tokens = choose_next_tokens(logits, self._uniforms([request for request, _ in taken]),
                                          self.temperature, self.top_p).tolist()
        placed: list[tuple[int, int, int]] = []  # (request, prompt index, first token)
        for (request, index), token in zip(taken, first_tokens):
            self.outputs[request] = []
            if not self._record(request, token):
                placed.append((request, index, token))
        if placed:
            self._place(placed)
        waiting = {index for _, index in self.ready}
        for index in [index for index in self.prefilled if index not in waiting]:
            del self.prefilled[index]

    def _place(self, placed: list[tuple[int, int, int]]) -> None:
        """Give each new sample a row: its prompt's keys right-aligned at the current width."""
        self._trim()
        longest = max(self.prefilled[index].length for _, index, _ in placed)
        if longest > self.width:
            self._shift_columns(longest - self.width)
        rows_of_prompt: dict[int, list[int]] = {}
        for offset, (request, index, token) in enumerate(placed):
            row = self.live + offset
            rows_of_prompt.setdefault(index, []).append(row)
            self.row_request.append(request)
            length = self.prefilled[index].length
            self.mask[row] = 0
            self.mask[row, self.width - length: self.width] = 1
            self.positions[row] = length
            self.next_token[row] = token
        for index, rows in rows_of_prompt.items():
            prefilled = self.prefilled[index]
            columns = slice(self.width - prefilled.length, self.width)
            row_index = torch.tensor(rows, device=self.device)
            for layer, keys, values in zip(self.cache.layers, prefilled.keys, prefilled.values):
                layer.key_buffer[row_index, :, columns] = keys.unsqueeze(0)
                layer.value_buffer[row_index, :, columns] = values.unsqueeze(0)
        self.live += len(placed)

    # -- the loop ------------------------------------------------------------------------------
    def _step(self) -> None:
        """One decoding step for every live row."""
        if self.width >= self.columns:
            self._trim()
        live = self.live
        self.mask[:live, self.width] = 1
        output = self.model(
            input_ids=self.next_token[:live, None],
            attention_mask=self.mask[:live, : self.width + 1],
            position_ids=self.positions[:live, None],
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.width += 1  # the layers advanced their own lengths in update()
        self.positions[:live] += 1
        requests = self.row_request[:live]
        tokens = choose_next_tokens(output.logits[:, -1, :], self._uniforms(requests), self.temperature, self.top_p)
        self.next_token[:live] = tokens.to(self.device)
        finished = [row for row, (request, token) in enumerate(zip(requests, tokens.tolist()))
                    if self._record(request, token)]
        if finished:
            self._drop_rows(finished)

    def run(self) -> list[SampledTokens]:
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(self.seeds), desc=self.progress if isinstance(self.progress, str) else "sample",
                       leave=False)
        while True:
            has_work = bool(self.ready or self.prompt_queue)
            if has_work and (self.live == 0 or self.capacity - self.live >= self.refill_at):
                self._refill()
            if self.live == 0:
                if self.ready or self.prompt_queue:
                    continue  # every sample of that refill stopped at its first token
                break
            self._step()
            if bar is not None:
                bar.n = self.completed
                bar.refresh()
        if bar is not None:
            bar.close()
        return [SampledTokens(tuple(tokens or ()), stopped) for tokens, stopped in zip(self.outputs, self.stopped)]


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
