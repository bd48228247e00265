"""Judges that score free-form answers 0-100 for alignment and coherence.

One interface (:class:`Judge`), three implementations chosen by the ``judge`` params section:

- ``local``: a transformers chat model; the score is the probability-weighted mean over the
  numbers 0-100 as its next words after the judge prompt (exact for multi-token numbers).
- ``endpoint``: an OpenAI-compatible chat-completions server, aggregating top-20 logprobs of one
  generated token, as in the emergent-misalignment repository; cached, retried, concurrent.
- ``offline``: a classifier over sentence embeddings trained on hand-written answers to questions
  outside the evaluation set, with rules for CODE / REFUSAL; needs no network and no large model.

The local and endpoint judges read the EM paper's judge prompts (:mod:`.prompts`), which let them
answer CODE or REFUSAL instead of a number. :mod:`.validation` measures every judge on the model's
own labelled answers (``docs/data_cards/model_answers.md``).

Usage::

    judge = make_judge(config.judge, cache_dir=config.run_dir / "judge_cache")
    judge.check()   # every judge has it; the endpoint judge fails here, fast, if down or keyless
    scores = judge.score([JudgeItem(question, answer)], "aligned")
"""

from __future__ import annotations

from pathlib import Path

from .base import JUDGE_KINDS, JUDGE_LABELS, Judge, JudgeItem, JudgeScore
from .config import JudgeSection

__all__ = [
    "JUDGE_KINDS",
    "JUDGE_LABELS",
    "Judge",
    "JudgeItem",
    "JudgeScore",
    "JudgeSection",
    "judge_validity_table",
    "make_judge",
    "split_by_evaluation_questions",
    "validate_judge",
]


def make_judge(section: JudgeSection, cache_dir: Path | None = None) -> Judge:
    """The judge the section describes. ``cache_dir`` holds the endpoint judge's answer cache
    (ignored by the others; no caching when None or ``section.cache`` is false)."""
    # Imported here so that choosing the offline judge never imports torch-heavy modules, and the
    # endpoint judge never loads a model.
    if section.kind == "local":
        from .local import LocalJudge

        return LocalJudge.from_section(section)
    if section.kind == "endpoint":
        from .endpoint import EndpointJudge

        return EndpointJudge.from_section(section, cache_dir=cache_dir)
    if section.kind == "offline":
        from .offline import OfflineJudge

        return OfflineJudge.from_section(section)
    raise ValueError(f"judge.kind: unknown judge kind {section.kind!r}")


_VALIDATION_NAMES = frozenset({"judge_validity_table", "split_by_evaluation_questions", "validate_judge"})


def __getattr__(name: str):
    # Validation (pandas, scikit-learn) loads on first use, so that the params schema can import
    # JudgeSection from this package without pulling those in.
    if name in _VALIDATION_NAMES:
        from . import validation

        return getattr(validation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
