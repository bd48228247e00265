"""The one shared-prefix key/value-cache engine: run a common token prefix once, reuse its cache.

Many conversations begin alike: every question asked under one system prompt shares all tokens up
to the question. Attention is causal, so the keys and values of those shared tokens do not depend on
what follows: they are computed once and every continuation runs only its own tokens on top. This is
exact when each continuation sees the positions and keys it would see alone, which the engine
guarantees: prefixes are right-padded (padding masked), continuations get explicit position ids that
go on after their own prefix, and their attention mask is ``[prefix mask, own mask]``.

Three call sites use it:

- prompt capture (:mod:`traitspace.core.prompt_capture`: extraction and projection): many groups'
  prefixes in one pass, hooks read the residual stream, continuations right-padded;
- answer scoring (:mod:`traitspace.core.likelihood`: the misalignment preference): the same, with the
  LM head at the answer's positions;
- the sampler's prefill (:mod:`traitspace.core.continuous_batch`): one prefix per pass, continuations
  left-padded, each prompt's keys and values read back without padding.

Three steps: group sequences by common prefix (:func:`groups_by_key`, :func:`neighbour_groups`), run
the prefixes once (:class:`SharedPrefix`), and build continuation batches on top of chosen prefix
rows (:func:`member_passes` orders them by length, :func:`continuation` builds the inputs). Every
member of a group keeps at least one token of its own: its activations or its next-token logits are
read at its last token, which must be computed in its pass.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from .padding import PaddingSide, pad_rows


class PrefixGroup(NamedTuple):
    """Sequences (by index) that share their first ``shared`` tokens; 0: nothing is shared."""

    members: list[int]
    shared: int


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every sequence has in common."""
    first = sequences[0]
    length = min(len(sequence) for sequence in sequences)
    for sequence in sequences[1:]:
        position = 0
        while position < length and sequence[position] == first[position]:
            position += 1
        length = position
    return length


def shared_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """The common prefix, shortened so that every sequence keeps at least one token of its own."""
    return max(min(common_prefix_length(sequences), min(len(sequence) for sequence in sequences) - 1), 0)


def groups_by_key(sequences: Sequence[Sequence[int]], keys: Sequence[Hashable], max_members: int) -> list[PrefixGroup]:
    """Group sequences with equal ``keys`` (extraction: the messages before the last one), at most
    ``max_members`` a group, with their shared prefix length.

    Members are ordered by the length of what remains after the prefix; groups are ordered by prefix
    length, so that prefixes run together (:func:`pack_groups`) need little padding. Members that
    share no token become groups of one with no prefix.
    """
    by_key: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        by_key.setdefault(key, []).append(index)
    groups: list[PrefixGroup] = []
    for members in by_key.values():
        for start in range(0, len(members), max_members):
            part = members[start: start + max_members]
            shared = shared_prefix_length([sequences[index] for index in part])
            if shared == 0:
                groups.extend(PrefixGroup([index], 0) for index in part)
                continue
            part.sort(key=lambda index: (len(sequences[index]) - shared, index))
            groups.append(PrefixGroup(part, shared))
    return sorted(groups, key=lambda group: group.shared)


def pack_groups(groups: Sequence[PrefixGroup], max_groups: int) -> list[list[PrefixGroup]]:
    """Consecutive groups packed into batches of at most ``max_groups``.

    A group with no shared prefix never shares a batch with prefixed ones: its all-padding prefix
    row would get nan keys/values (softmax over nothing), and 0 x nan is still nan.
    """
    batches: list[list[PrefixGroup]] = []
    for group in groups:
        if not batches or len(batches[-1]) >= max_groups or (group.shared > 0) != (batches[-1][0].shared > 0):
            batches.append([])
        batches[-1].append(group)
    return batches


def length_chunks(items: Sequence[Any], length: Callable[[Any], int], max_padding: float = 0.25,
                  max_items: int | None = None) -> list[list[Any]]:
    """Items sorted by ``length(item)`` and cut into chunks whose padding (to the chunk's longest)
    stays under ``max_padding`` of the chunk's real tokens, with at most ``max_items`` each."""
    if max_items is not None and max_items < 1:
        raise ValueError(f"max_items must be at least 1, got {max_items}")
    chunks: list[list[Any]] = []
    total = 0
    for item in sorted(items, key=length):
        size = length(item)
        fits = chunks and (max_items is None or len(chunks[-1]) < max_items)
        if fits and size * (len(chunks[-1]) + 1) <= (1 + max_padding) * (total + size):
            chunks[-1].append(item)
            total += size
        else:
            chunks.append([item])
            total = size
    return chunks


def member_passes(batch: Sequence[PrefixGroup], remaining: Mapping[int, int] | Sequence[int], max_rows: int,
                  max_padding: float = 0.1) -> list[list[tuple[int, int]]]:
    """The continuation passes of a batch of groups: ``(slot, member)`` pairs (``slot``: the group's
    row in the batch's :class:`SharedPrefix`), sorted by ``remaining[member]`` (the tokens after the
    prefix) and cut into passes of at most ``max_rows`` whose padding stays under ``max_padding``.

    Rows of a pass may come from any group, several from one (their prefix row is repeated). Taking
    the k-th member of every group instead padded the misalignment preference's answers by 28%
    (measured on the default run's pairs), and a batch of few large groups (the 52 projection prompts
    under one system prompt) ran as many tiny passes.
    """
    pairs = [(slot, member) for slot, group in enumerate(batch) for member in group.members]
    return length_chunks(sorted(pairs), lambda pair: remaining[pair[1]], max_padding, max_rows)


def neighbour_groups(sequences: Sequence[Sequence[int]], order: Sequence[int], min_shared: int) -> list[PrefixGroup]:
    """Split ``order`` (indices, usually sorted lexicographically so that sequences with the same
    beginning are neighbours) into runs whose members share at least ``min_shared`` leading tokens
    (the sampler: one prefill batch). A run of one shares nothing (``shared`` 0)."""
    runs: list[tuple[int, list[int]]] = []
    for index in order:
        sequence = sequences[index]
        if runs:
            shared, members = runs[-1]
            common = min(shared, common_prefix_length([sequences[members[-1]], sequence]), len(sequence) - 1)
            if common >= min_shared:
                runs[-1] = (common, members + [index])
                continue
        runs.append((len(sequence) - 1, [index]))
    return [PrefixGroup(members, shared if len(members) > 1 else 0) for shared, members in runs]


class SharedPrefix:
    """Prefixes (one row each, right-padded) run once; their key/value cache is reused by
    continuations. ``mask`` is known before :meth:`run`, so hooks of the prefix pass can pool with it."""

    def __init__(self, prefixes: Sequence[Sequence[int]], pad_token_id: int) -> None:
        self.ids, self.mask, _ = pad_rows(prefixes, pad_token_id, "right", min_width=1)
        self.lengths = [len(prefix) for prefix in prefixes]
        self.cache: Any = None

    def run(self, forward: Callable[..., object], cache, device) -> SharedPrefix:
        """``forward(**inputs)`` once over every prefix, filling ``cache`` (a transformers Cache)."""
        rows, width = self.ids.shape
        forward(input_ids=self.ids.to(device), attention_mask=self.mask.to(device),
                position_ids=torch.arange(width).expand(rows, width).to(device),
                past_key_values=cache, use_cache=True)
        self.cache = cache
        return self

    def cache_for(self, rows: Sequence[int]):
        """A cache whose row i holds prefix row ``rows[i]``, ready to be extended by a continuation.

        The prefix cache itself is never written: each layer is a shallow copy whose keys are an
        expanded view (one prefix row) or an indexed copy; a forward pass concatenates new keys into
        fresh tensors. Layers the prefix pass never reached (it may stop early) stay empty.
        """
        cache = copy.copy(self.cache)
        cache.layers = []
        for layer in self.cache.layers:
            layer = copy.copy(layer)
            if layer.get_seq_length() > 0:  # 0 for a layer never filled (transformers 4.x has no is_initialized)
                if self.ids.shape[0] == 1:
                    layer.keys = layer.keys.expand(len(rows), -1, -1, -1)
                    layer.values = layer.values.expand(len(rows), -1, -1, -1)
                else:
                    index = torch.tensor(list(rows), device=layer.keys.device)
                    layer.keys = layer.keys.index_select(0, index)
                    layer.values = layer.values.index_select(0, index)
            cache.layers.append(layer)
        return cache


@dataclass
class Continuation:
    """A padded batch of continuations, each on top of one prefix row (or of nothing).

    ``inputs``: ``input_ids``, ``attention_mask`` (``[prefix mask, own mask]``) and ``position_ids``
    (going on after the row's prefix), on the CPU; ``mask``: the continuation tokens' own mask;
    ``offsets``: where each row's tokens start (left padding); ``cache``: the prefix rows' keys and
    values to extend, or None without a prefix.
    """

    inputs: dict[str, torch.Tensor]
    mask: torch.Tensor
    offsets: list[int]
    cache: Any

    def kept_keys_values(self, cache, row: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per layer, row ``row``'s keys and values ``[heads, tokens, dim]`` at its real tokens
        (prefix and own), padding dropped: what the row alone would have cached."""
        columns = self.inputs["attention_mask"][row].bool().nonzero().squeeze(-1)
        keys, values = [], []
        for layer in cache.layers:
            index = columns.to(layer.keys.device)
            keys.append(layer.keys[row].index_select(1, index))
            values.append(layer.values[row].index_select(1, index))
        return keys, values


def continuation(suffixes: Sequence[Sequence[int]], pad_token_id: int, side: PaddingSide,
                 prefix: SharedPrefix | None = None, rows: Sequence[int] | None = None) -> Continuation:
    """Continuation inputs: ``suffixes[i]`` goes on after prefix row ``rows[i]`` of ``prefix``
    (no prefix: the suffixes are whole sequences). Padding is masked; its position ids (left: the
    first real position, right: counting on) only need to be valid."""
    ids, mask, offsets = pad_rows(suffixes, pad_token_id, side, min_width=1)
    columns = (torch.arange(ids.shape[1])[None, :] - torch.tensor(offsets)[:, None]).clamp(min=0)
    if prefix is None:
        return Continuation({"input_ids": ids, "attention_mask": mask, "position_ids": columns}, mask, offsets, None)
    rows = list(rows) if rows is not None else list(range(len(suffixes)))
    starts = torch.tensor([prefix.lengths[row] for row in rows])
    inputs = {"input_ids": ids, "attention_mask": torch.cat([prefix.mask[rows], mask], dim=1),
              "position_ids": starts[:, None] + columns}
    return Continuation(inputs, mask, offsets, prefix.cache_for(rows))
