"""The project's fixed data, validated: the trait library, the behaviour question sets, the
self-assessment items and the judge-validation set. Pure data (no torch); every file is read through
:mod:`traitspace.core.io` and checked against :mod:`traitspace.library.schemas`, and every error
names the file, the line and the key.

Modules: ``traits`` (TraitLibrary and its loaders), ``questions`` (Question, built-in sets in three
formats, EM question YAML), ``self_assessment``, ``judge_validation``, ``parsers`` (reading the
self-assessment replies), ``references`` (params names checked against the library and datasets),
``schemas`` and ``errors``. The judge prompt text is in :mod:`traitspace.judges.prompts`.
"""

from ..judges.prompts import JSON_SYSTEM_PROMPT, JUDGE_PROMPTS, format_judge_prompt
from .errors import LibraryFileError, QuestionFormatError, TraitLibraryError
from .judge_validation import JUDGE_VALIDATION_LABELS, load_judge_validation
from .parsers import parse_forced_choice, parse_self_rating
from .questions import FORMATS, Question, load_builtin_questions, load_em_question_yaml
from .self_assessment import ForcedChoiceItem, RatingItem, SelfAssessment, load_self_assessment
from .traits import (
    ALIGNMENT_PREFIX,
    POLARITIES,
    TRAIT_CATEGORIES,
    Role,
    Trait,
    TraitLibrary,
    load_assistant_axis_folder,
    load_builtin_library,
    load_library_folder,
)

__all__ = [
    "ALIGNMENT_PREFIX",
    "FORMATS",
    "JSON_SYSTEM_PROMPT",
    "JUDGE_PROMPTS",
    "JUDGE_VALIDATION_LABELS",
    "POLARITIES",
    "TRAIT_CATEGORIES",
    "ForcedChoiceItem",
    "LibraryFileError",
    "Question",
    "QuestionFormatError",
    "RatingItem",
    "Role",
    "SelfAssessment",
    "Trait",
    "TraitLibrary",
    "TraitLibraryError",
    "format_judge_prompt",
    "load_assistant_axis_folder",
    "load_builtin_library",
    "load_builtin_questions",
    "load_em_question_yaml",
    "load_judge_validation",
    "load_library_folder",
    "load_self_assessment",
    "parse_forced_choice",
    "parse_self_rating",
]
