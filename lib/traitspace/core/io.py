"""Reading the project's text data files: one YAML loader and one JSONL reader, both with errors
that name the file and the line.

Every YAML file the package reads (params, trait library, question sets, dataset content) and every
JSONL file (datasets, the judge-validation set, logs) goes through here, so a broken file always
fails the same way: ``DataFileError("<file>:<line>: <problem>")``.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

# The C loader is ~10x faster on the 240-trait library; same results as SafeLoader.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class DataFileError(ValueError):
    """A data file that cannot be read or parsed; the message starts with ``file[:line]``."""

    def __init__(self, path: str | Path, problem: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


def read_text(path: str | Path) -> str:
    """A file's text, or DataFileError naming it (missing, unreadable, not UTF-8)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataFileError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataFileError(path, f"cannot read: {error}") from error


def parse_yaml(text: str, label: str | Path) -> Any:
    """Parse YAML text; errors name ``label`` and the line of the broken construct."""
    try:
        return yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as error:
        # The context mark points at the construct that is broken (an unclosed list, say); the
        # problem mark often points at the end of the file.
        mark = getattr(error, "context_mark", None) or getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        raise DataFileError(label, f"invalid YAML: {problem}",
                            line=mark.line + 1 if mark is not None else None) from None


def load_yaml(path: str | Path) -> Any:
    """Read and parse one YAML file (see :func:`parse_yaml`)."""
    return parse_yaml(read_text(path), path)


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """``(line_number, record)`` for every non-blank line of a JSONL file; a line that is not JSON
    raises DataFileError with its line number."""
    for line_number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield line_number, json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFileError(path, f"invalid JSON: {error.msg}", line=line_number) from None


def read_jsonl(path: str | Path) -> list[Any]:
    """Every record of a JSONL file (see :func:`iter_jsonl`)."""
    return [record for _, record in iter_jsonl(path)]
