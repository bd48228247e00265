"""The extraction plan: which traits and control contrasts, which questions (and which are held
out), and one row per conversation to read (every trait and control prompt x question, and the
Assistant Axis' default prompts and roles x question).

Pure bookkeeping on the trait library and the ``extract`` parameters: no model, no files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..core import traits as trait_math
from ..core.config import ExtractSection
from ..library import Trait, TraitLibrary
from .controls import CONTROL_KIND, load_control_pairs

AXIS_NAME = "assistant_axis"
MODEL_DEFAULT_PROMPT = "<model default>"  # how the plan shows "no system prompt: the model's own default"


@dataclass(frozen=True)
class TraitEntry:
    """A trait selected for extraction, under the name it is stored as."""

    name: str
    kind: str  # "persona" | "alignment" | "control"
    trait: Trait


def selected_traits(library: TraitLibrary, settings: ExtractSection) -> list[TraitEntry]:
    """The traits named by ``settings`` (persona traits, then alignment traits as ``align_<name>``)."""
    persona_names = set(library.persona_trait_names)
    names = list(library.persona_trait_names) if settings.traits == "all" else list(settings.traits)
    if settings.include_alignment:
        names += [trait.name for trait in library.all_traits if trait.name not in persona_names and trait.name not in names]
    entries = []
    for name in names:
        try:
            trait = library.trait(name)
        except KeyError as error:
            raise KeyError(f"extract.traits: {error.args[0]}") from None
        entries.append(TraitEntry(name, "persona" if name in persona_names else "alignment", trait))
    return entries


def control_entries(settings: ExtractSection) -> list[TraitEntry]:
    """The control contrasts (none when ``extract.controls`` is off)."""
    return [TraitEntry(trait.name, CONTROL_KIND, trait) for trait in load_control_pairs()] if settings.controls else []


def extraction_questions(library: TraitLibrary, settings: ExtractSection) -> tuple[list[str], set[int]]:
    """The questions asked (a seeded sample of the library's extraction questions) and the indices
    of those held out."""
    questions = list(library.extraction_questions)
    order = np.random.default_rng(settings.seed).permutation(len(questions))[: settings.n_questions]
    chosen = [questions[index] for index in order]
    _, heldout = trait_math.split_heldout(len(chosen), settings.heldout_fraction, settings.seed)
    return chosen, {int(index) for index in heldout}


def build_plan(library: TraitLibrary, settings: ExtractSection) -> pd.DataFrame:
    """One row per conversation to read.

    Columns: ``owner`` (vector name), ``kind`` (persona | alignment | axis), ``side`` (positive |
    negative for traits; default | role for the axis), ``group`` (the role's name, else the side),
    ``prompt_index`` (for traits and controls: the instruction pair, the unit the instruction folds
    hold out), ``system`` (None: the model's own default system prompt), ``question_index``,
    ``question``, ``heldout`` (bool).
    """
    questions, heldout = extraction_questions(library, settings)
    rows: list[dict[str, Any]] = []

    def add(owner: str, kind: str, side: str, group: str, prompt_index: int, system: str | None) -> None:
        for question_index, question in enumerate(questions):
            rows.append({
                "owner": owner, "kind": kind, "side": side, "group": group, "prompt_index": prompt_index,
                "system": system, "question_index": question_index, "question": question,
                "heldout": question_index in heldout,
            })

    for entry in [*selected_traits(library, settings), *control_entries(settings)]:
        pairs = min(len(entry.trait.positive), len(entry.trait.negative))
        if pairs < settings.n_instruction_pairs:
            raise ValueError(f"extract.n_instruction_pairs: {entry.name} has only {pairs} prompt pairs")
        for side in ("positive", "negative"):
            prompts = getattr(entry.trait, side)[: settings.n_instruction_pairs]
            for prompt_index, prompt in enumerate(prompts):
                add(entry.name, entry.kind, side, side, prompt_index, prompt)

    # Assistant Axis: the library's plain assistant prompts plus the model's own default, against
    # roles. The published format writes "no system prompt" as "": that is the model's default too.
    defaults: list[str | None] = list(dict.fromkeys(
        [*(prompt or None for prompt in library.default_prompts[: settings.n_default_prompts]), None]))
    for prompt_index, prompt in enumerate(defaults):
        add(AXIS_NAME, "axis", "default", "default", prompt_index, prompt)
    roles = list(library.roles)
    if settings.n_roles is not None and settings.n_roles < len(roles):
        picked = np.random.default_rng(settings.seed).choice(len(roles), settings.n_roles, replace=False)
        roles = [roles[index] for index in sorted(picked)]
    for role in roles:
        for prompt_index, prompt in enumerate(role.prompts[: settings.n_role_prompts]):
            add(AXIS_NAME, "axis", "role", role.name, prompt_index, prompt)
    return pd.DataFrame(rows)


def system_or_none(system: Any) -> str | None:
    """A plan row's system prompt, None for the model's default (pandas stores it as nan)."""
    return None if system is None or (isinstance(system, float) and np.isnan(system)) else str(system)


def plan_conversations(loaded, plan: pd.DataFrame) -> list[list[dict]]:
    """The chat messages of each plan row (no system message = the model's own default)."""
    return [loaded.chat.conversation(question, system=system_or_none(system))
            for system, question in zip(plan["system"], plan["question"])]


def chunks_by_owner(plan: pd.DataFrame, max_rows: int) -> list[list[str]]:
    """Owners (vectors) in plan order, cut into chunks of at most ``max_rows`` conversations (an
    owner larger than that is a chunk of its own): a chunk's activations are held in memory at once."""
    chunks: list[list[str]] = [[]]
    rows = 0
    for owner, size in plan.groupby("owner", sort=False).size().items():
        if chunks[-1] and rows + size > max_rows:
            chunks.append([])
            rows = 0
        chunks[-1].append(owner)
        rows += size
    return chunks


def plan_overview(library: TraitLibrary, settings: ExtractSection) -> tuple[str, pd.DataFrame]:
    """What notebook 02 shows before extracting: a few lines on the plan (counts, one trait's
    first prompt pair) and the questions table (``question``, ``use``: fit | held out)."""
    entries = selected_traits(library, settings)
    controls = control_entries(settings)
    questions, heldout = extraction_questions(library, settings)
    plan = build_plan(library, settings)
    example = entries[0]
    lines = [
        f"{len(entries)} traits ({sum(entry.kind == 'alignment' for entry in entries)} alignment), "
        f"{len(controls)} control contrasts, {plan.loc[plan['side'] == 'role', 'group'].nunique()} roles, "
        f"{len(questions)} questions, {len(plan)} conversations in all",
        "",
        f"Trait {example.name!r}: {example.trait.definition}",
        f"  positive: {example.trait.positive[0]}",
        f"  negative: {example.trait.negative[0]}",
    ]
    if controls:
        lines += [f"Control {controls[0].name!r}: {controls[0].trait.definition}",
                  f"  positive: {controls[0].trait.positive[0]}",
                  f"  negative: {controls[0].trait.negative[0]}"]
    text = "\n".join(lines)
    table = pd.DataFrame({"question": questions,
                          "use": ["held out" if index in heldout else "fit" for index in range(len(questions))]})
    return text, table
