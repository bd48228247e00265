"""The local judge: a transformers chat model scores answers from its next-word probabilities.

The judge prompt (:data:`traitspace.judges.prompts.JUDGE_PROMPTS`) is rendered as one user turn
through the judge model's chat template. The score is the probability-weighted mean of the
numbers 0-100 the model could write next, where the probability of a number N is the probability
of the whole string "N" followed by a terminator (any token that does not start with a digit), so
"10" does not also count the start of "100". This is exact whatever the tokenizer does to numbers
("100" as one token, as "10"+"0", or digit by digit as Llama's and SmolLM2's do):

- the token sequences of all answer strings ("0".."100", the same with a leading space, and the
  labels CODE / REFUSAL) form a trie;
- ONE forward pass per judged answer reads the prompt followed by every trie node, with a 4-D
  attention mask ("tree attention") that lets each node see the prompt and its own ancestors only,
  and position ids that place it right after the prompt. The logits at the last prompt token and
  at each node are the model's next-token distributions at every prefix, as exact as separate
  forward passes, without generating 101 times.

Only the tokenizer's own (canonical) tokenization of each string is counted, as every logprob
judge does: a model that spells "85" through unusual tokens is not credited for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .prompts import JUDGE_PROMPTS, format_judge_prompt
from ..core.models import LoadedModel, load_model
from .base import JUDGE_LABELS, NUMBERS, JudgeDistribution, JudgeItem, JudgeScore, check_kind, score_from_distribution
from .config import JudgeSection

__all__ = [
    "ContinuationTrie",
    "JudgeDistribution",
    "LocalJudge",
    "continuation_token_ids",
    "digit_start_mask",
    "score_from_distribution",
]

_DIGITS = frozenset("0123456789")
# Text used to learn how the tokenizer splits a continuation right after the generation prompt.
_PROBE_USER_TURN = "Rate this."


@dataclass(frozen=True)
class Continuation:
    """One answer string the judge may write: a number (needs a terminator after it) or a label."""

    text: str
    number: int | None
    label: str | None
    token_ids: tuple[int, ...]


@dataclass
class ContinuationTrie:
    """Trie over the token sequences of all continuations; node 0 is the root (empty prefix).

    ``tokens[i]``/``parents[i]``/``depths[i]`` describe node i (i >= 1, ordered by depth so a parent
    always precedes its children); ``ends[k]`` is the node where continuation k ends.
    """

    continuations: tuple[Continuation, ...]
    tokens: list[int] = field(default_factory=lambda: [-1])
    parents: list[int] = field(default_factory=lambda: [-1])
    depths: list[int] = field(default_factory=lambda: [0])
    ends: list[int] = field(default_factory=list)

    @classmethod
    def build(cls, continuations: Sequence[Continuation]) -> ContinuationTrie:
        # Breadth-first numbering: collect every distinct prefix, then sort by (depth, prefix).
        prefixes = sorted(
            {c.token_ids[:depth] for c in continuations for depth in range(1, len(c.token_ids) + 1)},
            key=lambda prefix: (len(prefix), prefix),
        )
        trie = cls(tuple(continuations))
        index_of: dict[tuple[int, ...], int] = {(): 0}
        for prefix in prefixes:
            index_of[prefix] = len(trie.tokens)
            trie.tokens.append(prefix[-1])
            trie.parents.append(index_of[prefix[:-1]])
            trie.depths.append(len(prefix))
        trie.ends = [index_of[c.token_ids] for c in continuations]
        return trie

    @property
    def num_nodes(self) -> int:
        """Nodes other than the root (tokens appended after the prompt)."""
        return len(self.tokens) - 1

    def ancestor_matrix(self) -> torch.Tensor:
        """[num_nodes, num_nodes] bool: entry (i, j) is True when node j+1 is node i+1 or its ancestor."""
        size = self.num_nodes
        matrix = torch.zeros(size, size, dtype=torch.bool)
        for node in range(1, size + 1):
            walker = node
            while walker > 0:
                matrix[node - 1, walker - 1] = True
                walker = self.parents[walker]
        return matrix


def continuation_token_ids(tokenizer, prompt_text: str, text: str) -> tuple[int, ...]:
    """Token ids of ``text`` as the tokenizer splits it right after ``prompt_text``.

    Tokenizing the concatenation (not ``text`` alone) gets what the model would really produce:
    SentencePiece tokenizers, for one, would otherwise add a word-start marker to a bare "85".
    """
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(prompt_text + text, add_special_tokens=False)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids or len(full_ids) == len(prompt_ids):
        # The continuation merged with the prompt's last token: fall back to its own tokens.
        return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
    return tuple(full_ids[len(prompt_ids):])


def digit_start_mask(tokenizer, vocab_size: int) -> torch.Tensor:
    """[vocab_size] bool: True for tokens whose text, written after other text, starts with an
    ASCII digit (so they would continue a number). Ids beyond the tokenizer (padded LM heads) are
    False. Decoded after an anchor character because SentencePiece drops a leading space when a
    token is decoded alone."""
    anchor_ids = tokenizer("x", add_special_tokens=False)["input_ids"]
    anchor_text = tokenizer.decode(anchor_ids)
    count = min(len(tokenizer), vocab_size)
    texts = tokenizer.batch_decode([anchor_ids + [token] for token in range(count)])
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    for token, text in enumerate(texts):
        following = text[len(anchor_text):] if text.startswith(anchor_text) else text
        mask[token] = following[:1] in _DIGITS
    return mask


class LocalJudge:
    """Judge with a local transformers chat model (see the module docstring for the method)."""

    def __init__(
        self,
        loaded: LoadedModel,
        min_number_mass: float = 0.25,
        batch_size: int = 8,
        max_length: int = 2048,
        leading_space: bool = True,
        name: str | None = None,
    ):
        self.loaded = loaded
        self.min_number_mass = min_number_mass
        self.batch_size = batch_size
        self.max_length = max_length
        self.name = name or f"local:{loaded.source}"
        tokenizer = loaded.tokenizer
        probe_prompt = loaded.chat.render_prompt(loaded.chat.conversation(_PROBE_USER_TURN))
        prefixes = ("", " ") if leading_space else ("",)
        continuations = [
            Continuation(prefix + str(number), number, None,
                         continuation_token_ids(tokenizer, probe_prompt, prefix + str(number)))
            for prefix in prefixes for number in NUMBERS
        ] + [
            Continuation(prefix + label, None, label,
                         continuation_token_ids(tokenizer, probe_prompt, prefix + label))
            for prefix in prefixes for label in JUDGE_LABELS
        ]
        self.trie = ContinuationTrie.build(continuations)
        self._ancestors = self.trie.ancestor_matrix()
        vocab_size = int(loaded.model.get_output_embeddings().weight.shape[0])
        self._digit_start = digit_start_mask(tokenizer, vocab_size)

    @classmethod
    def from_section(cls, section: JudgeSection) -> LocalJudge:
        loaded = load_model(section.model, dtype=section.dtype, device=section.device)
        return cls(loaded, min_number_mass=section.min_number_mass, batch_size=section.batch_size,
                   max_length=section.max_length)

    def check(self) -> dict[str, object]:
        """What this judge is (the same call as the endpoint judge's preflight; nothing to reach)."""
        return {"judge": self.name, "model": self.loaded.source, "device": str(self.loaded.device),
                "trie_nodes": self.trie.num_nodes, "min_number_mass": self.min_number_mass}

    # -- prompts -------------------------------------------------------------------------------
    def prompt_ids(self, item: JudgeItem, kind: str) -> list[int]:
        """Token ids of the rendered judge prompt, the answer shortened if it exceeds max_length."""
        template = JUDGE_PROMPTS[check_kind(kind)]
        answer = item.answer
        reserve = self.trie.num_nodes
        for _ in range(4):
            messages = self.loaded.chat.conversation(format_judge_prompt(template, item.question, answer))
            ids = self.loaded.chat.tokenize(messages).input_ids
            excess = len(ids) + reserve - self.max_length
            if excess <= 0:
                return ids
            # Cut the answer's tail: it is the only part of the prompt whose length is unbounded.
            answer_ids = self.loaded.tokenizer(answer, add_special_tokens=False)["input_ids"]
            keep = max(0, len(answer_ids) - excess - 8)
            answer = self.loaded.tokenizer.decode(answer_ids[:keep]) + " [...]"
        raise ValueError(
            f"judge prompt does not fit max_length={self.max_length} even with the answer cut "
            f"(question starts {item.question[:60]!r})"
        )

    # -- scoring -------------------------------------------------------------------------------
    @torch.no_grad()
    def prefix_log_probs(self, prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """For a batch of prompts: log-probability of reaching each trie node, [B, num_nodes+1]
        (column 0 = root = 0), and the probability that the next token after each node does not
        start with a digit, [B, num_nodes+1]. One forward pass for the whole batch."""
        model = self.loaded.model
        device = self.loaded.device
        dtype = next(model.parameters()).dtype
        trie = self.trie
        nodes = trie.num_nodes
        node_tokens = torch.tensor(trie.tokens[1:], dtype=torch.long)
        node_depths = torch.tensor(trie.depths[1:], dtype=torch.long)
        longest = max(len(prompt) for prompt in prompts) + nodes
        batch = len(prompts)
        pad_id = self.loaded.tokenizer.pad_token_id or 0
        input_ids = torch.full((batch, longest), pad_id, dtype=torch.long)
        position_ids = torch.zeros((batch, longest), dtype=torch.long)
        allowed = torch.zeros((batch, longest, longest), dtype=torch.bool)
        for row, prompt in enumerate(prompts):
            # Left padding puts every prompt's last token, and every trie node, at the same columns.
            start = longest - nodes - len(prompt)
            prompt_end = longest - nodes
            input_ids[row, start:prompt_end] = torch.tensor(list(prompt), dtype=torch.long)
            input_ids[row, prompt_end:] = node_tokens
            position_ids[row, start:prompt_end] = torch.arange(len(prompt))
            position_ids[row, prompt_end:] = len(prompt) - 1 + node_depths
            allowed[row, start:prompt_end, start:prompt_end] = torch.tril(
                torch.ones(len(prompt), len(prompt), dtype=torch.bool)
            )
            allowed[row, prompt_end:, start:prompt_end] = True
            allowed[row, prompt_end:, prompt_end:] = self._ancestors
            # Padding rows see themselves only, so no softmax row is empty (NaN).
            padding = torch.arange(start)
            allowed[row, padding, padding] = True
        # Additive float mask: accepted as-is by both eager and SDPA attention.
        mask = torch.zeros((batch, 1, longest, longest), dtype=dtype)
        mask.masked_fill_(~allowed.unsqueeze(1), torch.finfo(dtype).min)
        logits = model(
            input_ids=input_ids.to(device),
            attention_mask=mask.to(device),
            position_ids=position_ids.to(device),
            use_cache=False,
            logits_to_keep=nodes + 1,
        ).logits.float()
        # Position k of the kept logits is the next-token distribution after trie node k.
        log_probs = torch.log_softmax(logits, dim=-1)
        digit_mass = torch.logsumexp(log_probs[:, :, self._digit_start.to(log_probs.device)], dim=-1).exp()
        terminator = (1.0 - digit_mass).clamp_min(0.0).cpu().double()
        # Only the log-probability of each node's own token after its parent is needed.
        parents = torch.tensor(trie.parents[1:], device=log_probs.device)
        step = log_probs[:, parents, node_tokens.to(log_probs.device)].cpu().double()  # [B, nodes]
        reach = torch.zeros((batch, nodes + 1), dtype=torch.float64)
        for node in range(1, nodes + 1):  # parents precede children: one pass accumulates paths
            reach[:, node] = reach[:, trie.parents[node]] + step[:, node - 1]
        return reach, terminator

    def distributions(self, items: Sequence[JudgeItem], kind: str) -> list[JudgeDistribution]:
        """Next-word probability of every number 0-100 and label, one per item."""
        check_kind(kind)
        return self.prompt_distributions([self.prompt_ids(item, kind) for item in items])

    def prompt_distributions(self, prompts: Sequence[Sequence[int]]) -> list[JudgeDistribution]:
        """Next-word probability of every number 0-100 and label after each already rendered prompt
        (token ids ending with the generation prompt), e.g. a question asking the model to rate itself."""
        # Similar lengths together keep padding low; results are put back in the input order.
        order = sorted(range(len(prompts)), key=lambda index: len(prompts[index]))
        results: list[JudgeDistribution | None] = [None] * len(prompts)
        for begin in range(0, len(order), self.batch_size):
            chunk = order[begin: begin + self.batch_size]
            reach, terminator = self.prefix_log_probs([prompts[index] for index in chunk])
            for row, index in enumerate(chunk):
                number_probs = np.zeros(len(NUMBERS))
                label_probs = {label: 0.0 for label in JUDGE_LABELS}
                for continuation, end in zip(self.trie.continuations, self.trie.ends):
                    probability = float(reach[row, end].exp())
                    if continuation.number is not None:
                        number_probs[continuation.number] += probability * float(terminator[row, end])
                    else:
                        label_probs[continuation.label] += probability
                results[index] = JudgeDistribution(number_probs, label_probs)
        return results  # type: ignore[return-value]

    def score(self, items: Sequence[JudgeItem], kind: str) -> list[JudgeScore]:
        return [score_from_distribution(distribution, self.min_number_mass)
                for distribution in self.distributions(items, kind)]
