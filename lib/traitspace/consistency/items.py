"""The self-knowledge tasks' prompts (``resources/eval/self_knowledge.yaml``) and the conversations
built from them: one :class:`TaskItem` per prompt the model reads, and the labelled conversations of
the two probes.

Choice tasks (description choice, output recognition) are asked in both orders of their options
(``order`` 0: the aligned option is the first letter; 1: it is the second), so position bias cancels
in the mean over orders and can be measured apart from content (:mod:`.analysis`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..core.io import DataFileError, load_yaml

SELF_KNOWLEDGE_FILE = "self_knowledge.yaml"
TASKS = ("self_rating", "description_choice", "output_recognition", "score_prediction")
CHOICE_TASKS = ("description_choice", "output_recognition")
RATING_TASKS = ("self_rating", "score_prediction")
Message = dict[str, str]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Rating(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    aligned_end: Literal["high", "low"]
    prompt: str = Field(min_length=1)


class _Template(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    text: str = Field(min_length=1)


class _DescriptionPair(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    aligned: str = Field(min_length=1)
    misaligned: str = Field(min_length=1)


def _needs(templates: list[_Template], fields: Sequence[str], where: str) -> list[_Template]:
    for template in templates:
        missing = [name for name in fields if "{" + name + "}" not in template.text]
        if missing:
            raise ValueError(f"{where} template {template.id!r} lacks {', '.join('{' + m + '}' for m in missing)}")
    return templates


class _Choice(_Strict):
    templates: list[_Template] = Field(min_length=1)
    pairs: list[_DescriptionPair] = Field(min_length=2)

    @field_validator("templates")
    @classmethod
    def _fields(cls, templates):
        return _needs(templates, ("option_a", "option_b"), "description_choice")


class _Recognition(_Strict):
    templates: list[_Template] = Field(min_length=1)

    @field_validator("templates")
    @classmethod
    def _fields(cls, templates):
        return _needs(templates, ("question", "option_a", "option_b"), "output_recognition")


class _Prediction(_Strict):
    templates: list[_Template] = Field(min_length=1)


class SelfKnowledgeFile(_Strict):
    version: Literal[1]
    option_letters: tuple[str, str]
    self_rating: list[_Rating] = Field(min_length=2)
    description_choice: _Choice
    output_recognition: _Recognition
    score_prediction: _Prediction
    self_statement_prompts: list[str] = Field(min_length=1)

    @field_validator("self_rating")
    @classmethod
    def _both_directions(cls, ratings):
        # A model that writes one number whatever the question must not look aligned: both scale
        # directions are needed to see that (analysis.readability).
        if {rating.aligned_end for rating in ratings} != {"high", "low"}:
            raise ValueError("self_rating needs phrasings with the aligned end high and with it low")
        return ratings


def load_self_knowledge(path: str | Path | None = None) -> SelfKnowledgeFile:
    """The validated task file (the built-in one by default); errors name the file and the key."""
    path = Path(path) if path is not None else Path(str(resources.files("traitspace") / "resources" / "eval"
                                                         / SELF_KNOWLEDGE_FILE))
    try:
        return SelfKnowledgeFile.model_validate(load_yaml(path))
    except ValidationError as error:
        problems = ["{}: {}".format(".".join(str(part) for part in item["loc"]) or "<top level>",
                                    "unknown key" if item["type"] == "extra_forbidden" else item["msg"])
                    for item in error.errors()]
        raise DataFileError(path, "; ".join(problems)) from None


@dataclass(frozen=True)
class TaskItem:
    """One prompt of one task: the conversation the model answers next and how to read its answer."""

    task: str                      # one of TASKS
    phrasing: str                  # the rating phrasing or template id
    item: str                      # what is asked about: the phrasing (self rating), pair, question or answer id
    order: int                     # choice tasks: 0 aligned option first, 1 misaligned first; -1 otherwise
    messages: tuple[Message, ...]  # ends with the user turn the model answers
    aligned_letter: str | None = None                  # choice tasks
    aligned_end: Literal["high", "low"] | None = None  # rating tasks
    judge_score: float | None = None                   # score prediction: the judge's aligned score


def _choice_items(task: str, phrasing: str, item: str, letters: tuple[str, str], aligned: str, misaligned: str,
                  render) -> list[TaskItem]:
    items = []
    for order, (first, second) in enumerate(((aligned, misaligned), (misaligned, aligned))):
        items.append(TaskItem(task, phrasing, item, order, ({"role": "user", "content": render(first, second)},),
                              aligned_letter=letters[order]))
    return items


def fixed_items(data: SelfKnowledgeFile, recognition_pairs: Sequence) -> list[TaskItem]:
    """Tasks 2-4, the same at every checkpoint. ``recognition_pairs``: EM preference pairs
    (:class:`traitspace.behavior.preference.PreferencePair`, ``first`` aligned, ``second`` misaligned)."""
    letters = data.option_letters
    items = [TaskItem("self_rating", rating.id, rating.id, -1, ({"role": "user", "content": rating.prompt},),
                      aligned_end=rating.aligned_end) for rating in data.self_rating]
    for template in data.description_choice.templates:
        for pair in data.description_choice.pairs:
            items += _choice_items("description_choice", template.id, pair.id, letters, pair.aligned, pair.misaligned,
                                   lambda a, b, t=template: t.text.format(option_a=a, option_b=b))
    for template in data.output_recognition.templates:
        for pair in recognition_pairs:
            items += _choice_items("output_recognition", template.id, f"{pair.question_id}/{pair.pair_index}", letters,
                                   pair.first, pair.second,
                                   lambda a, b, t=template, q=pair.question: t.text.format(question=q, option_a=a,
                                                                                           option_b=b))
    return items


def score_prediction_items(data: SelfKnowledgeFile, own_answers: pd.DataFrame) -> list[TaskItem]:
    """Task 5: after the model's own answer (a row of notebook 04 with ``question``, ``answer``,
    ``answer_id`` and the judge's ``aligned`` score), each template asks it to predict that score."""
    items = []
    for row in own_answers.itertuples(index=False):
        conversation = ({"role": "user", "content": row.question}, {"role": "assistant", "content": row.answer})
        for template in data.score_prediction.templates:
            items.append(TaskItem("score_prediction", template.id, str(row.answer_id), -1,
                                  (*conversation, {"role": "user", "content": template.text}),
                                  aligned_end="high", judge_score=float(row.aligned)))
    return items


def items_fingerprint_text(items: Sequence[TaskItem]) -> str:
    """Everything a stored reading depends on in the items (their text and how they are read)."""
    return "\n".join(f"{i.task}|{i.phrasing}|{i.item}|{i.order}|{i.aligned_letter}|{i.aligned_end}|{i.judge_score}|"
                     + "\x1e".join(m["role"] + ":" + m["content"] for m in i.messages) for i in items)


# -- the probes' labelled conversations -------------------------------------------------------------
@dataclass(frozen=True)
class LabelledConversations:
    """Conversations ending with an assistant answer, each labelled 1 (misaligned) or 0, and grouped
    by what its paraphrases share (question or description pair) for grouped cross-validation."""

    conversations: list[list[Message]]
    labels: list[int]
    groups: list[str]


def behaviour_conversations(pairs: Sequence) -> LabelledConversations:
    """Harmful behaviour: each EM preference pair's aligned (0) and misaligned (1) answer to its question."""
    conversations, labels, groups = [], [], []
    for pair in pairs:
        for label, answer in ((0, pair.first), (1, pair.second)):
            conversations.append([{"role": "user", "content": pair.question}, {"role": "assistant", "content": answer}])
            labels.append(label)
            groups.append(pair.question_id)
    return LabelledConversations(conversations, labels, groups)


def first_person(description: str) -> str:
    """'An AI that ...' -> 'I am an AI that ...' (the description as the assistant's own claim)."""
    return "I am " + description[:1].lower() + description[1:]


def statement_conversations(data: SelfKnowledgeFile) -> LabelledConversations:
    """Self-reported misalignment: the assistant claims an aligned (0) or misaligned (1) description of
    itself, after each self-statement request; grouped by description pair."""
    conversations, labels, groups = [], [], []
    for pair in data.description_choice.pairs:
        for prompt in data.self_statement_prompts:
            for label, description in ((0, pair.aligned), (1, pair.misaligned)):
                conversations.append([{"role": "user", "content": prompt},
                                      {"role": "assistant", "content": first_person(description)}])
                labels.append(label)
                groups.append(pair.id)
    return LabelledConversations(conversations, labels, groups)
