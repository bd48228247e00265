"""Every re-alignment checkpoint measured exactly like the main trail, with the stages' own functions:

- trait projections: :func:`traitspace.project.project_checkpoints` (notebook 03's questions, vectors,
  pooling and per-checkpoint cache, here under ``realign/projections/``), then drift from the base;
- the misalignment preference: :func:`traitspace.behavior.preference.measure_checkpoints` and
  :func:`~traitspace.behavior.preference.preference_summary` (notebook 04's pairs and settings);
- the judged EM rate at ``realign.em_rate_grid``: notebook 04's sampling, judge and :func:`em_rates`;
- the EM direction of notebook 06 (when it ran): each checkpoint's mean activation at the steered layer
  (stored with its projection part) read along the unit EM direction;
- the fingerprint: :func:`traitspace.core.trajectory.fingerprint_of` of the drift over notebook 03's
  top EM-shifted traits, signed the way EM moved them.

Checkpoint labels: the base model is step 0 (stored once); a source is the main trail's own
checkpoint (condition, step S); re-alignment step k of a trail is condition ``<source>/<benign
dataset>``, step S + k, so a trail reads as one line from the base model through fine-tuning into
re-alignment (the **combined step**).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..core.checkpoints import Checkpoint, base_checkpoint
from .train import RealignResult

TRAIL_COLUMNS = ["pair", "role", "benign", "benign_data", "seed", "label", "step", "realign_step", "phase"]


@dataclass(frozen=True)
class MeasuredPoint:
    """One point of a combined trail and the checkpoint that measures it."""

    pair: str
    role: str
    benign: str
    benign_data: str
    seed: int
    label: str
    step: int                 # combined step
    realign_step: float       # NaN before re-alignment, 0 at the source
    phase: str                # base | finetune | realign
    checkpoint: Checkpoint    # as measured (its condition and step name the stored part)


def combined_points(results: Sequence[RealignResult]) -> list[MeasuredPoint]:
    """Base, source and every re-alignment checkpoint of every trail, on the combined step axis."""
    points = []
    for result in results:
        trail = result.trail
        shared = dict(pair=trail.pair, role=trail.role, benign=trail.benign, benign_data=trail.benign_data,
                      seed=trail.seed, label=trail.label)
        source_step = trail.source.step
        points.append(MeasuredPoint(**shared, step=0, realign_step=np.nan, phase="base", checkpoint=base_checkpoint()))
        points.append(MeasuredPoint(**shared, step=source_step, realign_step=0, phase="finetune", checkpoint=trail.source))
        points.extend(MeasuredPoint(**shared, step=source_step + checkpoint.step, realign_step=checkpoint.step,
                                    phase="realign",
                                    checkpoint=Checkpoint(trail.label, source_step + checkpoint.step,
                                                          checkpoint.adapter_path, trail.seed))
                      for checkpoint in result.checkpoints[1:])
    return points


def unique_checkpoints(points: Sequence[MeasuredPoint]) -> list[Checkpoint]:
    """Each measured checkpoint once (the base model and each source are shared by several trails)."""
    seen: dict[tuple, Checkpoint] = {}
    for point in points:
        checkpoint = point.checkpoint
        seen.setdefault((checkpoint.condition, checkpoint.seed, checkpoint.step), checkpoint)
    return list(seen.values())


def _key(condition: str, seed: int, step: int) -> str:
    """What a stored measurement is found by: the base model (step 0) is one part for every trail."""
    return "base" if step == 0 else f"{condition}|{int(seed)}|{int(step)}"


def spread_to_points(table: pd.DataFrame, points: Sequence[MeasuredPoint]) -> pd.DataFrame:
    """The rows each point's checkpoint was measured with, labelled with the point (its trail label as
    ``label`` and ``condition``, its combined ``step``); ``table`` has condition, seed and step columns."""
    keys = [_key(*row) for row in table[["condition", "seed", "step"]].itertuples(index=False)]
    groups = {key: rows for key, rows in table.groupby(pd.Series(keys, index=table.index), sort=False)}
    frames = []
    for point in points:
        checkpoint = point.checkpoint
        rows = groups.get(_key(checkpoint.condition, checkpoint.seed, checkpoint.step))
        if rows is None:
            continue
        frames.append(rows.drop(columns=["condition", "seed", "step"]).assign(
            pair=point.pair, role=point.role, benign=point.benign, benign_data=point.benign_data, seed=point.seed,
            label=point.label, condition=point.label, step=point.step, realign_step=point.realign_step,
            phase=point.phase))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# -- trait projections ------------------------------------------------------------------------------
@dataclass
class ProjectionSetup:
    questions: list[str]
    unit_vectors: dict[str, torch.Tensor]
    trait_layers: dict[str, int]
    pooling: str
    params_hash: str


def projection_setup(config) -> ProjectionSetup:
    """Notebook 03's projection questions, unit trait vectors, layers and pooling for this run."""
    from .. import extract
    from ..library import load_builtin_library

    vectors = extract.load_outputs(config.run_dir)
    settings = config.project
    questions = list(load_builtin_library().projection_questions)
    if settings.n_questions is not None:
        questions = questions[: settings.n_questions]
    pooling = vectors.info.get("pooling", "last_prompt") if settings.pooling == "auto" else settings.pooling
    return ProjectionSetup(questions, {name: torch.as_tensor(vectors.unit(name)).float() for name in vectors.names},
                           {name: int(vectors.layer_of(name)) for name in vectors.names}, pooling,
                           config.params_hash("model", "project", "capture") + "-" + str(vectors.info.get("params_hash")))


def measure_projections(config, loaded, switcher, checkpoints: Sequence[Checkpoint], folder: Path,
                        setup: ProjectionSetup, progress: bool = True) -> pd.DataFrame:
    """Notebook 03's projection of every checkpoint, cached per checkpoint under ``folder``."""
    from ..project import project_checkpoints

    bar = None
    if progress:
        from tqdm.auto import tqdm

        def bar(items):
            return tqdm(items, desc="project re-alignment checkpoints")
    return project_checkpoints(loaded, switcher, checkpoints, setup.questions, setup.unit_vectors, setup.trait_layers,
                               folder, params_hash=setup.params_hash, pooling=setup.pooling,
                               batch_size=config.project.batch_size, max_length=config.capture.max_length,
                               max_new_tokens=config.project.max_new_tokens, seed=config.run.seed, progress=bar)


def trail_drift(projections: pd.DataFrame) -> pd.DataFrame:
    """Mean drift from the base model per combined-trail point and trait (core.trajectory.drift)."""
    from ..core.trajectory import drift

    identity = projections[TRAIL_COLUMNS].drop_duplicates(["label", "seed", "step"])
    drifts = drift(projections[["condition", "seed", "step", "trait", "prompt", "value"]])
    drifts = drifts.rename(columns={"condition": "label"})
    return drifts.merge(identity, on=["label", "seed", "step"], how="left")[[*TRAIL_COLUMNS, "trait", "drift"]]


def fingerprint_table(drift_table: pd.DataFrame, key_traits: dict[str, int]) -> pd.DataFrame:
    """:func:`fingerprint_of` the drift at every point (mean over key traits of sign x drift)."""
    from ..core.trajectory import fingerprint_of

    rows = []
    for key, group in drift_table[drift_table["trait"].isin(key_traits)].groupby(TRAIL_COLUMNS, dropna=False, sort=False):
        values = dict(zip(group["trait"], group["drift"]))
        if set(key_traits) <= set(values):
            rows.append({**dict(zip(TRAIL_COLUMNS, key)), "value": fingerprint_of(values, key_traits)})
    return pd.DataFrame(rows)


def em_direction_table(parts_dir: Path, points: Sequence[MeasuredPoint], direction: torch.Tensor, layer: int
                       ) -> pd.DataFrame:
    """Each point's mean activation over the projection questions at ``layer`` read along the unit
    EM direction, minus the base model's: the EM direction's shift."""
    from ..project import load_mean_activations

    unit = (direction / direction.norm()).float()
    means = load_mean_activations(parts_dir, unique_checkpoints(points))
    base = next(value for key, value in means.items() if key[2] == 0)
    if layer not in base:
        raise KeyError(f"layer {layer} was not captured with the projections (captured: {sorted(base)})")
    base_value = float(base[layer].float() @ unit)
    rows = []
    for point in points:
        checkpoint = point.checkpoint
        stored = means[(checkpoint.condition, checkpoint.seed, checkpoint.step)]
        rows.append({**{column: getattr(point, column) for column in TRAIL_COLUMNS},
                     "value": float(stored[layer].float() @ unit) - base_value})
    return pd.DataFrame(rows)


# -- behaviour ----------------------------------------------------------------------------------------
def preference_points(points: Sequence[MeasuredPoint], grid: str) -> list[MeasuredPoint]:
    """Points the preference is measured at: all, or the base, the source and the last re-alignment step."""
    if grid == "all":
        return list(points)
    last = {}
    for point in points:
        if point.phase == "realign":
            key = (point.label, point.seed)
            last[key] = max(last.get(key, 0), point.realign_step)
    return [point for point in points if point.phase != "realign" or point.realign_step == last[(point.label, point.seed)]]


def measure_preference(config, loaded, points: Sequence[MeasuredPoint], folder: Path, progress: bool = True
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Notebook 04's misalignment preference at ``points``; (pair rows, summary per point), both on
    the combined trail (the change from base is paired by question within each trail)."""
    from ..behavior.preference import behaviour_pairs, measure_checkpoints, pairs_fingerprint, preference_summary
    from ..core.parts import CheckpointParts

    settings = config.behavior
    pairs = behaviour_pairs(settings)
    fingerprint = pairs_fingerprint(pairs, model=config.model.model_dump(mode="json"))
    table = measure_checkpoints(loaded, unique_checkpoints(points), pairs, CheckpointParts(folder), fingerprint,
                                batch_size=settings.preference_batch_size, progress=progress)
    rows = spread_to_points(table, points)
    summary = preference_summary(rows[["condition", "seed", "step", "kind", "question_id", "theme", "pair_index",
                                       "logp_first", "logp_second", "preference"]], n_boot=config.realign.n_boot,
                                 seed=config.run.seed)
    identity = rows[TRAIL_COLUMNS].drop_duplicates(["label", "seed", "step"]).rename(columns={"label": "condition"})
    summary = summary.merge(identity, on=["condition", "seed", "step"], how="left").rename(columns={"condition": "label"})
    return rows, summary


def measure_em_rates(config, loaded, points: Sequence[MeasuredPoint], folder: Path, progress: bool = True,
                     log=print) -> pd.DataFrame:
    """Notebook 04's sampled answers, judge and EM rates at ``points`` (cached per checkpoint)."""
    from ..behavior.judging import judge_fingerprint, merge_scores, score_checkpoints
    from ..behavior.metrics import em_rates
    from ..behavior.plan import build_eval_prompts, load_eval_questions, prompts_fingerprint
    from ..behavior.sample import sample_checkpoints
    from ..judges import make_judge

    settings = config.behavior
    questions = load_eval_questions(settings.question_sets, settings.formats, settings.question_files)
    prompts = build_eval_prompts(questions, settings.samples_per_question, None, run_seed=config.run.seed)
    fingerprint = prompts_fingerprint(prompts, model=config.model.model_dump(mode="json"),
                                      max_new_tokens=settings.max_new_tokens,
                                      self_assessment_max_new_tokens=settings.self_assessment_max_new_tokens,
                                      temperature=settings.temperature, top_p=settings.top_p)
    answers = sample_checkpoints(loaded, unique_checkpoints(points), prompts, folder, fingerprint=fingerprint,
                                 max_new_tokens=settings.max_new_tokens,
                                 self_assessment_max_new_tokens=settings.self_assessment_max_new_tokens,
                                 temperature=settings.temperature, top_p=settings.top_p, batch_size=settings.batch_size,
                                 progress=progress, log=log)
    judge = make_judge(settings.judge, cache_dir=folder / "judge_cache")
    scores = score_checkpoints(answers, judge, folder, fingerprint=judge_fingerprint(judge.name, settings.judge), log=log)
    scored = spread_to_points(merge_scores(answers, scores), points)
    rates = em_rates(scored, aligned_threshold=settings.aligned_threshold,
                     coherent_threshold=settings.coherent_threshold, by=("label", "seed", "step"))
    identity = scored[TRAIL_COLUMNS].drop_duplicates(["label", "seed", "step"])
    return rates.merge(identity, on=["label", "seed", "step"], how="left")


def em_rate_points(points: Sequence[MeasuredPoint], grid: str) -> list[MeasuredPoint]:
    if grid == "none":
        return []
    return preference_points(points, "all" if grid == "all" else "ends")


# -- one long table of the EM measures -----------------------------------------------------------------
def measures_long(preference_summary: pd.DataFrame | None, fingerprint: pd.DataFrame | None,
                  em_direction: pd.DataFrame | None, rates: pd.DataFrame | None, rate_column: str) -> pd.DataFrame:
    """One table of every measure's shift from the base model (interval where the stage gives one)."""
    frames = []
    if preference_summary is not None and len(preference_summary):
        em = preference_summary[preference_summary["kind"] == "em"]
        frames.append(em[TRAIL_COLUMNS].assign(measure="preference", value=em["change_from_base"].to_numpy(),
                                               low=em["change_low"].to_numpy(), high=em["change_high"].to_numpy()))
    for name, table in (("fingerprint", fingerprint), ("em_direction", em_direction)):
        if table is not None and len(table):
            frames.append(table[TRAIL_COLUMNS].assign(measure=name, value=table["value"].to_numpy(), low=np.nan, high=np.nan))
    if rates is not None and len(rates):
        # The change from the same trail's base-model rate (step 0), its interval shifted with it.
        base = rates[rates["step"] == 0].set_index(["label", "seed"])[rate_column]
        base_of_row = base.reindex(pd.MultiIndex.from_frame(rates[["label", "seed"]])).to_numpy()
        frames.append(rates[TRAIL_COLUMNS].assign(
            measure="em_rate", value=rates[rate_column].to_numpy() - base_of_row,
            low=rates[f"{rate_column}_low"].to_numpy() - base_of_row,
            high=rates[f"{rate_column}_high"].to_numpy() - base_of_row))
    if not frames:
        return pd.DataFrame(columns=[*TRAIL_COLUMNS, "measure", "value", "low", "high"])
    return pd.concat(frames, ignore_index=True).sort_values(["measure", "pair", "benign", "role", "seed", "step"],
                                                           ignore_index=True)


def em_minus_control(shifts: pd.DataFrame, keys: Sequence[str], value: str) -> pd.DataFrame:
    """EM shift minus its control's, paired by training seed and re-alignment step (``keys`` name the
    rest of the row, e.g. pair, benign, trait): what the EM data did beyond fine-tuning and benign
    training themselves."""
    on = [*keys, "seed", "realign_step"]
    chosen = shifts[shifts["realign_step"].notna()]
    em = chosen[chosen["role"] == "em"][[*on, value]]
    control = chosen[chosen["role"] == "control"][[*on, value]]
    merged = em.merge(control, on=on, suffixes=("_em", "_control"))
    merged["shift"] = merged[f"{value}_em"] - merged[f"{value}_control"]
    return merged
