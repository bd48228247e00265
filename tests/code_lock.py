"""The lock of the source each stage's code version was last reviewed against
(``tests/code_versions.lock.json``; see :mod:`traitspace.core.code_versions`).

    python tests/code_lock.py            # which stages' sources changed since the lock
    python tests/code_lock.py --update   # re-lock, after bumping the versions whose results change

A stage's sources are the modules :data:`~traitspace.core.code_versions.SOURCES` names (every module
of a named subpackage) and, transitively, every ``traitspace`` module they import, at module level or
inside a function (read from the source with ``ast``, nothing is imported).
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import sys
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "lib" / "traitspace"
LOCK_FILE = Path(__file__).resolve().parent / "code_versions.lock.json"
sys.path.insert(0, str(PACKAGE_ROOT.parent))

from traitspace.core.code_versions import CODE_VERSIONS, SOURCES  # noqa: E402


def module_file(name: str) -> Path | None:
    """The file of module ``traitspace.x.y`` (a package's ``__init__.py``), None outside the package."""
    parts = name.split(".")
    if parts[0] != "traitspace":
        return None
    base = PACKAGE_ROOT.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE_ROOT.parent).with_suffix("")
    parts = list(relative.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """The ``traitspace`` modules ``path`` imports (``from x import name`` counts ``x.name`` when that
    is a module)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if module_file(name) is not None}


def stage_sources(stage: str) -> list[Path]:
    """Every file of ``stage``'s code: its named modules or subpackages and their imports, closed."""
    pending: list[Path] = []
    for name in SOURCES[stage]:
        file = module_file(name)
        if file is None:
            raise KeyError(f"code_versions.SOURCES[{stage!r}] names {name!r}, which is not a traitspace module")
        pending += sorted(file.parent.glob("*.py")) if file.name == "__init__.py" else [file]
    seen: set[Path] = set()
    while pending:
        file = pending.pop()
        if file in seen:
            continue
        seen.add(file)
        pending += [module_file(name) for name in imported_modules(file)]
    # The versions themselves are compared one by one; their file would tie every stage to every bump.
    return sorted(seen - {module_file("traitspace.core.code_versions")})


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def current_lock() -> dict[str, dict]:
    return {stage: {"code_version": CODE_VERSIONS[stage],
                    "files": {str(path.relative_to(PACKAGE_ROOT.parent)): file_digest(path) for path in stage_sources(stage)}}
            for stage in sorted(SOURCES)}


def differences(locked: dict[str, dict], current: dict[str, dict]) -> dict[str, list[str]]:
    """Per stage whose lock is out of date: what changed (files edited, added, removed; the version)."""
    report: dict[str, list[str]] = {}
    for stage in sorted(set(locked) | set(current)):
        old, new = locked.get(stage), current.get(stage)
        if old is None or new is None:
            report[stage] = ["stage added" if old is None else "stage removed"]
            continue
        lines = [f"edited {name}" for name in sorted(set(old["files"]) & set(new["files"]))
                 if old["files"][name] != new["files"][name]]
        lines += [f"now imports {name}" for name in sorted(set(new["files"]) - set(old["files"]))]
        lines += [f"no longer imports {name}" for name in sorted(set(old["files"]) - set(new["files"]))]
        if old["code_version"] != new["code_version"]:
            lines.append(f"version {old['code_version']} -> {new['code_version']}")
        if lines:
            report[stage] = lines
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="write the lock from the current sources and versions")
    args = parser.parse_args(argv)
    current = current_lock()
    locked = json.loads(LOCK_FILE.read_text()) if LOCK_FILE.is_file() else {}
    report = differences(locked, current)
    for stage, lines in report.items():
        print(f"{stage} (version {CODE_VERSIONS.get(stage)}): " + "; ".join(lines))
    if args.update:
        LOCK_FILE.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
        print(f"wrote {LOCK_FILE}")
    elif not report:
        print("the lock is current")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
