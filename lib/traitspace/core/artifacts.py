"""Writing run outputs safely and recording what produced them.

Every write is atomic (a temporary file in the same folder, then ``os.replace``), so an
interrupted run never leaves a half-written file that a rerun would take for finished work.
Temporaries are hidden and marked ``.partial`` (:data:`PARTIAL_MARKER`); what a killed run left of
them is removed when its stage next starts or finishes (:func:`remove_partial_writes`). A full disk
stops the run with :class:`DiskFull`, naming the file that could not be written; the file keeps its
previous content. Each stage writes a ``manifest.json`` (params hash, package versions, git commit,
timings, the version of its code and the sha256 of every data file it wrote); a rerun whose params
hash and code version match and whose files are intact skips the stage (:mod:`traitspace.core.integrity`,
:mod:`traitspace.core.code_versions`).
"""

from __future__ import annotations

import contextlib
import errno
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from . import faults

TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "bitsandbytes",
    "accelerate",
    "numpy",
    "pandas",
    "scikit-learn",
    "scipy",
    "papermill",
    "traitspace",
)


PARTIAL_MARKER = ".partial"  # in the name of every temporary of an atomic write, and only there
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(OSError):
    """The device filled up while a run output was written; the message names the file."""


def _is_disk_full(error: BaseException) -> bool:
    # Libraries differ in how they report it: an OSError with errno, or (pyarrow) errno in the text.
    return isinstance(error, OSError) and (
        error.errno in _DISK_FULL_ERRNOS or "No space left on device" in str(error))


@contextlib.contextmanager
def _explained_write_errors(path: Path) -> Iterator[None]:
    """Turn a full disk during the write of ``path`` into :class:`DiskFull` with what to do."""
    try:
        yield
    except OSError as error:
        if not _is_disk_full(error):
            raise
        try:
            free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free there now"
        except OSError:
            free = "free space unknown"
        raise DiskFull(errno.ENOSPC, f"no space left on the device to write {path} ({free}). The run stopped "
                       f"here; every file written before is complete, and {path.name} keeps its previous "
                       f"content, if any. Free some space and rerun: finished work is reused.") from error


def _temporary_sibling(path: Path, suffix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{PARTIAL_MARKER}{suffix}", dir=path.parent)
    os.close(handle)
    return Path(name)


def _replace(temporary: Path, path: Path) -> None:
    faults.reached("before-replace", path)
    os.replace(temporary, path)
    faults.reached("written", path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    with _explained_write_errors(path):
        temporary = _temporary_sibling(path)
        try:
            temporary.write_bytes(data)
            _replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write with any library (parquet, safetensors, figures), then
    rename it onto ``path`` only if the block finished without raising."""
    path = Path(path)
    with _explained_write_errors(path):
        temporary = _temporary_sibling(path, suffix=path.suffix)
        try:
            yield temporary
            _replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it replaces ``path`` in one rename.
    A folder that exists at ``path`` is therefore always complete."""
    path = Path(path)
    with _explained_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=PARTIAL_MARKER, dir=path.parent))
        try:
            yield temporary
            if path.exists():
                shutil.rmtree(path)
            _replace(temporary, path)
        finally:
            if temporary.exists():
                shutil.rmtree(temporary, ignore_errors=True)


def remove_partial_writes(folder: str | Path) -> list[Path]:
    """Remove the temporaries that killed writes left under ``folder`` (hidden, marked
    :data:`PARTIAL_MARKER`); return what was removed. Only for a folder no other process is writing:
    a stage calls it on its own folder when it starts and when it finishes."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    leftovers = sorted(folder.rglob(f".*{PARTIAL_MARKER}*"))  # a folder before what is inside it
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return leftovers


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(repo_dir: str | Path = ".") -> str | None:
    """The checked-out commit (with '-dirty' when the tree has changes), or None outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo_dir, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def provenance() -> dict[str, Any]:
    return {"versions": package_versions(), "git_commit": git_commit(), "host": platform.node()}


class Stage:
    """A named unit of work inside a run folder, cached by params hash and code version.

    Usage::

        stage = Stage(run_dir / "traits", params_hash=cfg.params_hash("model", "extract"),
                      code_version=code_version("extract"))
        if not stage.is_done():
            ...compute and write files into stage.path...
            stage.mark_done(extra={"n_traits": 240})
    """

    def __init__(self, path: str | Path, params_hash: str, *, code_version: int):
        self.path = Path(path)
        self.params_hash = params_hash
        self.code_version = code_version
        self.manifest_path = self.path / "manifest.json"
        self._started = time.perf_counter()

    def is_done(self) -> bool:
        """Finished with these params, and every data file it recorded is still intact (a damaged or
        missing file makes the stage not done, so a rerun recomputes it). A stage asks this when it
        starts, so the temporaries a killed run left in its folder are removed here."""
        from .integrity import check_files

        remove_partial_writes(self.path)
        if not self.manifest_path.is_file():
            return False
        try:
            manifest = read_json(self.manifest_path)
        except (OSError, ValueError):  # ValueError: bad JSON or bytes that are not UTF-8
            return False
        if manifest.get("params_hash") != self.params_hash or manifest.get("complete") is not True:
            return False
        stored_version = manifest.get("code_version", 1)  # manifests from before code versions count as 1
        if stored_version != self.code_version:
            print(f"[{self.path.name}] made by version {stored_version} of this stage's code, which is now version "
                  f"{self.code_version} (traitspace.core.code_versions); recomputing the stage", flush=True)
            return False
        problems = check_files(self.path, manifest.get("files") or {})
        for problem in problems:
            print(f"[{self.path.name}] {problem.what}: {problem.stage / problem.file}; recomputing the stage", flush=True)
        return not problems

    def manifest(self) -> dict[str, Any]:
        return read_json(self.manifest_path)

    def mark_done(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write the manifest last, with the sha256 and size of every data file in the stage folder
        (after removing what killed earlier runs left half-written there)."""
        from .integrity import stage_files

        remove_partial_writes(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        manifest = {
            "stage": self.path.name,
            "params_hash": self.params_hash,
            "code_version": self.code_version,
            "complete": True,
            "seconds": round(time.perf_counter() - self._started, 3),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **provenance(),
            **(extra or {}),
            "files": stage_files(self.path),
        }
        atomic_write_json(self.manifest_path, manifest)
        return manifest
