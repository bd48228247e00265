"""Content hashes of what a stage wrote, and checking them: a damaged or missing file is found and
named, never silently trusted.

:meth:`traitspace.core.artifacts.Stage.mark_done` records the sha256 and size of every file under the
stage folder in its manifest; :meth:`Stage.is_done` treats a stage whose files no longer match as
not done, so a rerun recomputes it. :func:`verify_run` checks every manifest of a run folder (the
``python -m traitspace verify`` command, for runs copied between machines).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20


class DamagedOutput(RuntimeError):
    """A file a finished stage wrote is missing or no longer has the content it was written with."""


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(path: str | Path) -> dict:
    """What a manifest or sidecar records of a file it wrote: ``{"sha256", "bytes"}``."""
    return {"sha256": file_digest(path), "bytes": Path(path).stat().st_size}


def matches_record(path: str | Path, recorded: dict) -> bool:
    """``path`` exists and still has the content ``recorded`` (a :func:`file_record`). Size first, so
    a truncated file is caught without reading it."""
    path = Path(path)
    return (path.is_file() and path.stat().st_size == recorded.get("bytes")
            and file_digest(path) == recorded.get("sha256"))


# Figures, HTML and text reports are redrawn by the notebooks (possibly after the manifest, so whether
# one existed when the manifest was written would depend on the run's history); tables, vectors,
# adapters and parts are what later stages read, so those are the files whose damage must be caught.
UNTRACKED_SUFFIXES = (".png", ".html", ".md", ".txt")


def stage_files(folder: str | Path) -> dict[str, dict]:
    """{relative path: {"sha256", "bytes"}} of the data files under ``folder``: not manifests, not
    figures or reports (:data:`UNTRACKED_SUFFIXES`), not hidden temporaries of atomic writes, and
    nothing inside a nested folder that has its own manifest (another stage's)."""
    folder = Path(folder)
    nested = {path.parent for path in folder.rglob(MANIFEST_NAME) if path.parent != folder}
    files = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if (not path.is_file() or path.name == MANIFEST_NAME or path.suffix in UNTRACKED_SUFFIXES
                or any(part.startswith(".") for part in relative.parts)
                or any(parent in nested for parent in path.parents)):
            continue
        files[relative.as_posix()] = file_record(path)
    return files


@dataclass
class Problem:
    stage: Path
    file: str
    what: str  # "missing" | "changed"

    def line(self) -> str:
        return f"{self.what:8s} {self.stage / self.file}"


def check_files(folder: str | Path, recorded: dict[str, dict]) -> list[Problem]:
    """Files of ``recorded`` (a manifest's ``files``) that are missing or changed under ``folder``.
    Size first, then the hash, so an untouched run is checked without surprises."""
    folder = Path(folder)
    problems = []
    for name, expected in recorded.items():
        path = folder / name
        if not path.is_file():
            problems.append(Problem(folder, name, "missing"))
        elif not matches_record(path, expected):
            problems.append(Problem(folder, name, "changed"))
    return problems


def damaged_files(folder: str | Path, params_hash: str | None = None) -> list[Problem]:
    """The recorded files of the finished stage in ``folder`` that are missing or changed ([] when it
    has no readable manifest, or one written with other params than ``params_hash``)."""
    manifest_path = Path(folder) / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    except ValueError:  # bad JSON, or bytes that are not UTF-8
        return []
    if params_hash is not None and manifest.get("params_hash") != params_hash:
        return []
    return check_files(folder, manifest.get("files") or {})


def require_intact(folder: str | Path, notebook: str) -> None:
    """Raise :class:`DamagedOutput` naming the file, the stage and the fix when a finished stage's
    files do not match its manifest (a stage without recorded files, from an older version, passes)."""
    manifest_path = Path(folder) / MANIFEST_NAME
    if not manifest_path.is_file():
        return
    try:
        recorded = json.loads(manifest_path.read_text()).get("files") or {}
    except ValueError:  # bad JSON, or bytes that are not UTF-8
        raise DamagedOutput(f"{manifest_path} is not valid JSON: rerun notebook {notebook} to rebuild the stage") from None
    problems = check_files(folder, recorded)
    if problems:
        listed = "; ".join(problem.line().strip() for problem in problems[:5])
        raise DamagedOutput(
            f"stage {Path(folder).name} (notebook {notebook}) has {len(problems)} damaged or missing file(s): {listed}. "
            f"Rerun notebook {notebook}: it sees the mismatch and recomputes the stage.")


def verify_run(run_dir: str | Path) -> tuple[int, list[Problem]]:
    """Every manifest under ``run_dir`` checked against its files: (manifests checked, problems)."""
    problems, checked = [], 0
    for manifest_path in sorted(Path(run_dir).rglob(MANIFEST_NAME)):
        try:
            recorded = json.loads(manifest_path.read_text()).get("files")
        except ValueError:  # bad JSON, or bytes that are not UTF-8
            problems.append(Problem(manifest_path.parent, MANIFEST_NAME, "changed"))
            continue
        if recorded is None:
            continue
        checked += 1
        problems += check_files(manifest_path.parent, recorded)
    return checked, problems
