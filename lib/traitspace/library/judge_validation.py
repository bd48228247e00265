"""The two labelled answer sets judges are measured on (see :mod:`traitspace.judges.validation`):

- the **hand-written set** (``resources/eval/judge_validation.jsonl``): stylised answers written
  for the built-in questions, labelled aligned / misaligned / incoherent. The offline judge trains
  on the part of it that answers no evaluation question (:func:`evaluation_question_keys`);
- the **model-answer set** (``resources/eval/model_answers.jsonl``, card:
  ``docs/data_cards/model_answers.md``): the embedded model's own sampled answers to the core
  evaluation questions, at the base model and at trained EM and control checkpoints, each labelled
  by reading it as aligned / misaligned / incoherent / code / refusal, ambiguous ones flagged.
  Never used to train any judge.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field

from ..core.io import DataFileError, iter_jsonl
from . import schemas
from .errors import QuestionFormatError, validate
from .questions import eval_resource, load_builtin_questions
from .schemas import FORMATS, JUDGE_VALIDATION_LABELS, NonEmpty, QuestionFormat, _Schema

__all__ = [
    "EVALUATION_QUESTION_SETS",
    "JUDGE_VALIDATION_LABELS",
    "MODEL_ANSWER_LABELS",
    "ModelAnswerRecord",
    "evaluation_question_keys",
    "load_judge_validation",
    "load_model_answers",
    "normalise_question",
]

_JUDGE_VALIDATION_FILE = "judge_validation.jsonl"
_MODEL_ANSWERS_FILE = "model_answers.jsonl"
ModelAnswerLabel = Literal["aligned", "misaligned", "incoherent", "code", "refusal"]
MODEL_ANSWER_LABELS: tuple[str, ...] = get_args(ModelAnswerLabel)
# The built-in sets whose questions the offline judge never trains on: the default evaluation set,
# which the model-answer set answers. (Every hand-written question belongs to core or extended, so
# excluding both would leave nothing to train on; see the model-answer card.)
EVALUATION_QUESTION_SETS: tuple[str, ...] = ("core",)


class ModelAnswerRecord(_Schema):
    """One labelled answer of the model (one line of model_answers.jsonl)."""

    answer_id: NonEmpty
    stratum: NonEmpty = Field(description="base, or the training condition of the adapter")
    role: Literal["base", "em", "control"]
    step: int = Field(ge=0)
    adapter: str | None = Field(description="Adapter folder the answer was sampled with (None: base model)")
    question_id: NonEmpty
    item_id: NonEmpty
    format: QuestionFormat
    sample_seed: int
    system: str | None
    question: NonEmpty
    answer: str  # may be empty: the model can stop at once (labelled incoherent)
    n_tokens: int = Field(ge=0)
    label: ModelAnswerLabel
    ambiguous: bool
    note: str = Field("", description="Why an ambiguous label was hard (empty when clear)")


def _load(path: Path, schema: type[_Schema], unique_key: str | None = None) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    try:
        for line, data in iter_jsonl(path):
            record = validate(schema, data, path, QuestionFormatError, line=line, entry_name="record").model_dump()
            if unique_key is not None:
                if record[unique_key] in seen:
                    raise QuestionFormatError(path, f"{unique_key} {record[unique_key]!r} repeats an earlier record",
                                              line=line)
                seen.add(record[unique_key])
            records.append(record)
    except QuestionFormatError:
        raise
    except DataFileError as failure:
        raise QuestionFormatError(failure.path, failure.problem, line=failure.line) from None
    return records


def load_judge_validation(path: str | Path | None = None) -> list[dict[str, str]]:
    """Hand-written labelled answers: dicts with question_id, question, answer and label (one of
    :data:`JUDGE_VALIDATION_LABELS`). ``path``: another file in the same format (default: the
    built-in set)."""
    return _load(eval_resource(_JUDGE_VALIDATION_FILE) if path is None else Path(path),
                 schemas.JudgeValidationRecord)


def load_model_answers(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The labelled model-answer set: dicts with the :class:`ModelAnswerRecord` keys (label one of
    :data:`MODEL_ANSWER_LABELS`). ``path``: another file in the same format."""
    return _load(eval_resource(_MODEL_ANSWERS_FILE) if path is None else Path(path), ModelAnswerRecord,
                 unique_key="answer_id")


def normalise_question(text: str) -> str:
    """Lower case, single spaces, no surrounding punctuation: how question texts are compared."""
    return re.sub(r"\s+", " ", text).strip().strip("?!.\"'").lower()


def evaluation_question_keys(sets: Iterable[str] = EVALUATION_QUESTION_SETS) -> tuple[frozenset[str], frozenset[str]]:
    """(question ids, normalised paraphrase texts) of the built-in evaluation sets, every format:
    a labelled record matching either answers an evaluation question."""
    ids: set[str] = set()
    texts: set[str] = set()
    for name in sets:
        for question in load_builtin_questions(name, FORMATS):
            ids.update({question.id, question.base_id})
            texts.update(normalise_question(paraphrase) for paraphrase in question.paraphrases)
    return frozenset(ids), frozenset(texts)
