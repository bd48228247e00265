"""Answers read from the next-token logits, so no sampling is needed:

- a **rating** 0-100 is the probability-weighted mean of the numbers the model could write next, read by
  the local judge's machinery (:meth:`traitspace.judges.local.LocalJudge.prompt_distributions`: every
  number string through a token trie in one forward pass, a number counted only when a terminator
  follows), with no score when less than ``min_number_mass`` falls on numbers;
- a **choice** between two lettered options is the next-token probability of each letter's token;
  ``p_first`` is P(first letter) / (P(first) + P(second)) and ``option_mass`` their share of all
  next-token probability (how much the model answers with a letter at all).

The active adapter of the loaded model is the one read (``AdapterSwitcher.use``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..core.models import LoadedModel
from ..core.padding import padded_batch
from ..judges.base import score_from_distribution
from ..judges.local import LocalJudge, continuation_token_ids

__all__ = ["LogitReader"]


class LogitReader:
    """Ratings and two-option choices of one loaded model, read from its logits."""

    def __init__(self, loaded: LoadedModel, letters: tuple[str, str] = ("A", "B"), min_number_mass: float = 0.25,
                 batch_size: int = 16):
        self.loaded = loaded
        self.batch_size = batch_size
        self.letters = letters
        self.min_number_mass = min_number_mass
        # The numbers' trie and terminator mask are the judge's own: one definition of a rating read.
        self._rater = LocalJudge(loaded, min_number_mass=min_number_mass, batch_size=batch_size)
        probe = loaded.chat.render_prompt(loaded.chat.conversation("Answer A or B."))
        # The letter as the tokenizer writes it right after the generation prompt; its first token.
        self.letter_ids = tuple(continuation_token_ids(loaded.tokenizer, probe, letter)[0] for letter in letters)
        if self.letter_ids[0] == self.letter_ids[1]:
            raise ValueError(f"the option letters {letters} start with the same token; choose other letters")

    def prompt_ids(self, messages: Sequence[dict]) -> list[int]:
        """Token ids of a conversation ending with a user turn, generation prompt included."""
        return self.loaded.chat.tokenize(list(messages)).input_ids

    def ratings(self, prompts: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """``(rating, number_mass)`` per prompt, ``[n]`` each; rating nan below ``min_number_mass``."""
        distributions = self._rater.prompt_distributions(prompts)
        ratings = [score_from_distribution(distribution, self.min_number_mass).score for distribution in distributions]
        return (np.array([np.nan if rating is None else rating for rating in ratings], dtype=float),
                np.array([distribution.number_mass for distribution in distributions], dtype=float))

    @torch.inference_mode()
    def choices(self, prompts: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """``(p_first, option_mass)`` per prompt, ``[n]`` each (see the module docstring)."""
        model, device = self.loaded.model, self.loaded.device
        pad = self.loaded.tokenizer.pad_token_id or 0
        letter_ids = torch.tensor(self.letter_ids, device=device)
        log_probs = np.empty((len(prompts), 2))
        order = sorted(range(len(prompts)), key=lambda index: len(prompts[index]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            # Left padding puts every prompt's last token in the last column; position ids from the mask.
            inputs, _ = padded_batch([prompts[row] for row in rows], pad, "left")
            logits = model(**{key: value.to(device) for key, value in inputs.items()}, use_cache=False,
                           logits_to_keep=1).logits[:, -1].float()
            log_probs[rows] = torch.log_softmax(logits, dim=-1)[:, letter_ids].double().cpu().numpy()
        mass = np.exp(log_probs).sum(axis=1)
        p_first = 1.0 / (1.0 + np.exp(log_probs[:, 1] - log_probs[:, 0]))
        return p_first, mass
