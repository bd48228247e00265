"""Shared building blocks of the synthetic generators: the composed-row record, the round-robin
drawing of distinct rows, and the word-shingle near-duplicate measures used both while generating
and in the tests."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from scipy import sparse

T = TypeVar("T")
WORD_PATTERN = re.compile(r"\w+")
SHINGLE_SIZE = 3
# Generators reject a candidate above this similarity to an earlier row of its group; the tests
# forbid anything above 0.9, so generation keeps a clear margin below the tested bound.
GENERATION_JACCARD_LIMIT = 0.8


@dataclass(frozen=True)
class ComposedRow:
    """One user prompt with the answer each dataset of its domain gives to it."""

    prompt: str
    group: str  # vulnerability family or topic
    answers: Mapping[str, str]  # dataset name -> assistant answer


def word_shingles(text: str, size: int = SHINGLE_SIZE) -> frozenset[tuple[str, ...]]:
    """Set of lower-cased word n-grams; texts shorter than `size` words give one shingle."""
    words = WORD_PATTERN.findall(text.lower())
    if len(words) <= size:
        return frozenset([tuple(words)])
    return frozenset(zip(*(words[offset:] for offset in range(size))))


def jaccard(first: frozenset[tuple[str, ...]], second: frozenset[tuple[str, ...]]) -> float:
    union = len(first | second)
    return len(first & second) / union if union else 1.0


def pairwise_jaccard(texts: Sequence[str], size: int = SHINGLE_SIZE) -> np.ndarray:
    """Dense matrix of shingle-set Jaccard similarities (diagonal set to 0), via a sparse
    text-by-shingle incidence matrix: |A & B| is one sparse product, |A | B| = |A| + |B| - |A & B|."""
    vocabulary: dict[tuple[str, ...], int] = {}
    columns: list[int] = []
    row_starts = [0]
    for text in texts:
        columns.extend(vocabulary.setdefault(shingle, len(vocabulary)) for shingle in word_shingles(text, size))
        row_starts.append(len(columns))
    incidence = sparse.csr_matrix((np.ones(len(columns), dtype=np.int32), columns, row_starts),
                                  shape=(len(texts), len(vocabulary)))
    intersection = (incidence @ incidence.T).toarray().astype(float)
    set_sizes = np.diff(row_starts).astype(float)
    union = set_sizes[:, None] + set_sizes[None, :] - intersection
    similarity = np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)
    np.fill_diagonal(similarity, 0.0)
    return similarity


def most_similar_pair(texts: Sequence[str], size: int = SHINGLE_SIZE) -> tuple[float, int, int]:
    """Highest pairwise Jaccard among `texts` and the indices of that pair."""
    if len(texts) < 2:
        return 0.0, 0, 0
    similarity = pairwise_jaccard(texts, size)
    first, second = np.unravel_index(int(np.argmax(similarity)), similarity.shape)
    return float(similarity[first, second]), int(first), int(second)


@dataclass
class NearDuplicateGuard:
    """Remembers accepted texts per key and refuses a candidate too close to any of them."""

    limit: float = GENERATION_JACCARD_LIMIT
    _seen: dict[str, list[frozenset[tuple[str, ...]]]] = field(default_factory=dict)

    def shingles_if_new(self, key: str, text: str) -> frozenset[tuple[str, ...]] | None:
        """The candidate's shingles when it is far enough from every accepted text, else None."""
        candidate = word_shingles(text)
        if all(jaccard(candidate, earlier) <= self.limit for earlier in self._seen.get(key, [])):
            return candidate
        return None

    def add(self, key: str, shingles: frozenset[tuple[str, ...]]) -> None:
        self._seen.setdefault(key, []).append(shingles)


def compose_unique(
    rng: random.Random,
    groups: Sequence[str],
    per_group: int,
    make: Callable[[random.Random, str], ComposedRow],
    max_attempts_per_row: int = 60,
) -> list[ComposedRow]:
    """Draw rows group by group (round robin) until each group has `per_group` rows whose prompt is
    new and whose every answer is not a near copy of an earlier answer drawn for the same group.
    A group is the generator's unit of variety (a code shape, an advice topic); `make` labels the
    row itself with whatever `row.group` it likes."""
    guard = NearDuplicateGuard()
    seen_prompts: set[str] = set()
    rows: list[ComposedRow] = []
    counts = dict.fromkeys(groups, 0)
    for _ in range(per_group):
        for group in groups:
            for _attempt in range(max_attempts_per_row):
                row = make(rng, group)
                if row.prompt in seen_prompts:
                    continue
                checked = {f"{group}/{name}": guard.shingles_if_new(f"{group}/{name}", text)
                           for name, text in row.answers.items()}
                if any(shingles is None for shingles in checked.values()):
                    continue
                for key, shingles in checked.items():
                    guard.add(key, shingles)
                seen_prompts.add(row.prompt)
                rows.append(row)
                counts[group] += 1
                break
            else:
                raise RuntimeError(
                    f"could not compose a distinct row for group {group!r} after "
                    f"{max_attempts_per_row} attempts ({counts[group]} rows so far); add more variety"
                )
    rng.shuffle(rows)
    return rows


def choose(rng: random.Random, options: Sequence[T]) -> T:
    """One element of `options`, drawn with `rng` (typed, unlike `random.Random.choice`)."""
    return options[rng.randrange(len(options))]
