"""The continuous-batching scheduler behind :func:`traitspace.core.sampling.sample_token_ids`.

Why not ``model.generate`` on fixed batches: evaluating emergent misalignment asks every question
many times (N samples per question, at every checkpoint), and a fixed batch spends much of its time
on repeated prompts, finished rows and cache copies. This scheduler does the same sampling with less
work:

- **one prefill per distinct prompt**: the N samples of a question share the prompt's key/value
  cache, copied into N rows, instead of N identical prefills;
- **shared prefixes**: prompts that begin alike (the same system prompt) compute that beginning
  once per prefill batch (:mod:`traitspace.core.prefix_cache`, the engine extraction uses too);
- **continuous batching**: rows live in one preallocated key/value buffer per layer; a row that
  stops (end of turn) leaves the batch and a waiting sample takes its slot, so no compute is spent
  on finished rows and the batch stays full until the queue runs dry;
- **a preallocated cache**: keys and values are written in place instead of being concatenated
  (copied) at every step, and the buffer is trimmed of columns no live row uses;
- **the LM head only where needed**: prefill computes logits for the last prompt token only.

Rows are right-aligned in the buffer (left padding), with per-row position ids, so every row sees
exactly the positions and keys it would see alone. Each sample draws from its own generator
(:mod:`traitspace.core.token_choice`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from .prefix_cache import SharedPrefix, continuation, length_chunks, neighbour_groups
from .token_choice import choose_next_tokens


@dataclass(frozen=True)
class SampledTokens:
    """Tokens generated for one request; ``stopped`` is False when ``max_new_tokens`` cut it off.
    ``token_ids`` include the stop token when there is one."""

    token_ids: tuple[int, ...]
    stopped: bool


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

        def lazy_initialization(self, *states) -> None:  # (keys, values); transformers 4.x passes keys only
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

        def get_mask_sizes(self, query) -> tuple[int, int]:
            # transformers >= 5.5 passes the query's length; earlier releases its cache_position tensor.
            query_length = query if isinstance(query, int) else int(query.shape[0])
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
    def _prefill(self, prompt_indices: list[int]) -> None:
        """Prefill a batch (in queue order: lexicographic, so prompts with the same system prompt
        are neighbours): runs sharing at least ``min_shared_prefix`` leading tokens compute them
        once; prompts sharing nothing are prefilled together in one batch."""
        alone: list[int] = []
        for members, shared in neighbour_groups(self.prompts, prompt_indices, self.min_shared_prefix):
            if shared:
                self._prefill_group(members, shared)
            else:
                alone += members
        if alone:
            self._prefill_group(alone, 0)

    def _prefill_group(self, prompt_indices: list[int], shared: int) -> None:
        """Keys, values and last-token logits of each prompt. With ``shared`` > 0 the common prefix
        runs once (one row) and its keys are reused by every prompt (each row then reads [prefix,
        padding, own suffix], padding masked and positions continuing after the prefix: what the
        prompt alone would see). Suffixes run in chunks of similar length, so little compute goes to
        padding."""
        from transformers.cache_utils import DynamicCache

        prefix = None
        if shared:
            # A cache without the model config: every layer keeps all its keys, which are read back.
            prefix = SharedPrefix([self.prompts[prompt_indices[0]][:shared]], self.pad_token_id).run(
                lambda **inputs: self.model(**inputs, logits_to_keep=1), DynamicCache(), self.device)
        for chunk in length_chunks(prompt_indices, lambda index: len(self.prompts[index]) - shared):
            batch = continuation([self.prompts[index][shared:] for index in chunk], self.pad_token_id, "left",
                                 prefix, rows=[0] * len(chunk))
            cache = batch.cache if batch.cache is not None else DynamicCache()
            inputs = {name: tensor.to(self.device) for name, tensor in batch.inputs.items()}
            output = self.model(**inputs, past_key_values=cache, use_cache=True, logits_to_keep=1)
            logits = output.logits[:, -1, :].float()
            for row, index in enumerate(chunk):
                keys, values = batch.kept_keys_values(cache, row)
                self.prefilled[index] = _Prefilled(keys, values, logits[row], len(self.prompts[index]))
                for request in self.samples_of_prompt[index]:
                    self.ready.append((request, index))
            self._allocate(cache)

    def _allocate(self, cache) -> None:
        """Allocate the row buffer on the first prefill, shaped like the model's keys and values."""
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


