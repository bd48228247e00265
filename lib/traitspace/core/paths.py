"""Where a relative path in a params file points: the project root, whatever the working directory.

The project root is the folder holding this project's ``pyproject.toml`` (``name = "traitspace"``),
found by walking up from the working directory. JupyterLab starts a notebook's kernel in the
notebook's own folder (``notebooks/``, or ``outputs/<run>/notebooks/`` for an executed copy) while
papermill runs it from the project root; resolving against the root gives both the same params file,
data files and ``outputs/``. ``TRAITSPACE_ROOT`` names the root explicitly (for notebooks copied
outside the project); outside any project, relative paths keep their usual meaning (the working
directory).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import RunConfig

ROOT_ENV = "TRAITSPACE_ROOT"
# A marker, not a parse: only the project's own pyproject.toml declares this name.
_PROJECT_NAME = re.compile(r'^name\s*=\s*["\']traitspace["\']\s*$', re.MULTILINE)


def _is_project_root(folder: Path) -> bool:
    marker = folder / "pyproject.toml"
    try:
        return marker.is_file() and bool(_PROJECT_NAME.search(marker.read_text(encoding="utf-8")))
    except OSError:
        return False


def project_root(start: str | Path | None = None) -> Path:
    """``$TRAITSPACE_ROOT`` if set, else the nearest folder at or above ``start`` (default: the working
    directory) that holds this project's pyproject.toml, else ``start`` itself. Absolute."""
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).expanduser().resolve()
    here = Path(start if start is not None else os.getcwd()).expanduser().resolve()
    for folder in (here, *here.parents):
        if _is_project_root(folder):
            return folder
    return here


def resolve(path: str | Path, root: str | Path | None = None) -> Path:
    """``path`` with ``~`` expanded; a relative path is taken from the project root (not normalised
    further, so links in the root's own path stay as they are)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else Path(root if root is not None else project_root()) / path


def describe_paths(config: "RunConfig") -> str:
    """The resolved paths a notebook works with, for its first cell's output."""
    return "\n".join([
        f"project root: {project_root()}",
        f"params file:  {config.params_path}",
        f"run folder:   {config.run_dir}",
    ])
