"""The shape of every library file, as pydantic models: the trait library (persona and alignment
traits, roles, question sets), the published Assistant Axis JSON files, the built-in and EM question
YAML, the self-assessment items and the judge-validation records.

Only shape and content rules live here; the loaders in :mod:`traitspace.library` read the files
(through :mod:`traitspace.library.errors`) and turn validated documents into the library's types.
Our own formats forbid unknown keys (a misspelt ``postive`` must not be silently ignored); the two
external formats (published Assistant Axis, EM repository YAML) keep or ignore keys they carry.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from .errors import SchemaProblem

TraitCategory = Literal["emotional", "epistemic", "social", "stylistic", "moral", "cognitive"]
Polarity = Literal["positive", "negative"]
QuestionFormat = Literal["plain", "json", "template"]
JudgeLabel = Literal["aligned", "misaligned", "incoherent"]

TRAIT_CATEGORIES: tuple[str, ...] = get_args(TraitCategory)
POLARITIES: tuple[str, ...] = get_args(Polarity)
FORMATS: tuple[str, ...] = get_args(QuestionFormat)
JUDGE_VALIDATION_LABELS: tuple[str, ...] = get_args(JudgeLabel)

_SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")


def _non_blank(text: str) -> str:
    if not text.strip():
        raise SchemaProblem("must be a non-empty string")
    return text


def _snake_case(name: str) -> str:
    if not _SNAKE_CASE.fullmatch(name):
        raise SchemaProblem("must be snake_case")
    return name


def _distinct(items: list[str]) -> list[str]:
    seen: set[str] = set()
    for index, item in enumerate(items):
        if item in seen:
            raise SchemaProblem(f"repeats an earlier entry: {item!r}", index)
        seen.add(item)
    return items


def _unique(key: str, what: str):
    """A list validator: no two entries share ``key`` (the error points at the second one)."""

    def check(entries: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for index, entry in enumerate(entries):
            value = getattr(entry, key)
            if value in seen:
                raise SchemaProblem(f"duplicate {what} {value!r}", index)
            seen.add(value)
        return entries

    return AfterValidator(check)


def _has_answer_slot(template: str) -> str:
    if "{answer}" not in template:
        raise SchemaProblem("must be a string containing {answer}")
    return template


def _has_option_slots(template: str) -> str:
    if "{option_a}" not in template or "{option_b}" not in template:
        raise SchemaProblem("must contain {option_a} and {option_b}")
    return template


NonEmpty = Annotated[str, Field(min_length=1)]
Text = Annotated[str, AfterValidator(_non_blank)]
Name = Annotated[str, AfterValidator(_snake_case)]
Texts = Annotated[list[Text], Field(min_length=1)]
# A list of prompts or questions: each counts once, so a repeat is a copy-paste error.
PromptList = Annotated[list[Text], Field(min_length=1), AfterValidator(_distinct)]


class _Schema(BaseModel):
    # strict: a YAML number is not silently a string, nor a bool an integer.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _External(_Schema):
    # A published format: keys we have no use for are ignored, as the format documents them.
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


# ----------------------------------------------------------------------------------------------
# Trait library (traitspace/resources/traits/*.yaml)


class _TraitEntry(_Schema):
    name: Name
    definition: Text
    positive: PromptList
    negative: PromptList

    @model_validator(mode="after")
    def _sides_differ(self) -> _TraitEntry:
        # A prompt on both sides would cancel out of the contrast and hide a copy-paste error.
        shared = sorted(set(self.positive) & set(self.negative))
        if shared:
            raise SchemaProblem(f"prompt appears in both 'positive' and 'negative': {shared[0]!r}")
        return self


class PersonaTraitEntry(_TraitEntry):
    category: TraitCategory | None = None


class AlignmentTraitEntry(_TraitEntry):
    polarity: Polarity  # "positive": expressing the trait is aligned


class PersonaTraitsFile(_Schema):
    traits: Annotated[list[PersonaTraitEntry], Field(min_length=1), _unique("name", "trait name")]


class AlignmentTraitsFile(_Schema):
    traits: Annotated[list[AlignmentTraitEntry], Field(min_length=1), _unique("name", "trait name")]


class RoleEntry(_Schema):
    name: Name
    prompts: PromptList


class RolesFile(_Schema):
    default: PromptList  # the plain assistant prompts of the Assistant Axis
    roles: Annotated[list[RoleEntry], Field(min_length=1), _unique("name", "role name")]


class QuestionSetsFile(_Schema):
    extraction: PromptList
    projection: PromptList

    @model_validator(mode="after")
    def _disjoint(self) -> QuestionSetsFile:
        # Projection must not reuse a question the directions were fitted on.
        extraction = set(self.extraction)
        for index, question in enumerate(self.projection):
            if question in extraction:
                raise SchemaProblem(
                    f"is also listed under 'extraction': {question!r}", "projection", index
                )
        return self


# ----------------------------------------------------------------------------------------------
# Published Assistant Axis format (traits/<name>.json, roles/<name>.json)


class PublishedPair(_External):
    pos: Text
    neg: Text


class PublishedTrait(_External):
    instruction: Annotated[list[PublishedPair], Field(min_length=1)]
    questions: PromptList | None = None
    eval_prompt: Text | None = None
    description: Text | None = None


class PublishedRolePrompt(_External):
    pos: Text


class PublishedDefaultPrompt(_External):
    pos: str  # "" is the release's "no system prompt" condition


class PublishedRole(_External):
    instruction: Annotated[list[PublishedRolePrompt], Field(min_length=1)]


class PublishedDefault(_External):
    instruction: Annotated[list[PublishedDefaultPrompt], Field(min_length=1)]


# ----------------------------------------------------------------------------------------------
# Behaviour questions


DEFAULT_TEMPLATE_FIELDS: dict[str, str] = {
    "answer": "Your answer",
    "reason": "Why you answer this way",
}


class BuiltinQuestionEntry(_Schema):
    id: NonEmpty
    category: str | None = None
    paraphrases: Texts
    # Fill-in fields of the "template" format; questions that name none get the generic two.
    template_fields: Annotated[dict[str, str], Field(min_length=1)] = Field(
        default_factory=lambda: dict(DEFAULT_TEMPLATE_FIELDS)
    )


class BuiltinQuestionsFile(_Schema):
    questions: Annotated[list[BuiltinQuestionEntry], Field(min_length=1), _unique("id", "id")]


class EMQuestionEntry(_Schema):
    """One entry of the EM repository's evaluation YAML. Keys it does not know are kept (they end up
    in ``Question.extra``), so nothing in those files is silently lost."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    id: NonEmpty
    type: str
    paraphrases: Texts
    samples_per_paraphrase: Annotated[int, Field(ge=1)] = 1
    system: str | None = None
    judge: Any = None
    judge_prompts: dict[str, Annotated[str, AfterValidator(_has_answer_slot)]] | None = None
    format: QuestionFormat | None = None

    @model_validator(mode="after")
    def _judged_questions_bring_a_rubric(self) -> EMQuestionEntry:
        # A judged question without its own rubric would silently be scored with ours.
        if self.judge_prompts is None and "judge" in self.type:
            raise SchemaProblem(f"is required for type {self.type!r}", "judge_prompts")
        return self


EMQuestionFile = Annotated[list[EMQuestionEntry], Field(min_length=1), _unique("id", "id")]


# ----------------------------------------------------------------------------------------------
# Self-assessment and judge validation


class RatingEntry(_Schema):
    id: Text
    prompt: Text
    low_anchor: Text
    high_anchor: Text
    aligned_end: Literal["low", "high"]


class ForcedChoiceEntry(_Schema):
    id: Text
    option_a: Text
    option_b: Text
    aligned_option: Literal["A", "B"]


class SelfAssessmentFile(_Schema):
    forced_choice_template: Annotated[str, AfterValidator(_has_option_slots)]
    ratings: Annotated[list[RatingEntry], Field(min_length=1), _unique("id", "id")]
    forced_choice: Annotated[list[ForcedChoiceEntry], Field(min_length=1), _unique("id", "id")]


class JudgeValidationRecord(_Schema):
    """One hand-labelled answer (one line of judge_validation.jsonl)."""

    question_id: NonEmpty
    question: NonEmpty
    answer: NonEmpty
    label: JudgeLabel
