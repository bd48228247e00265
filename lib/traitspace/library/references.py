"""The names a params file uses, checked against what exists: trait names and counts against the
trait library ``extract.library`` names, fine-tuning conditions against the dataset registry.

:func:`traitspace.core.config.load_config` validates the shape of a params file and then calls
:func:`check_references`, so an unknown trait or dataset is rejected, with the file and the key,
before any model loads. Kept out of the params schema so that the schema imports neither the
library nor the datasets.
"""

from __future__ import annotations

import difflib

from ..core.config import ConfigError, RunConfig, looks_like_file
from .traits import TraitLibraryError, load_library

__all__ = ["check_references", "reference_problems"]


def check_references(config: RunConfig) -> None:
    """Raise ConfigError naming the params file and every key whose names or counts do not exist."""
    problems = reference_problems(config)
    if problems:
        lines = [f"{config.params_path or '<params>'}: invalid parameters"]
        lines += [f"  {key}: {message} (got {value!r})" for key, message, value in problems]
        raise ConfigError("\n".join(lines))


def reference_problems(config: RunConfig) -> list[tuple[str, str, object]]:
    """``(dotted key, problem, value)`` for every reference that does not resolve."""
    return _extract_problems(config) + _finetune_problems(config)


def _extract_problems(config: RunConfig) -> list[tuple[str, str, object]]:
    settings = config.extract
    try:
        library = load_library(settings.library)  # pure data; the built-in one is parsed once and cached
    except TraitLibraryError as error:
        return [("extract.library", str(error), settings.library)]
    problems: list[tuple[str, str, object]] = []

    known = {trait.name for trait in library.all_traits}
    selected = list(library.persona_traits)
    if settings.traits != "all":
        unknown = [name for name in settings.traits if name not in known]
        if unknown:
            hints = {name: difflib.get_close_matches(name, sorted(known), n=3) for name in unknown}
            described = ", ".join(f"{name!r} (close: {', '.join(close) or 'none'})" for name, close in hints.items())
            problems.append(("extract.traits", f"unknown trait names: {described}", settings.traits))
        selected = [library.trait(name) for name in settings.traits if name in known]
    if settings.include_alignment:
        selected += list(library.all_traits[len(library.persona_traits):])

    available = len(library.extraction_questions)
    if settings.n_questions > available:
        problems.append(("extract.n_questions", f"only {available} extraction questions exist", settings.n_questions))
    n_pairs = settings.n_instruction_pairs
    short = [trait.name for trait in selected if min(len(trait.positive), len(trait.negative)) < n_pairs]
    if short:
        problems.append(
            ("extract.n_instruction_pairs", f"these traits have fewer than {n_pairs} prompt pairs: {short[:10]}", n_pairs)
        )
    if settings.n_roles is not None and settings.n_roles > len(library.roles):
        problems.append(("extract.n_roles", f"only {len(library.roles)} roles exist", settings.n_roles))
    return problems


def _finetune_problems(config: RunConfig) -> list[tuple[str, str, object]]:
    from ..em_data import DATASETS

    conditions = config.finetune.conditions
    mapping = dict(zip(conditions, conditions)) if isinstance(conditions, list) else conditions
    problems: list[tuple[str, str, object]] = []
    for name, source in mapping.items():
        # File sources are checked (they must exist) by the schema itself.
        if not looks_like_file(source) and source not in DATASETS:
            problems.append((
                "finetune.conditions",
                f"{name}: {source!r} is neither a built-in dataset ({sorted(DATASETS)}) nor a .jsonl file",
                conditions,
            ))
    return problems
