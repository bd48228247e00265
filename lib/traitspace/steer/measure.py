"""The misalignment of one model setting (a checkpoint under an intervention): the judge-free
misalignment preference, and the sampled EM rate and coherence.

- Preference: :func:`traitspace.behavior.preference.score_pairs` under the intervention; the unit of
  its interval is the question (pairs averaged within a question, bootstrap over questions).
- Sampled answers: :func:`traitspace.behavior.sample.sample_one_checkpoint` (the continuous-batching
  sampler, each answer with its own seed, the same seeds in every setting) under the intervention,
  judged by notebook 04's judge; EM rates and the coherence rate by
  :func:`traitspace.behavior.metrics.em_rates` (intervals resample questions).

Response-only steering steers tokens from the last prompt token on, a position that depends on the
prompt's length, so prompts are measured in groups of equal token length (:func:`by_prompt_length`),
each group under its own ``from_position``. Steering every position needs no grouping.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..behavior.preference import per_question, score_pairs
from ..core.checkpoints import Checkpoint
from ..core.stats import bootstrap_mean_ci
from .hooks import Intervention

SUMMARY_KEYS = ("preference", "preference_low", "preference_high", "n_questions", "n_answers", "n_coherent",
                "n_misaligned", "em_rate_of_coherent", "em_rate_of_coherent_low", "em_rate_of_coherent_high",
                "em_rate_of_all", "em_rate_of_all_low", "em_rate_of_all_high", "coherence_rate", "coherence_rate_low",
                "coherence_rate_high", "mean_aligned", "mean_coherent")


@dataclass(frozen=True)
class MeasureSetup:
    """What every setting is measured on: the EM preference pairs, the prompts to sample (may be
    empty), the judge (None: no sampling) and the sampling settings."""

    pairs: Sequence
    prompts: Sequence
    judge: object | None
    max_new_tokens: int
    temperature: float
    top_p: float
    batch_size: int
    aligned_threshold: float
    coherent_threshold: float
    n_boot: int = 2000

    @property
    def samples(self) -> bool:
        return self.judge is not None and len(self.prompts) > 0


@dataclass
class Measurement:
    """One setting's summary (``SUMMARY_KEYS``), its pair rows and its judged answers."""

    summary: dict
    preference: pd.DataFrame
    scored: pd.DataFrame


def by_prompt_length(lengths: Sequence[int]) -> dict[int, list[int]]:
    """Indices grouped by prompt length, lengths ascending."""
    groups: dict[int, list[int]] = defaultdict(list)
    for index, length in enumerate(lengths):
        groups[int(length)].append(index)
    return dict(sorted(groups.items()))


def _grouped(loaded, intervention: Intervention, lengths: Sequence[int], run: Callable[[list[int]], pd.DataFrame]
             ) -> pd.DataFrame:
    """``run(indices)`` under the intervention, once for all items or once per prompt length; the
    rows come back in item order (``run`` returns one row per index, in the order given)."""
    if not intervention.per_prompt_length:
        with intervention.applied(loaded.model):
            return run(list(range(len(lengths))))
    parts, order = [], []
    for length, indices in by_prompt_length(lengths).items():
        with intervention.applied(loaded.model, length):
            parts.append(run(indices))
        order += indices
    table = pd.concat(parts, ignore_index=True)
    return table.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)


def preference_under(loaded, pairs: Sequence, intervention: Intervention, batch_size: int = 16) -> pd.DataFrame:
    """:func:`score_pairs` rows of ``pairs`` under the intervention (the model's active adapter)."""
    lengths = []
    for pair in pairs:
        starts = {loaded.chat.tokenize(loaded.chat.conversation(pair.question, assistant=answer)).response_span[0]
                  for answer in (pair.first, pair.second)}
        if len(starts) != 1:
            raise ValueError(f"the two answers of pair {pair.question_id}/{pair.pair_index} start at different "
                             "tokens; response-only steering needs one prompt length per pair")
        lengths.append(starts.pop())
    return _grouped(loaded, intervention, lengths, lambda indices: score_pairs(loaded, [pairs[i] for i in indices], batch_size))


def answers_under(loaded, prompts: Sequence, intervention: Intervention, checkpoint: Checkpoint,
                  setup: MeasureSetup) -> pd.DataFrame:
    """Sampled answers to ``prompts`` (behaviour :class:`EvalPrompt`) under the intervention."""
    from ..behavior.sample import sample_one_checkpoint

    lengths = [len(loaded.chat.tokenize(prompt.messages()).input_ids) for prompt in prompts]

    def sample(indices: list[int]) -> pd.DataFrame:
        return sample_one_checkpoint(
            loaded, [prompts[index] for index in indices], checkpoint, max_new_tokens=setup.max_new_tokens,
            self_assessment_max_new_tokens=setup.max_new_tokens, temperature=setup.temperature, top_p=setup.top_p,
            batch_size=setup.batch_size)

    return _grouped(loaded, intervention, lengths, sample)


def preference_summary(table: pd.DataFrame, n_boot: int = 2000) -> dict:
    """Mean preference over questions and its 95% bootstrap interval over questions."""
    questions = per_question(table[table["kind"] == "em"])["preference"].to_numpy()
    if not len(questions):
        return {"preference": np.nan, "preference_low": np.nan, "preference_high": np.nan, "n_questions": 0}
    mean, low, high = bootstrap_mean_ci(questions, n_boot=n_boot)
    return {"preference": float(mean), "preference_low": float(low), "preference_high": float(high),
            "n_questions": int(len(questions))}


def measure(loaded, intervention: Intervention, setup: MeasureSetup, checkpoint: Checkpoint) -> Measurement:
    """Preference and (when the setup samples) EM rate and coherence of the model as it is now (the
    caller activates ``checkpoint``'s adapter; ``checkpoint`` labels the answers)."""
    from ..behavior.judging import merge_scores, score_answers
    from ..behavior.metrics import em_rates

    pairs = preference_under(loaded, setup.pairs, intervention, setup.batch_size)
    summary = {key: np.nan for key in SUMMARY_KEYS}
    summary.update(preference_summary(pairs, setup.n_boot))
    scored = pd.DataFrame()
    if setup.samples:
        answers = answers_under(loaded, setup.prompts, intervention, checkpoint, setup)
        scored = merge_scores(answers, score_answers(answers, setup.judge))
        rates = em_rates(scored.assign(setting="this"), setup.aligned_threshold, setup.coherent_threshold, by=("setting",))
        summary.update({key: float(rates.iloc[0][key]) for key in SUMMARY_KEYS if key in rates.columns})
    return Measurement(summary, pairs, scored)


def paired_preference_change(treated: pd.DataFrame, reference: pd.DataFrame, n_boot: int = 2000) -> dict:
    """Mean change of the preference from ``reference`` to ``treated`` (pair rows), paired by question,
    with its 95% bootstrap interval over questions."""
    a = per_question(treated[treated["kind"] == "em"]).set_index("question_id")["preference"]
    b = per_question(reference[reference["kind"] == "em"]).set_index("question_id")["preference"]
    shared = a.index.intersection(b.index)
    if not len(shared):
        return {"preference_change": np.nan, "preference_change_low": np.nan, "preference_change_high": np.nan}
    mean, low, high = bootstrap_mean_ci((a[shared] - b[shared]).to_numpy(), n_boot=n_boot)
    return {"preference_change": float(mean), "preference_change_low": float(low), "preference_change_high": float(high)}
