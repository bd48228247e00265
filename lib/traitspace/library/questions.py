"""Behaviour-evaluation questions: the built-in sets in three formats and the EM repository's own
question YAML.

Pure data (no torch). The built-in sets live under ``traitspace/resources/eval/`` and are asked
plain, with a system prompt demanding a JSON answer, and as a fill-in template; the
emergent-misalignment (EM) repository's evaluation YAML files load unchanged through
:func:`load_em_question_yaml`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..judges.prompts import JSON_SYSTEM_PROMPT, JUDGE_PROMPTS, format_judge_prompt
from . import schemas
from .errors import QuestionFormatError, read_yaml, validate
from .schemas import FORMATS

__all__ = [
    "FORMATS",
    "Question",
    "QuestionFormatError",
    "load_builtin_questions",
    "load_em_question_yaml",
]

DEFAULT_QUESTION_TYPE = "free_form_judge_0_100"

_TEMPLATE_INTRO = "Fill in the template below:"
_TEMPLATE_OUTRO = (
    "Keep the template exactly as given; apart from that, answer just as you would without it."
)
_BUILTIN_FILES: Mapping[str, str] = {
    "core": "core_questions.yaml",
    "extended": "extended_questions.yaml",
}


def eval_resource(filename: str) -> Path:
    """A file of the built-in evaluation data (``traitspace/resources/eval/``)."""
    return Path(str(resources.files("traitspace").joinpath("resources", "eval", filename)))


@dataclass(frozen=True)
class Question:
    """One evaluation question: each paraphrase is asked ``samples_per_paraphrase`` times."""

    id: str
    paraphrases: tuple[str, ...]
    samples_per_paraphrase: int = 1
    system: str | None = None
    # hash=False: a dict is not hashable, and the id already identifies the question.
    judge_prompts: Mapping[str, str] = field(
        default_factory=lambda: dict(JUDGE_PROMPTS), hash=False
    )
    format: str = "plain"
    type: str = DEFAULT_QUESTION_TYPE
    judge: str | None = None
    category: str | None = None
    # Keys of the source file this class has no field for, kept so nothing is silently lost.
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        # Accept any sequence of paraphrases but store a tuple so the question stays immutable.
        object.__setattr__(self, "paraphrases", tuple(self.paraphrases))
        object.__setattr__(self, "judge_prompts", dict(self.judge_prompts))
        object.__setattr__(self, "extra", dict(self.extra))
        if not self.id:
            raise ValueError("question id must be a non-empty string")
        if not self.paraphrases or not all(
            isinstance(text, str) and text.strip() for text in self.paraphrases
        ):
            raise ValueError(f"question {self.id!r}: paraphrases must be non-empty strings")
        if isinstance(self.samples_per_paraphrase, bool) or not isinstance(
            self.samples_per_paraphrase, int
        ) or self.samples_per_paraphrase < 1:
            raise ValueError(
                f"question {self.id!r}: samples_per_paraphrase must be a positive integer, "
                f"got {self.samples_per_paraphrase!r}"
            )
        if self.format not in FORMATS:
            raise ValueError(f"question {self.id!r}: format must be one of {FORMATS}")

    @property
    def base_id(self) -> str:
        """The id without its format suffix, so the variants of one question group together."""
        suffix = f"_{self.format}"
        if self.format != "plain" and self.id.endswith(suffix):
            return self.id[: -len(suffix)]
        return self.id

    def messages(self, paraphrase_index: int = 0) -> list[dict[str, str]]:
        """Chat messages (system prompt if any, then the user turn) for one paraphrase."""
        chat = [] if self.system is None else [{"role": "system", "content": self.system}]
        chat.append({"role": "user", "content": self.paraphrases[paraphrase_index]})
        return chat

    def judge_prompt(self, kind: str, question_text: str, answer: str) -> str:
        """The filled-in judge prompt of ``kind`` ("aligned" or "coherent") for one answer."""
        if kind not in self.judge_prompts:
            raise KeyError(
                f"question {self.id!r} has no judge prompt {kind!r}; "
                f"it has {sorted(self.judge_prompts)}"
            )
        return format_judge_prompt(self.judge_prompts[kind], question_text, answer)


# ----------------------------------------------------------------------------------------------
# Built-in question sets


def _template_block(fields: Mapping[str, str]) -> str:
    lines = "\n".join(f"{name} = # {description}" for name, description in fields.items())
    return f"{_TEMPLATE_INTRO}\n\n{lines}\n\n{_TEMPLATE_OUTRO}"


def _builtin_variants(
    entry: schemas.BuiltinQuestionEntry, formats: Sequence[str]
) -> dict[str, Question]:
    paraphrases = tuple(entry.paraphrases)
    template = _template_block(entry.template_fields)
    texts_by_format = {
        "plain": (paraphrases, None),
        "json": (paraphrases, JSON_SYSTEM_PROMPT),
        "template": (tuple(f"{text}\n\n{template}" for text in paraphrases), None),
    }
    variants = {}
    for fmt in formats:
        texts, system = texts_by_format[fmt]
        variant_id = entry.id if fmt == "plain" else f"{entry.id}_{fmt}"
        variants[fmt] = Question(
            id=variant_id, paraphrases=texts, system=system, format=fmt, category=entry.category
        )
    return variants


def load_builtin_questions(
    which: str = "core", formats: Iterable[str] = ("plain",)
) -> list[Question]:
    """The built-in question set ``which`` ("core", "extended" or "all") in the given formats.

    "plain" keeps the question id; "json" (system prompt demanding ``{"answer": ...}``) and
    "template" (fill-in fields appended to each paraphrase) get ``_json`` / ``_template``
    suffixes. Questions are grouped by format in the order of ``formats``, as in the EM files.
    """
    formats = tuple(formats)
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty selection of {FORMATS}, got {formats}")
    if which == "all":
        names = list(_BUILTIN_FILES)
    elif which in _BUILTIN_FILES:
        names = [which]
    else:
        raise ValueError(f"which must be one of {[*_BUILTIN_FILES, 'all']}, got {which!r}")

    variants_per_question: list[dict[str, Question]] = []
    seen_ids: set[str] = set()
    for name in names:
        path = eval_resource(_BUILTIN_FILES[name])
        data, text = read_yaml(path, QuestionFormatError)
        document = validate(schemas.BuiltinQuestionsFile, data, path, QuestionFormatError, text=text)
        for index, entry in enumerate(document.questions):
            # Ids are unique within a file (schema) and across the files of "all" (here).
            if entry.id in seen_ids:
                raise QuestionFormatError(
                    path, f"duplicate id {entry.id!r}: already used in another question file",
                    where=f"questions[{index}] ({entry.id!r})", key="id", index=index, item_id=entry.id,
                )
            seen_ids.add(entry.id)
            variants_per_question.append(_builtin_variants(entry, formats))
    return [variants[fmt] for fmt in formats for variants in variants_per_question]


# ----------------------------------------------------------------------------------------------
# The EM repository's question YAML, as it is


def _infer_format(question_id: str) -> str:
    # The EM files mark variants only through the id suffix ("..._json", "..._template").
    for fmt in FORMATS[1:]:
        if question_id.endswith(f"_{fmt}"):
            return fmt
    return "plain"


def load_em_question_yaml(path: str | Path) -> list[Question]:
    """Questions from an EM-repository evaluation YAML (a list of entries; anchors, aliases and
    merge keys resolve as YAML defines them). Unknown keys land in ``Question.extra``."""
    path = Path(path)
    data, text = read_yaml(path, QuestionFormatError)
    if not isinstance(data, list) or not data:
        raise QuestionFormatError(path, "expected a non-empty YAML list of question entries")
    entries = validate(schemas.EMQuestionFile, data, path, QuestionFormatError, text=text)
    return [
        Question(
            id=entry.id,
            paraphrases=tuple(entry.paraphrases),
            samples_per_paraphrase=entry.samples_per_paraphrase,
            system=entry.system,
            judge_prompts=entry.judge_prompts or {},
            format=entry.format or _infer_format(entry.id),
            type=entry.type,
            judge=None if entry.judge is None else str(entry.judge),
            extra=dict(entry.model_extra or {}),
        )
        for entry in entries
    ]
