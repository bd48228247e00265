"""The trait library: persona traits, alignment traits, Assistant Axis roles and question sets.

Pure data (no torch). Each trait is a set of contrasting system prompts: ``positive`` prompts tell
the assistant to express the trait, ``negative`` prompts tell it to express the opposite; the
difference of the mean activations under the two is a persona direction. Roles and the plain
``default`` assistant prompts give the Assistant Axis (Lu et al. 2026): mean(default) - mean(roles).

Two sources load into the same :class:`TraitLibrary`:

* the built-in YAML files under ``traitspace/resources/traits/`` (:func:`load_builtin_library`, or
  :func:`load_library_folder` for a folder holding the same four files);
* a folder in the published Assistant Axis JSON format, one file per trait and per role
  (:func:`load_assistant_axis_folder`).

Naming: the alignment traits ``sycophantic`` and ``deceptive`` also exist as persona traits, with
different prompts. :attr:`TraitLibrary.all_traits` therefore lists every alignment trait under the
name ``align_<name>``; :meth:`TraitLibrary.trait` looks names up in that combined list.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path

from . import schemas
from .errors import TraitLibraryError, read_json, read_yaml, validate
from .schemas import POLARITIES, TRAIT_CATEGORIES

__all__ = [
    "ALIGNMENT_PREFIX",
    "POLARITIES",
    "TRAIT_CATEGORIES",
    "Role",
    "Trait",
    "TraitLibrary",
    "TraitLibraryError",
    "load_assistant_axis_folder",
    "load_builtin_library",
    "load_library",
    "load_library_folder",
]

ALIGNMENT_PREFIX = "align_"

PERSONA_TRAITS_FILE = "persona_traits.yaml"
ALIGNMENT_TRAITS_FILE = "alignment_traits.yaml"
ROLES_FILE = "roles.yaml"
QUESTIONS_FILE = "questions.yaml"

# The published judge prompts open with "... displays the trait: **name**. <description>\n\n".
_EVAL_PROMPT_DESCRIPTION = re.compile(r"\*\*[^*\n]+\*\*\.?[ \t]*(?P<description>[^\n]+)")


@dataclass(frozen=True)
class Trait:
    """One trait as contrasting system prompts.

    ``questions`` and ``eval_prompt`` are filled only from the published format; ``polarity`` only
    for alignment traits ("positive": expressing the trait is aligned); ``category`` only for
    built-in persona traits (one of :data:`TRAIT_CATEGORIES`).
    """

    name: str
    definition: str
    positive: tuple[str, ...]
    negative: tuple[str, ...]
    questions: tuple[str, ...] = ()
    eval_prompt: str | None = None
    polarity: str | None = None
    category: str | None = None


@dataclass(frozen=True)
class Role:
    """A character the model is asked to embody, as system prompts."""

    name: str
    prompts: tuple[str, ...]


@dataclass(frozen=True)
class TraitLibrary:
    """Everything needed to extract persona directions and project onto them."""

    persona_traits: tuple[Trait, ...]
    alignment_traits: tuple[Trait, ...]
    default_prompts: tuple[str, ...]
    roles: tuple[Role, ...]
    extraction_questions: tuple[str, ...]
    projection_questions: tuple[str, ...]

    def __post_init__(self) -> None:
        _raise_on_duplicates([t.name for t in self.all_traits], "trait name")
        _raise_on_duplicates([r.name for r in self.roles], "role name")

    @property
    def all_traits(self) -> tuple[Trait, ...]:
        """Persona traits, then alignment traits renamed ``align_<name>`` so names stay unique."""
        return self.persona_traits + tuple(
            dataclasses.replace(t, name=ALIGNMENT_PREFIX + t.name) for t in self.alignment_traits
        )

    @property
    def persona_trait_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.persona_traits)

    @cached_property
    def _traits_by_name(self) -> dict[str, Trait]:
        return {t.name: t for t in self.all_traits}

    def trait(self, name: str) -> Trait:
        """The trait called ``name`` (alignment traits as ``align_<name>``).

        An unknown name raises KeyError listing close matches.
        """
        try:
            return self._traits_by_name[name]
        except KeyError:
            raise unknown_name_error("trait", name, self._traits_by_name) from None

    def role(self, name: str) -> Role:
        """The role called ``name``; KeyError lists close matches."""
        roles = {r.name: r for r in self.roles}
        try:
            return roles[name]
        except KeyError:
            raise unknown_name_error("role", name, roles) from None

    def subset(self, names: Sequence[str]) -> TraitLibrary:
        """A copy keeping only the named persona traits, in the order given.

        Alignment traits, roles and questions are kept unchanged. An unknown name raises KeyError
        naming it; a repeated name raises ValueError.
        """
        if isinstance(names, str):
            raise TypeError("subset() takes a sequence of trait names, not a single string")
        by_name = {t.name: t for t in self.persona_traits}
        for name in names:
            if name not in by_name:
                raise unknown_name_error("persona trait", name, by_name)
        _raise_on_duplicates(list(names), "name passed to subset()")
        return dataclasses.replace(self, persona_traits=tuple(by_name[n] for n in names))


def unknown_name_error(kind: str, name: str, known: Iterable[str]) -> KeyError:
    """KeyError for an unknown name, listing up to five close matches."""
    close = difflib.get_close_matches(name, list(known), n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else "; no close matches"
    return KeyError(f"unknown {kind} {name!r}{hint}")


def _raise_on_duplicates(names: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"duplicate {what}: {name!r}")
        seen.add(name)


# ----------------------------------------------------------------------------------------------
# Built-in YAML library


@lru_cache(maxsize=1)
def load_builtin_library() -> TraitLibrary:
    """The library shipped in ``traitspace/resources/traits/`` (parsed once, then cached)."""
    return _load_yaml_folder(Path(str(resources.files("traitspace") / "resources" / "traits")))


def load_library_folder(path: str | os.PathLike[str]) -> TraitLibrary:
    """A library from a folder holding the four built-in YAML files (persona_traits.yaml,
    alignment_traits.yaml, roles.yaml, questions.yaml), validated as the built-in one is."""
    folder = Path(path)
    if not folder.is_dir():
        raise TraitLibraryError(folder, "not a folder")
    return _load_yaml_folder(folder)


def _load_yaml_folder(folder: Path) -> TraitLibrary:
    def document(filename: str, schema: type):
        path = folder / filename
        data, text = read_yaml(path, TraitLibraryError)
        return validate(schema, data, path, TraitLibraryError, text=text)

    persona = document(PERSONA_TRAITS_FILE, schemas.PersonaTraitsFile)
    alignment = document(ALIGNMENT_TRAITS_FILE, schemas.AlignmentTraitsFile)
    roles = document(ROLES_FILE, schemas.RolesFile)
    questions = document(QUESTIONS_FILE, schemas.QuestionSetsFile)
    return TraitLibrary(
        persona_traits=tuple(
            Trait(e.name, e.definition, tuple(e.positive), tuple(e.negative), category=e.category)
            for e in persona.traits
        ),
        alignment_traits=tuple(
            Trait(e.name, e.definition, tuple(e.positive), tuple(e.negative), polarity=e.polarity)
            for e in alignment.traits
        ),
        default_prompts=tuple(roles.default),
        roles=tuple(Role(name=e.name, prompts=tuple(e.prompts)) for e in roles.roles),
        extraction_questions=tuple(questions.extraction),
        projection_questions=tuple(questions.projection),
    )


def load_library(source: str | os.PathLike[str]) -> TraitLibrary:
    """The library a params file names (``extract.library``): ``"builtin"``, a folder holding the
    built-in YAML files, or a folder in the published Assistant Axis layout (told apart by whether
    ``persona_traits.yaml`` is present)."""
    if str(source) == "builtin":
        return load_builtin_library()
    folder = Path(source).expanduser()
    if (folder / PERSONA_TRAITS_FILE).is_file():
        return load_library_folder(folder)
    return load_assistant_axis_folder(folder)


# ----------------------------------------------------------------------------------------------
# Published Assistant Axis format


def load_assistant_axis_folder(path: str | os.PathLike[str]) -> TraitLibrary:
    """A library from a folder in the published Assistant Axis layout.

    Expected layout (``traits/instructions/`` and ``roles/instructions/``, as in the release's
    ``data/`` folder, are accepted too)::

        traits/<name>.json   {"instruction": [{"pos": ..., "neg": ...}, ...],
                              "questions": [...], "eval_prompt": "...", "description": "..."?}
        roles/<name>.json    {"instruction": [{"pos": ...}, ...], ...}
        roles/default.json   plain assistant prompts, same shape as a role

    Trait and role names are the file stems; other keys are ignored. ``definition`` comes from
    ``description`` if present, else from the line after the bold trait name in ``eval_prompt``,
    else is the name. There are no alignment traits. ``default_prompts`` keep the release's text
    verbatim: ``""`` stands for "no system prompt" and ``{model_name}`` placeholders stay unfilled.

    Questions: the union of all trait questions (first occurrence kept, files in name order) is
    split into two halves by ranking each question by the SHA-256 of its text; the lower-ranked half
    (the larger one if the count is odd) is ``extraction_questions``, the rest
    ``projection_questions``, each in union order. The split is deterministic, does not depend on
    file order, and mixes questions of all traits into both halves. If no trait has questions, the
    built-in question sets are used instead.
    """
    root = Path(path)
    if not root.is_dir():
        raise TraitLibraryError(root, "not a folder")
    traits_dir = _published_subfolder(root, "traits")
    roles_dir = _published_subfolder(root, "roles")

    traits = tuple(_published_trait(file) for file in _json_files(traits_dir))
    default_file = roles_dir / "default.json"
    if not default_file.is_file():
        raise TraitLibraryError(default_file, "missing; it holds the plain assistant prompts")
    default = _published(default_file, schemas.PublishedDefault)
    roles = tuple(
        Role(name=file.stem, prompts=tuple(p.pos for p in _published(file, schemas.PublishedRole).instruction))
        for file in _json_files(roles_dir)
        if file.name != default_file.name
    )

    union = tuple(dict.fromkeys(q for trait in traits for q in trait.questions))
    if union:
        extraction, projection = _split_questions(union)
    else:
        builtin = load_builtin_library()
        extraction, projection = builtin.extraction_questions, builtin.projection_questions
    return TraitLibrary(
        persona_traits=traits,
        alignment_traits=(),
        default_prompts=tuple(p.pos for p in default.instruction),
        roles=roles,
        extraction_questions=extraction,
        projection_questions=projection,
    )


def _published_subfolder(root: Path, name: str) -> Path:
    folder = root / name
    if not folder.is_dir():
        raise TraitLibraryError(root, f"missing subfolder {name!r}")
    nested = folder / "instructions"
    return nested if nested.is_dir() else folder


def _json_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.json"))
    if not files:
        raise TraitLibraryError(folder, "no *.json files")
    return files


def _published(file: Path, schema: type):
    data, text = read_json(file, TraitLibraryError)
    return validate(schema, data, file, TraitLibraryError, text=text)


def _published_trait(file: Path) -> Trait:
    doc = _published(file, schemas.PublishedTrait)
    if doc.description is not None:
        definition = doc.description
    else:
        match = _EVAL_PROMPT_DESCRIPTION.search(doc.eval_prompt or "")
        definition = match.group("description").strip() if match else file.stem
    return Trait(
        name=file.stem,
        definition=definition,
        positive=tuple(pair.pos for pair in doc.instruction),
        negative=tuple(pair.neg for pair in doc.instruction),
        questions=tuple(doc.questions or ()),
        eval_prompt=doc.eval_prompt,
    )


def _split_questions(questions: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    ranked = sorted(questions, key=lambda q: hashlib.sha256(q.encode("utf-8")).hexdigest())
    extraction = set(ranked[: math.ceil(len(ranked) / 2)])
    return (
        tuple(q for q in questions if q in extraction),
        tuple(q for q in questions if q not in extraction),
    )
