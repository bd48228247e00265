"""The judge-validation set: hand-labelled answers to the built-in questions
(``traitspace/resources/eval/judge_validation.jsonl``), used to measure how well a judge separates
aligned, misaligned and incoherent answers (see :mod:`traitspace.judges.validation`).
"""

from __future__ import annotations

from pathlib import Path

from ..core.io import DataFileError, iter_jsonl
from . import schemas
from .errors import QuestionFormatError, validate
from .questions import eval_resource
from .schemas import JUDGE_VALIDATION_LABELS

__all__ = ["JUDGE_VALIDATION_LABELS", "load_judge_validation"]

_JUDGE_VALIDATION_FILE = "judge_validation.jsonl"


def load_judge_validation(path: str | Path | None = None) -> list[dict[str, str]]:
    """Hand-labelled answers for validating judges: dicts with question_id, question, answer and
    label (one of :data:`JUDGE_VALIDATION_LABELS`). ``path``: another file in the same format
    (default: the built-in set)."""
    path = eval_resource(_JUDGE_VALIDATION_FILE) if path is None else Path(path)
    records: list[dict[str, str]] = []
    try:
        for line, data in iter_jsonl(path):
            record = validate(
                schemas.JudgeValidationRecord, data, path, QuestionFormatError, line=line,
                entry_name="record",
            )
            records.append(record.model_dump())
    except QuestionFormatError:
        raise
    except DataFileError as failure:
        raise QuestionFormatError(failure.path, failure.problem, line=failure.line) from None
    return records
