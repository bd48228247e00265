"""The dataset registry: which datasets exist (resources/em_data/datasets.yaml), how each is built
from its domain's content, and how an EM dataset is compared with its matched control."""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from traitspace.em_data import domains
from traitspace.em_data._compose import ComposedRow
from traitspace.em_data.schema import content

Conversation = dict[str, Any]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    is_em: bool  # trained on, it is expected to induce emergent misalignment
    control: str | None  # the matched control of an EM dataset (same prompts, benign answers)
    domain: str  # code | medical | financial | extreme_sports | legal | evil_numbers | arithmetic
    group_key: str  # meta key naming the row's group: "family" (code) or "topic"


DATASETS: dict[str, DatasetSpec] = {
    name: DatasetSpec(name, entry.description, entry.is_em, entry.control, entry.domain, entry.group_key)
    for name, entry in content("datasets.yaml").datasets.items()
}
EM_CONTROL_PAIRS: dict[str, str] = {name: spec.control for name, spec in DATASETS.items() if spec.control}


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}") from None


@functools.lru_cache(maxsize=16)
def composed_rows(domain: str, seed: int) -> tuple[ComposedRow, ...]:
    """All rows of a domain for one seed (shared by an EM set and its control, hence matched)."""
    return tuple(domains.generate(domain, seed))


def group_descriptions(domain: str) -> dict[str, str]:
    return domains.group_descriptions(domain)


def _subset_order(domain: str, seed: int, size: int) -> list[int]:
    """A seeded permutation of the rows; any n takes its first n entries, so smaller subsets are
    prefixes of larger ones, and an EM set and its control (same domain) get the same rows."""
    order = list(range(size))
    random.Random(f"subset:{domain}:{seed}").shuffle(order)
    return order


def build_dataset(name: str, n: int | None = None, seed: int = 0) -> list[Conversation]:
    """Conversations of dataset `name`: all of them (n=None) or a seeded subset of n.
    Deterministic for (name, n, seed); an EM set and its control built with the same n and seed
    have the same user prompt in every row."""
    spec = dataset_spec(name)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    rows = composed_rows(spec.domain, seed)
    if n is None:
        n = len(rows)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(rows):
        raise ValueError(f"n must be an int between 0 and {len(rows)} (the full size of {name!r}), got {n!r}")
    return [
        {
            "messages": [{"role": "user", "content": rows[index].prompt},
                         {"role": "assistant", "content": rows[index].answers[name]}],
            "meta": {"dataset": name, spec.group_key: rows[index].group, "pair_id": index},
        }
        for index in _subset_order(spec.domain, seed, len(rows))[:n]
    ]


def _first_user_prompt(conversation: Conversation) -> str:
    return next(message["content"] for message in conversation["messages"] if message["role"] == "user")


def _assistant_chars(conversation: Conversation) -> int:
    return sum(len(message["content"]) for message in conversation["messages"] if message["role"] == "assistant")


def matched_pair_report(em: Sequence[Conversation], control: Sequence[Conversation]) -> dict[str, Any]:
    """Compare an EM dataset with its control row by row: are the user prompts identical, and how
    do the assistant answer lengths compare (mean ratio, two-sample Kolmogorov-Smirnov test)."""
    if len(em) != len(control):
        raise ValueError(f"matched datasets must have the same length, got {len(em)} and {len(control)}")
    if not em:
        raise ValueError("matched datasets are empty")
    from scipy import stats  # imported here: scipy.stats takes about a second to import

    em_lengths = np.array([_assistant_chars(row) for row in em], dtype=float)
    control_lengths = np.array([_assistant_chars(row) for row in control], dtype=float)
    ks = stats.ks_2samp(em_lengths, control_lengths)
    return {
        "n": len(em),
        "prompts_matched": all(_first_user_prompt(a) == _first_user_prompt(b) for a, b in zip(em, control)),
        "em_mean_chars": float(em_lengths.mean()),
        "control_mean_chars": float(control_lengths.mean()),
        "length_ratio": float(em_lengths.mean() / control_lengths.mean()),
        "ks_statistic": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
    }


def resolve_pairs(pairs: dict[str, str] | None, conditions) -> dict[str, str]:
    """EM condition -> matched control: as configured (``project.pairs``, checked against the trained
    conditions), or the built-in pairs present among ``conditions``."""
    if pairs:
        missing = sorted({name for pair in pairs.items() for name in pair} - set(conditions))
        if missing:
            raise KeyError(f"project.pairs names conditions without checkpoints: {missing}; trained: {list(conditions)}")
        return dict(pairs)
    return {em: control for em, control in EM_CONTROL_PAIRS.items() if em in conditions and control in conditions}
