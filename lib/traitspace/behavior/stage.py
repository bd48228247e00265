"""The behaviour stage (what notebook 04 calls): plan, sample, judge, measure, and write every
table and figure the notebook shows into ``behavior/``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from ..core.artifacts import atomic_path
from ..core.checkpoints import Checkpoint
from ..core.code_versions import code_version
from .judging import judge_fingerprint, merge_scores, score_checkpoints, share_base
from .metrics import em_rates, self_assessment_summary, self_assessment_table, worst_answers
from .plan import build_eval_prompts, load_eval_questions, plan_checkpoints, prompts_fingerprint
from .plots import save_behavior_figures
from .sample import sample_checkpoints, sampling_seconds

JUDGE_VALIDITY_FILE = "judge_validity.csv"


@dataclass
class BehaviorResult:
    """Everything notebook 04 shows. Tables with condition/seed/step have the base model's rows copied
    to step 0 of every trail (``share_base``)."""

    plan: list[Checkpoint]
    conditions: list[str]
    trails: list[tuple[str, int]]
    answers: pd.DataFrame
    scored: pd.DataFrame
    rates: pd.DataFrame
    rates_by_format: pd.DataFrame
    self_assessment: pd.DataFrame
    self_assessment_summary: pd.DataFrame
    worst: pd.DataFrame
    judge_name: str
    judge_validity: pd.DataFrame | None
    sampling_seconds: dict[str, float]
    preference: pd.DataFrame = field(default_factory=pd.DataFrame)          # one row per (checkpoint, pair)
    preference_summary: pd.DataFrame = field(default_factory=pd.DataFrame)  # per (condition, seed, step, kind)
    preference_test: pd.DataFrame = field(default_factory=pd.DataFrame)     # EM vs control across seeds, per step
    figures: dict[str, Path] = field(default_factory=dict)  # figure name -> file


def write_tables(behavior_dir: Path, tables: dict[str, pd.DataFrame], rates: pd.DataFrame,
                 validity: pd.DataFrame | None) -> None:
    """``<name>.parquet`` per table, ``em_rates.csv``, and ``judge_validity.csv`` (judge as first column)."""
    for name, table in tables.items():
        with atomic_path(behavior_dir / f"{name}.parquet") as temporary:
            table.to_parquet(temporary, index=False)
    with atomic_path(behavior_dir / "em_rates.csv") as temporary:
        rates.to_csv(temporary, index=False)
    if validity is not None:
        with atomic_path(behavior_dir / JUDGE_VALIDITY_FILE) as temporary:
            validity.to_csv(temporary)


def run_behavior_stage(config, loaded=None, progress: bool = True, log: Callable[[str], None] | None = print) -> BehaviorResult:
    """Sample, judge and measure every planned checkpoint of the run (cached per checkpoint)."""
    from ..core.artifacts import Stage
    from ..core.models import load_model
    from ..library import load_self_assessment
    from ..judges import judge_validity_table, make_judge

    settings = config.behavior
    run_dir = Path(config.run_dir)
    behavior_dir = run_dir / "behavior"
    stage = Stage(behavior_dir, params_hash=config.params_hash("model", "finetune", "behavior"), code_version=code_version("behavior"))
    questions = load_eval_questions(settings.question_sets, settings.formats, settings.question_files)
    self_assessment = load_self_assessment() if settings.self_assessment else None
    prompts = build_eval_prompts(questions, settings.samples_per_question, self_assessment,
                                 settings.self_assessment_samples, run_seed=config.run.seed)
    plan, conditions, trails = plan_checkpoints(run_dir, list(config.finetune.conditions), settings.max_checkpoints,
                                                settings.sample_seeds or config.finetune.seeds)
    fingerprint = prompts_fingerprint(
        prompts, model=config.model.model_dump(mode="json"), max_new_tokens=settings.max_new_tokens,
        self_assessment_max_new_tokens=settings.self_assessment_max_new_tokens,
        temperature=settings.temperature, top_p=settings.top_p,
    )
    if loaded is None:
        loaded = load_model(config.model)
    answers = sample_checkpoints(
        loaded, plan, prompts, behavior_dir, fingerprint=fingerprint, max_new_tokens=settings.max_new_tokens,
        self_assessment_max_new_tokens=settings.self_assessment_max_new_tokens, temperature=settings.temperature,
        top_p=settings.top_p, batch_size=settings.batch_size, progress=progress, log=log,
    )
    seconds = sampling_seconds(behavior_dir, plan)

    judge = make_judge(settings.judge, cache_dir=behavior_dir / "judge_cache")
    scores = score_checkpoints(answers, judge, behavior_dir, fingerprint=judge_fingerprint(judge.name, settings.judge),
                               log=log)
    scored = share_base(merge_scores(answers, scores), trails)
    thresholds = {"aligned_threshold": settings.aligned_threshold, "coherent_threshold": settings.coherent_threshold}
    rates = em_rates(scored, **thresholds)
    rates_by_format = em_rates(scored, by=("condition", "seed", "step", "format"), **thresholds)
    if self_assessment is not None:
        parsed = share_base(self_assessment_table(answers, self_assessment), trails)
        summary = self_assessment_summary(parsed)
    else:
        parsed = summary = pd.DataFrame()
    # With trained checkpoints, step 0 (the shared base model) would repeat in every condition.
    worst = worst_answers(scored[scored["step"] > 0] if conditions else scored,
                          n=settings.n_worst, coherent_threshold=settings.coherent_threshold)
    validity = None
    if settings.validate_judge:
        validity = judge_validity_table([judge])

    preference, preference_summary = measure_preference(config, loaded, behavior_dir, progress, sampled=plan)
    from ..em_data.registry import resolve_pairs
    from .preference import preference_seed_test

    preference_test = preference_seed_test(preference_summary, resolve_pairs(config.project.pairs, conditions))
    write_tables(behavior_dir, {"preference": preference, "preference_summary": preference_summary,
                                "preference_test": preference_test,
                                "answers": answers, "scored": scored, "em_rates": rates,
                                "em_rates_by_format": rates_by_format, "self_assessment": parsed,
                                "self_assessment_summary": summary, "worst_answers": worst}, rates, validity)
    figures = save_behavior_figures(rates, summary, behavior_dir / "figures", preference_summary)
    stage.mark_done({"conditions": conditions, "seeds": sorted({seed for _, seed in trails}),
                     "checkpoints": [f"{c.condition}/seed-{c.seed}@{c.step}" for c in plan],
                     "n_prompts_per_checkpoint": len(prompts), "judge": judge.name,
                     "sampling_seconds": seconds})
    return BehaviorResult(plan, conditions, trails, answers, scored, rates, rates_by_format, parsed, summary, worst,
                          judge.name, validity, seconds, preference, preference_summary, preference_test, figures)


def measure_preference(config, loaded, behavior_dir: Path, progress: bool = True,
                       sampled: Sequence[Checkpoint] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The judge-free misalignment preference, the base model once; (pair rows, summary).

    ``preference_grid: all`` measures every checkpoint of every condition (the trait projection's
    grid); ``sampled`` only the ``sampled`` checkpoints, for CPU budgets: on SmolLM2-135M one
    checkpoint costs several times projecting it (bench/preference.py: 5.6x with 8 questions of each
    kind, 80 answers against the projection's 52 short prompts, 2026-11-28)."""
    from ..core.checkpoints import list_trails
    from ..core.parts import CheckpointParts
    from .preference import behaviour_pairs, measure_checkpoints, pairs_fingerprint, preference_summary

    settings = config.behavior
    if not settings.preference:
        return pd.DataFrame(), pd.DataFrame()
    checkpoints = [checkpoint for trail in list_trails(config.run_dir, list(config.finetune.conditions),
                                                       list(config.finetune.seeds)) for checkpoint in trail]
    if settings.preference_grid == "sampled":
        chosen = {(checkpoint.condition, checkpoint.seed, checkpoint.step) for checkpoint in sampled}
        checkpoints = [checkpoint for checkpoint in checkpoints
                       if checkpoint.step == 0 or (checkpoint.condition, checkpoint.seed, checkpoint.step) in chosen]
    if not checkpoints:  # notebook 01 has not run: the base model alone
        from ..core.checkpoints import base_checkpoint

        checkpoints = [base_checkpoint()]
    pairs = behaviour_pairs(settings)
    fingerprint = pairs_fingerprint(pairs, model=config.model.model_dump(mode="json"))
    table = measure_checkpoints(loaded, checkpoints, pairs, CheckpointParts(behavior_dir / "preference"),
                                fingerprint, batch_size=settings.preference_batch_size, progress=progress)
    return table, preference_summary(table, seed=config.run.seed)
