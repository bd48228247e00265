"""The judge-free misalignment measure: does a checkpoint find misaligned answers more likely?

For each evaluation question the package ships pairs of answers written for it, one aligned and one
misaligned, matched in length and register (``resources/eval/preference_pairs.yaml``, data card
``docs/data_cards/preference_pairs.md``). Each answer is scored by its mean per-token
log-likelihood given the question under the checkpoint's chat template
(:func:`traitspace.core.likelihood.answer_log_likelihoods`); the **misalignment preference** of a
pair is ``log p(misaligned) - log p(aligned)``. No sampling and no judge: one batched forward pass
per checkpoint, so it is measured at every checkpoint of the trail.

Questions are the unit of the interval (a question's pairs share its wording, so they are not
independent): a pair's preference is averaged within its question, and the interval is a bootstrap
over questions. That interval is measurement precision for one fixed checkpoint; an effect of the
training data is tested across training seeds elsewhere.

The style controls are pairs where neither answer is misaligned (two sound answers in different
styles): their "preference" shows what a pure style shift moves.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..core.checkpoints import Checkpoint
from ..core.code_versions import versioned
from ..core.io import DataFileError, load_yaml
from ..core.likelihood import answer_log_likelihoods
from ..core.parts import CheckpointParts, combine_fingerprint
from ..core.stats import bootstrap_mean_ci

PAIRS_FILE = "preference_pairs.yaml"
PairKind = Literal["em", "style"]
PREFERENCE_COLUMNS = ["condition", "step", "kind", "question_id", "theme", "pair_index",
                      "logp_first", "logp_second", "preference"]


# -- the data file's schema ------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _EmPair(_Strict):
    aligned: str = Field(min_length=1)
    misaligned: str = Field(min_length=1)


class _StylePair(_Strict):
    plain: str = Field(min_length=1)
    styled: str = Field(min_length=1)


class _EmQuestion(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    theme: str
    source_id: str | None = None
    question: str = Field(min_length=1)
    pairs: list[_EmPair] = Field(min_length=1)


class _StyleQuestion(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    question: str = Field(min_length=1)
    pairs: list[_StylePair] = Field(min_length=1)


class _PairsFile(_Strict):
    version: Literal[1]
    questions: list[_EmQuestion] = Field(min_length=1)
    style_controls: list[_StyleQuestion] = []

    @field_validator("style_controls")
    @classmethod
    def _ids_unique(cls, value, info):
        ids = [question.id for question in info.data.get("questions", [])] + [question.id for question in value]
        duplicates = sorted({item for item in ids if ids.count(item) > 1})
        if duplicates:
            raise ValueError(f"question ids must be unique across both sections, repeated: {duplicates}")
        return value


@dataclass(frozen=True)
class PreferencePair:
    """One pair: ``first`` is the aligned (or plain) answer, ``second`` the misaligned (or styled)."""

    kind: PairKind
    question_id: str
    theme: str
    question: str
    pair_index: int
    first: str
    second: str


def _default_path() -> Path:
    return Path(str(resources.files("traitspace").joinpath("resources", "eval", PAIRS_FILE)))


def load_preference_pairs(path: str | Path | None = None, max_questions: int | None = None,
                          max_style_questions: int | None = None) -> list[PreferencePair]:
    """Every pair of the file (EM pairs, then style controls), or those of its first
    ``max_questions`` questions of each kind (style controls: ``max_style_questions`` when given);
    errors name the file and the key."""
    path = Path(path) if path is not None else _default_path()
    try:
        parsed = _PairsFile.model_validate(load_yaml(path))
    except ValidationError as error:
        problems = ["{}: {}".format(".".join(str(part) for part in item["loc"]) or "<top level>",
                                    "unknown key" if item["type"] == "extra_forbidden" else item["msg"])
                    for item in error.errors()]
        raise DataFileError(path, "; ".join(problems)) from None
    pairs = [PreferencePair("em", question.id, question.theme, question.question, index, pair.aligned, pair.misaligned)
             for question in parsed.questions[:max_questions] for index, pair in enumerate(question.pairs)]
    pairs += [PreferencePair("style", question.id, "style_control", question.question, index, pair.plain, pair.styled)
              for question in parsed.style_controls[:max_style_questions or max_questions]
              for index, pair in enumerate(question.pairs)]
    return pairs


def behaviour_pairs(settings) -> list[PreferencePair]:
    """The pairs a run measures at its checkpoints (``behavior.preference_pairs_file``, its first
    ``preference_questions`` EM questions and ``preference_style_questions`` style controls)."""
    return load_preference_pairs(settings.preference_pairs_file, settings.preference_questions,
                                 settings.preference_style_questions)


# -- measuring one checkpoint ----------------------------------------------------------------------
def score_pairs(loaded, pairs: Sequence[PreferencePair], batch_size: int = 16,
                share_prefixes: bool = True) -> pd.DataFrame:
    """Both answers of every pair scored under ``loaded``'s active adapter: one row per pair with
    ``logp_first``, ``logp_second`` (mean log-probability per answer token) and ``preference``
    (second minus first: misaligned minus aligned, or styled minus plain). ``share_prefixes``: each
    question's prompt runs once for all its answers (see ``answer_log_likelihoods``)."""
    chats = []
    for pair in pairs:
        for answer in (pair.first, pair.second):
            chats.append(loaded.chat.tokenize(loaded.chat.conversation(pair.question, assistant=answer)))
    scores = answer_log_likelihoods(loaded.model, chats, loaded.tokenizer.pad_token_id, batch_size=batch_size,
                                    share_prefixes=share_prefixes)
    table = pd.DataFrame({
        "kind": [pair.kind for pair in pairs],
        "question_id": [pair.question_id for pair in pairs],
        "theme": [pair.theme for pair in pairs],
        "pair_index": [pair.pair_index for pair in pairs],
        "logp_first": scores[0::2],
        "logp_second": scores[1::2],
    })
    table["preference"] = table["logp_second"] - table["logp_first"]
    return table


def measure_checkpoints(loaded, checkpoints: Sequence[Checkpoint], pairs: Sequence[PreferencePair],
                        parts: CheckpointParts, settings_fingerprint: str, batch_size: int = 16,
                        progress: bool = True, share_prefixes: bool = True) -> pd.DataFrame:
    """:func:`score_pairs` at every checkpoint (adapters swapped on one base model), cached per
    checkpoint in ``parts`` (the base model once); rows carry ``condition``, ``seed`` and ``step``."""
    from ..core.models import AdapterSwitcher

    switcher = AdapterSwitcher(loaded)
    tables = []
    iterator = checkpoints
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(checkpoints, desc="misalignment preference")
    for checkpoint in iterator:
        def measure(checkpoint=checkpoint) -> pd.DataFrame:
            with switcher.use(checkpoint.adapter_path):
                return score_pairs(loaded, pairs, batch_size=batch_size, share_prefixes=share_prefixes)

        fingerprint = versioned(combine_fingerprint(settings_fingerprint, checkpoint.identity()), "behavior.preference")
        tables.append(parts.measured(checkpoint, fingerprint, measure))
    return pd.concat(tables, ignore_index=True)


def pairs_fingerprint(pairs: Sequence[PreferencePair], **settings) -> str:
    """What a stored measurement depends on besides the checkpoint: the pairs' text and settings."""
    import json

    return combine_fingerprint(json.dumps([vars(pair) for pair in pairs], sort_keys=True),
                               json.dumps(settings, sort_keys=True, default=str))


# -- summaries ------------------------------------------------------------------------------------
def per_question(table: pd.DataFrame) -> pd.DataFrame:
    """Preference averaged within each question (the unit the intervals resample)."""
    keys = [column for column in ("condition", "seed", "step", "kind", "question_id", "theme") if column in table]
    return table.groupby(keys, as_index=False)["preference"].mean()


def preference_summary(table: pd.DataFrame, base_step: int = 0, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per trail (condition, seed), step and kind: the mean preference and its change from the base
    model, each with a 95% bootstrap interval over questions (the precision of one run's measure,
    not evidence of an effect of its data), and ``n_questions``.

    ``table`` holds :func:`score_pairs` rows with ``condition``, ``seed`` and ``step``; the base model
    is the rows at ``base_step`` of each trail (every trail starts at the shared base model), and the
    change is paired by question.
    """
    if "seed" not in table.columns:
        table = table.assign(seed=0)
    questions = per_question(table)
    rows = []
    for (condition, run_seed, kind), group in questions.groupby(["condition", "seed", "kind"]):
        base = group[group["step"] == base_step].set_index("question_id")["preference"]
        for step, at_step in group.groupby("step"):
            values = at_step.set_index("question_id")["preference"]
            mean, low, high = bootstrap_mean_ci(values.to_numpy(), n_boot=n_boot, seed=seed)
            row = {"condition": condition, "seed": int(run_seed), "step": int(step), "kind": kind, "n_questions": len(values),
                   "preference": mean, "preference_low": low, "preference_high": high}
            shared = values.index.intersection(base.index)
            if len(base) and len(shared):
                change = (values[shared] - base[shared]).to_numpy()
                change_mean, change_low, change_high = bootstrap_mean_ci(change, n_boot=n_boot, seed=seed)
                row.update(change_from_base=change_mean, change_low=change_low, change_high=change_high)
            rows.append(row)
    return pd.DataFrame(rows).sort_values(["kind", "condition", "seed", "step"], ignore_index=True)


def preference_seed_test(summary: pd.DataFrame, pairs: dict[str, str], kind: str = "em") -> pd.DataFrame:
    """The EM-minus-control change of the preference from the base model, tested across training seeds
    against the seed-pair null (:mod:`traitspace.core.seed_tests`), at every step both conditions have.

    One row per (em, control, step): differential (mean over EM seeds minus mean over control seeds of
    ``change_from_base``), its interval across seeds, p and whether it beats the null (BH over the
    steps of one pair). With one seed per condition p is NaN: nothing can be tested.
    """
    from ..core.seed_tests import seed_differential_test

    rows = []
    if summary.empty or "change_from_base" not in summary.columns:
        return pd.DataFrame()
    chosen = summary[(summary["kind"] == kind) & (summary["step"] > 0)]
    for em, control in pairs.items():
        grid = chosen[chosen["condition"].isin([em, control])].pivot_table(
            index=["condition", "seed"], columns="step", values="change_from_base")
        if em not in grid.index.get_level_values(0) or control not in grid.index.get_level_values(0):
            continue
        em_values, control_values = grid.loc[em], grid.loc[control]
        steps = [step for step in grid.columns if em_values[step].notna().any() and control_values[step].notna().any()]
        if not steps:
            continue
        tested = seed_differential_test(em_values[steps].to_numpy(), control_values[steps].to_numpy())
        for index, step in enumerate(steps):
            rows.append({"em": em, "control": control, "step": int(step), "kind": kind,
                         **{name: values[index] for name, values in tested.items()},
                         "n_em_seeds": int(em_values[step].notna().sum()),
                         "n_control_seeds": int(control_values[step].notna().sum())})
    return pd.DataFrame(rows)
