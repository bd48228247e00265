"""Stage 04 (notebook 04_behavior_eval): how misaligned a model's answers are at each checkpoint.

Three steps, each cached per checkpoint so an interrupted run resumes where it stopped:

1. **Sample** (:mod:`.sample`): every evaluation question (built-in sets and EM-format YAML files,
   :mod:`.plan`) in each format, N times, plus the self-assessment items, at temperature 1 / top_p 1.
   at the base model and the planned checkpoints of every trail (condition x training seed). The
   base model (step 0) is the same for every trail: it is sampled once, as condition ``"base"``,
   and shared.
2. **Judge** (:mod:`.judging`): a :class:`traitspace.judges.Judge` scores each free-form answer
   0-100 for alignment and coherence.
3. **Measure** (:mod:`.metrics`, pure): EM rates with Wilson intervals under both conventions,
   coherence rate, self-assessment, the most misaligned answers.

Output folder ``outputs/<run>/behavior/``:

- ``answers/<condition>/seed-<k>/step-<N>.{parquet,json}`` and ``scores/...`` likewise:
  the per-checkpoint parts (:class:`traitspace.core.parts.CheckpointParts`);
- ``answers.parquet``, ``scored.parquet``, ``em_rates.parquet`` / ``em_rates.csv``,
  ``em_rates_by_format.parquet``, ``self_assessment.parquet``, ``self_assessment_summary.parquet``,
  ``worst_answers.parquet``: the tables notebook 04 shows (step 0 shared to every trail; the
  ``seed`` column is the training seed, ``sample_seed`` the sampling seed of an answer);
- ``preference/`` parts, ``preference.parquet``, ``preference_summary.parquet`` (per trail) and
  ``preference_test.parquet`` (EM vs control across training seeds against the seed-pair null);
- ``judge_validity.csv`` (when ``behavior.validate_judge``), ``figures/*.png`` (:mod:`.plots`),
  ``judge_cache/``, ``manifest.json``.

Later stages read these only through :func:`load_outputs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..core.checkpoints import BASE_CONDITION, Checkpoint
from .judging import SCORE_COLUMNS, merge_scores, read_checkpoint_tables, score_answers, score_checkpoints, share_base
from .metrics import (
    em_rates,
    latest_examples,
    latest_rates_by_format,
    self_assessment_summary,
    self_assessment_table,
    worst_answers,
)
from .plan import (
    EvalPrompt,
    build_eval_prompts,
    load_eval_questions,
    plan_checkpoints,
    prompts_fingerprint,
    select_checkpoints,
)
from .sample import ANSWER_COLUMNS, sample_checkpoints, sample_one_checkpoint
from .stage import JUDGE_VALIDITY_FILE, BehaviorResult, run_behavior_stage

__all__ = [
    "BASE_CONDITION",
    "ANSWER_COLUMNS",
    "SCORE_COLUMNS",
    "Checkpoint",
    "EvalPrompt",
    "BehaviorOutputs",
    "BehaviorResult",
    "build_eval_prompts",
    "em_rates",
    "latest_examples",
    "latest_rates_by_format",
    "load_eval_questions",
    "load_outputs",
    "merge_scores",
    "plan_checkpoints",
    "prompts_fingerprint",
    "read_checkpoint_tables",
    "run_behavior_stage",
    "sample_one_checkpoint",
    "score_answers",
    "sample_checkpoints",
    "score_checkpoints",
    "select_checkpoints",
    "self_assessment_table",
    "self_assessment_summary",
    "share_base",
    "worst_answers",
]

OUTPUT_DIRNAME = "behavior"


@dataclass
class BehaviorOutputs:
    """What stage 04 left in a run folder."""

    answers: pd.DataFrame                # every answers part (base model as condition "base")
    scores: pd.DataFrame                 # every scores part
    rates: pd.DataFrame                  # EM rates per (condition, seed, step), step 0 shared to every trail
    judge_validity: pd.DataFrame | None  # judge_validity.csv (None when not measured)
    figures: list[Path]
    preference: pd.DataFrame = field(default_factory=pd.DataFrame)          # pair rows at every checkpoint
    preference_summary: pd.DataFrame = field(default_factory=pd.DataFrame)  # per (condition, seed, step, kind)
    preference_test: pd.DataFrame = field(default_factory=pd.DataFrame)     # EM vs control across seeds, per step


def load_outputs(run_dir: str | Path, behavior_section, conditions: Sequence[str]) -> BehaviorOutputs:
    """Stage 04's outputs of ``run_dir``. ``rates`` are recomputed from the answer and score parts
    with ``behavior_section``'s thresholds, the base model's rows shared to every trail (condition,
    seed) of ``conditions`` that has answers."""
    from ..core.integrity import require_intact

    folder = Path(run_dir) / OUTPUT_DIRNAME
    require_intact(folder, "04")  # a damaged file is named with its fix, not met as a parquet error
    answers = read_checkpoint_tables(folder / "answers")
    scores = read_checkpoint_tables(folder / "scores")
    if answers.empty or scores.empty:
        raise FileNotFoundError(f"no behaviour answers or scores under {folder}: run notebook 04 first")
    trails = [(condition, int(seed)) for condition, seed
              in answers[["condition", "seed"]].drop_duplicates().itertuples(index=False) if condition in set(conditions)]
    scored = share_base(merge_scores(answers, scores), sorted(trails))
    rates = em_rates(scored, aligned_threshold=behavior_section.aligned_threshold,
                     coherent_threshold=behavior_section.coherent_threshold)
    validity_path = folder / JUDGE_VALIDITY_FILE
    validity = pd.read_csv(validity_path) if validity_path.is_file() else None
    tables = {name: pd.read_parquet(folder / f"{name}.parquet") if (folder / f"{name}.parquet").is_file() else pd.DataFrame()
              for name in ("preference", "preference_summary", "preference_test")}
    return BehaviorOutputs(answers, scores, rates, validity, sorted((folder / "figures").glob("*.png")),
                           tables["preference"], tables["preference_summary"], tables["preference_test"])
