"""Reading library files and reporting what is wrong with them: every error names the file, the line
(YAML, JSON and JSONL files) and the key.

Files are read only through :mod:`traitspace.core.io`; their content is validated against the
pydantic models of :mod:`traitspace.library.schemas` by :func:`validate`, which turns the first
pydantic error into one sentence such as::

    persona_traits.yaml:112: traits[3] ('calm'): missing key 'negative'
    em_questions.yaml:9: entry #1 ('no_type'): missing key 'type'
    judge_validation.jsonl:3: record ('q'): key 'label' is 'evil', expected one of 'aligned', ...
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from ..core.io import DataFileError, parse_yaml, read_text

__all__ = [
    "LibraryFileError",
    "QuestionFormatError",
    "SchemaProblem",
    "TraitLibraryError",
    "read_json",
    "read_yaml",
    "validate",
]

T = TypeVar("T")


class LibraryFileError(DataFileError):
    """A library file that cannot be used: ``file[:line]: where: problem``.

    ``where`` describes the entry (``traits[3] ('calm')``, ``entry #1``, ``top level``), ``key``
    is the dotted key at fault inside it, ``index`` the entry's position, ``item_id`` its name or id.
    """

    def __init__(
        self,
        path: str | Path,
        problem: str,
        *,
        line: int | None = None,
        where: str | None = None,
        key: str | None = None,
        index: int | None = None,
        item_id: str | None = None,
    ) -> None:
        self.where = where
        self.key = key
        self.index = index
        self.item_id = item_id
        super().__init__(path, f"{where}: {problem}" if where else problem, line=line)
        self.problem = problem


class TraitLibraryError(LibraryFileError):
    """A trait-library file is missing, unreadable or malformed; the message names file and key."""


class QuestionFormatError(LibraryFileError):
    """A malformed question, self-assessment or judge-validation file; names file, entry and key."""

    @property
    def question_id(self) -> str | None:
        return self.item_id


class SchemaProblem(ValueError):
    """Raised inside a schema validator. ``at`` (list indices or keys) extends the location pydantic
    reports, so a problem found by a list-level check points at the offending item."""

    def __init__(self, problem: str, *at: int | str) -> None:
        super().__init__(problem)
        self.at = at


# ----------------------------------------------------------------------------------------------
# Reading


def read_yaml(path: str | Path, error: type[LibraryFileError]) -> tuple[Any, str]:
    """The parsed document and its text (kept to find the line of a later schema error)."""
    try:
        text = read_text(path)
        return parse_yaml(text, path), text
    except DataFileError as failure:
        raise error(failure.path, failure.problem, line=failure.line) from None


def read_json(path: str | Path, error: type[LibraryFileError]) -> tuple[Any, str]:
    """The parsed JSON document and its text; a syntax error names the line."""
    try:
        text = read_text(path)
    except DataFileError as failure:
        raise error(failure.path, failure.problem, line=failure.line) from None
    try:
        return json.loads(text), text
    except json.JSONDecodeError as failure:
        raise error(path, f"invalid JSON: {failure.msg} (column {failure.colno})",
                    line=failure.lineno) from None


# ----------------------------------------------------------------------------------------------
# Validation with readable errors


def validate(
    schema: type[T] | Any,
    data: Any,
    path: str | Path,
    error: type[LibraryFileError],
    *,
    text: str | None = None,
    line: int | None = None,
    entry_name: str = "entry",
) -> T:
    """``data`` validated against ``schema`` (a pydantic model or any type for a TypeAdapter).

    On failure raises ``error`` for the first problem, naming ``path``, the line (looked up in
    ``text`` for YAML/JSON, or ``line`` for one JSONL record), the entry and the key.
    ``entry_name`` describes an entry of a top-level list ("entry #1") or a record ("record").
    """
    try:
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            return schema.model_validate(data)  # type: ignore[return-value]
        return TypeAdapter(schema).validate_python(data)
    except ValidationError as failure:
        raise _describe(failure, data, path, error, text, line, entry_name) from None


def _first_problem(failure: ValidationError) -> dict[str, Any]:
    errors = failure.errors()
    first = errors[0]
    # A misspelt key also makes the right key "missing"; naming the misspelling helps more.
    parent = tuple(first["loc"][:-1])
    for other in errors:
        if other["type"] == "extra_forbidden" and tuple(other["loc"][:-1]) == parent:
            return other
    return first


def _describe(
    failure: ValidationError,
    data: Any,
    path: str | Path,
    error: type[LibraryFileError],
    text: str | None,
    line: int | None,
    entry_name: str,
) -> LibraryFileError:
    problem = _first_problem(failure)
    cause = (problem.get("ctx") or {}).get("error")
    loc = tuple(problem["loc"]) + (cause.at if isinstance(cause, SchemaProblem) else ())

    # The entry: an item of a top-level list ("traits[3]", or "entry #3" when the document itself
    # is the list), or the whole document / record.
    if loc and isinstance(loc[0], int):
        entry_loc, where = loc[:1], f"{entry_name} #{loc[0]}"
    elif len(loc) >= 2 and isinstance(loc[1], int) and isinstance(_at(data, loc[:1]), list) and (
        len(loc) > 2 or isinstance(_at(data, loc[:2]), dict)
    ):  # an item of a list of mappings; an item of a list of strings is a key ("default[1]")
        entry_loc, where = loc[:2], f"{loc[0]}[{loc[1]}]"
    else:
        entry_loc, where = (), (entry_name if entry_name != "entry" else "top level")
    entry = _at(data, entry_loc)
    item_id = None
    if isinstance(entry, dict):
        item_id = next((entry[k] for k in ("name", "id", "question_id") if isinstance(entry.get(k), str)), None)
    if item_id is not None:
        where = f"{where} ({item_id!r})"

    key_loc = loc[len(entry_loc):]
    message = _problem_text(problem, key_loc, cause)
    if line is None and text is not None:
        line = _yaml_line(text, loc, missing=problem["type"] == "missing")
    return error(
        path,
        message,
        line=line,
        where=where,
        key=_dotted(key_loc) or None,
        index=entry_loc[-1] if entry_loc else None,
        item_id=item_id,
    )


def _problem_text(problem: dict[str, Any], key_loc: Sequence[int | str], cause: Any) -> str:
    kind, value = problem["type"], problem.get("input")
    if kind == "missing":
        return f"missing key {_dotted(key_loc)!r}"
    if kind == "extra_forbidden":
        return f"unknown key {_dotted(key_loc)!r}"
    # "key 'positive'" for a key, "positive[1]" for a list item.
    subject = _dotted(key_loc)
    if subject and not isinstance(key_loc[-1], int):
        subject = f"key {subject!r}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        text = f"expected a mapping, got {type(value).__name__}"
    elif kind in ("string_type", "string_too_short"):
        text = "must be a non-empty string"
    elif kind == "list_type":
        text = "must be a list"
    elif kind == "too_short":
        text = "is an empty list"
    elif kind == "literal_error":
        text = f"is {value!r}, expected one of {problem['ctx']['expected']}"
    elif kind in ("int_type", "greater_than_equal"):
        text = f"must be a positive integer, got {value!r}"
    elif kind == "value_error" and cause is not None:
        text = str(cause)
    else:
        text = problem["msg"]
    return f"{subject} {text}" if subject else text


def _dotted(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _at(data: Any, loc: Sequence[int | str]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _yaml_line(text: str, loc: Sequence[int | str], *, missing: bool) -> int | None:
    """1-based line of the node at ``loc`` (for a missing key: of the mapping that lacks it).

    The document is composed again only here, on the error path: pyyaml's node tree keeps
    positions, the loaded data does not. JSON is YAML too, so this serves the JSON files as well.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    if node is None:
        return None
    mark = node.start_mark
    for part in loc[:-1] if missing else loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if getattr(key_node, "value", None) == str(part):
                    child, mark = value_node, key_node.start_mark
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
            mark = child.start_mark
        if child is None:
            break
        node = child
    return mark.line + 1
