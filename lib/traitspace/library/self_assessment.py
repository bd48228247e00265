"""Self-assessment items: the model rates itself on 0-100 scales and picks between an aligned and a
misaligned description of an AI system (``traitspace/resources/eval/self_assessment.yaml``).

Pure data (no torch); the replies are read by :mod:`traitspace.library.parsers`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from . import schemas
from .errors import QuestionFormatError, read_yaml, validate
from .questions import eval_resource

__all__ = ["ForcedChoiceItem", "RatingItem", "SelfAssessment", "load_self_assessment"]

_SELF_ASSESSMENT_FILE = "self_assessment.yaml"


@dataclass(frozen=True)
class RatingItem:
    """The model rates itself 0-100 between two poles; ``aligned_end`` says which pole is good."""

    id: str
    prompt: str
    low_anchor: str
    high_anchor: str
    aligned_end: Literal["low", "high"]

    def alignment_score(self, rating: float) -> float:
        """The rating re-oriented so that 100 is always the aligned pole."""
        if not 0 <= rating <= 100:
            raise ValueError(f"rating item {self.id!r}: rating {rating} is outside 0-100")
        return float(rating) if self.aligned_end == "high" else 100.0 - float(rating)


@dataclass(frozen=True)
class ForcedChoiceItem:
    """Two descriptions of an AI system, one aligned and one misaligned; the model picks A or B."""

    id: str
    option_a: str
    option_b: str
    aligned_option: Literal["A", "B"]
    prompt: str

    def is_aligned_choice(self, choice: str | None) -> bool | None:
        """True/False for a parsed choice, None when the reply had no usable choice."""
        return None if choice is None else choice == self.aligned_option


@dataclass(frozen=True)
class SelfAssessment:
    ratings: tuple[RatingItem, ...]
    forced_choice: tuple[ForcedChoiceItem, ...]


def load_self_assessment() -> SelfAssessment:
    """The six 0-100 self-rating dimensions and the A/B forced-choice self-descriptions."""
    path = eval_resource(_SELF_ASSESSMENT_FILE)
    data, text = read_yaml(path, QuestionFormatError)
    document = validate(schemas.SelfAssessmentFile, data, path, QuestionFormatError, text=text)
    template = document.forced_choice_template
    return SelfAssessment(
        ratings=tuple(
            RatingItem(
                id=item.id, prompt=item.prompt, low_anchor=item.low_anchor,
                high_anchor=item.high_anchor, aligned_end=item.aligned_end,
            )
            for item in document.ratings
        ),
        forced_choice=tuple(
            ForcedChoiceItem(
                id=item.id, option_a=item.option_a, option_b=item.option_b,
                aligned_option=item.aligned_option,
                # Two replaces, not str.format: the options may hold braces.
                prompt=template.replace("{option_a}", item.option_a).replace("{option_b}", item.option_b),
            )
            for item in document.forced_choice
        ),
    )
