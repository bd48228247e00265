"""Run stage 06: read the EM direction, compare it with the traits, sweep steering, ablate.

Inputs come only through the earlier stages' loaders: trait vectors (02), the EM/control pairs and
their top shifts (03), the checkpoint trails (01) and the judged answers (04, optional: without them
the EM direction is read from the judge-free answer pairs). One checkpoint per condition is used: the
final checkpoint of training seed ``steer.seed``. Each measured setting is stored as it is made
(:mod:`.results`), so an interrupted run resumes; the stage's manifest marks the whole as done.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..core.artifacts import Stage, atomic_path
from ..core.checkpoints import Checkpoint
from ..core.code_versions import code_version, versioned
from ..core.hooks import resolve_layers
from ..core.parts import combine_fingerprint
from .ablation import run_activation_ablation, run_weight_ablation
from .compare import cosines_against_null, reading_table, trait_basis_reading
from .em_direction import EmDirection, choose_contrast, read_em_direction, save_em_directions
from .measure import MeasureSetup
from .plots import save_steering_figures
from .results import ResultStore
from .scale import extraction_conversations, residual_norms
from .sweep import SweepDirection, random_direction, run_sweep

OUTPUT_DIRNAME = "steering"
EM_DIRECTIONS_FILE = "em_directions.safetensors"
TABLES = ("norms", "top_traits", "em_direction_cosines", "em_direction_reading", "direction_agreement", "sweep",
          "ablation", "ablation_matrix")
# Settings that change what a stored measurement means (the sweep grid and the stop rule do not).
_MEASURE_SETTINGS = {"preference_questions", "samples_per_question", "formats", "max_new_tokens", "positions"}


def choose_pair(pairs: dict[str, str], wanted: str | None) -> tuple[str, str]:
    """(em, control): the pair of ``wanted`` or the first pair of notebook 03."""
    if not pairs:
        raise ValueError("notebook 03 found no EM/control pair; steering needs one (finetune.conditions, project.pairs)")
    em = wanted if wanted is not None else next(iter(pairs))
    if em not in pairs:
        raise ValueError(f"steer.pair: {em!r} is not an EM condition of notebook 03's pairs {pairs}")
    return em, pairs[em]


def final_checkpoint(trails: dict, condition: str, seed: int) -> Checkpoint:
    trail = trails.get((condition, seed))
    if not trail or trail[-1].adapter_path is None:
        seeds = sorted(s for c, s in trails if c == condition)
        raise ValueError(f"no trained checkpoint of {condition!r} for training seed {seed} (seeds present: {seeds}); "
                         "set steer.seed")
    return trail[-1]


def top_traits(top_shifts: pd.DataFrame, traits, n: int) -> pd.DataFrame:
    """The ``n`` traits with the largest |EM-minus-control drift| and the sign EM moved them."""
    rows = top_shifts[top_shifts["trait"].isin(traits.names)].head(n)
    return pd.DataFrame({"trait": rows["trait"].to_numpy(), "differential": rows["differential"].to_numpy(),
                         "sign": np.where(rows["differential"].to_numpy() >= 0, 1, -1),
                         "layer": [traits.layer_of(name) for name in rows["trait"]]})


def choose_layer(setting, traits, names, num_layers: int) -> int:
    """``steer.layer``: an index, or the layer extraction chose most often among ``names`` (all traits when empty)."""
    if setting != "traits":
        return resolve_layers([int(setting)], num_layers)[0]
    layers = Counter(traits.layer_of(name) for name in (list(names) or traits.trait_names))
    return layers.most_common(1)[0][0]


def _judged_answers(config, run_dir: Path, conditions, log) -> pd.DataFrame | None:
    from ..behavior import load_outputs as load_behavior
    from ..behavior.judging import merge_scores

    try:
        behaviour = load_behavior(run_dir, config.behavior, conditions)
    except FileNotFoundError as error:
        if log:
            log(f"no judged answers ({error}); the EM direction is read from the answer pairs")
        return None
    return merge_scores(behaviour.answers, behaviour.scores)


def _setup(config, folder: Path, pairs) -> MeasureSetup:
    from ..behavior.plan import build_eval_prompts, load_eval_questions

    settings, behavior = config.steer, config.behavior
    prompts, judge = [], None
    if settings.samples_per_question > 0:
        from ..judges import make_judge

        questions = load_eval_questions(behavior.question_sets, settings.formats, behavior.question_files)
        prompts = build_eval_prompts(questions, settings.samples_per_question, None, run_seed=config.run.seed)
        judge = make_judge(behavior.judge, cache_dir=folder / "judge_cache")
    return MeasureSetup(pairs, prompts, judge, settings.max_new_tokens, behavior.temperature, behavior.top_p,
                        settings.batch_size, behavior.aligned_threshold, behavior.coherent_threshold)


def _em_pairs(config):
    """(pairs the preference is measured on, held-out pairs the EM direction may be read from)."""
    from ..behavior.preference import load_preference_pairs

    every = [pair for pair in load_preference_pairs(config.behavior.preference_pairs_file) if pair.kind == "em"]
    measured_ids = list(dict.fromkeys(pair.question_id for pair in every))[: config.steer.preference_questions]
    measured = [pair for pair in every if pair.question_id in set(measured_ids)]
    held_out = [pair for pair in every if pair.question_id not in set(measured_ids)]
    return measured, held_out or measured


def _direction_tables(directions: dict[str, EmDirection], em: str, traits, layer: int, settings) -> dict[str, pd.DataFrame]:
    vectors = {name: traits.vector(name, layer).numpy() for name in traits.names}
    units = {name: traits.unit(name, layer).numpy() for name in traits.names}
    cosines, readings = [], []
    for variant in ("contrast", "model_diff"):
        vector = directions[em].vector(layer, variant).numpy()
        cosines.append(cosines_against_null(vector, vectors, settings.n_random, settings.random_seed).assign(variant=variant))
        readings.append(reading_table(trait_basis_reading(vector, units, layer)).assign(variant=variant))
    # Does the direction agree with its model-diff variant, and with the one read on the control?
    em_direction, agreement = directions[em], []
    others = {f"{em} model_diff": em_direction.model_diff,
              **{f"{name} contrast": other.contrast for name, other in directions.items() if name != em}}
    for at in range(em_direction.contrast.shape[0]):
        for label, matrix in others.items():
            agreement.append({"layer": at, "compared_with": label,
                              "cosine": float(em_direction.unit(at) @ (matrix[at] / matrix[at].norm()))})
    return {"em_direction_cosines": pd.concat(cosines, ignore_index=True),
            "em_direction_reading": pd.concat(readings, ignore_index=True),
            "direction_agreement": pd.DataFrame(agreement)}


def run_steering_stage(config, loaded=None, log: Callable[[str], None] | None = print):
    """Everything notebook 06 shows (see the package docstring); returns :class:`SteeringOutputs`."""
    from .. import extract, finetune, project
    from ..core.models import AdapterSwitcher, load_model
    from . import load_outputs

    settings, run_dir = config.steer, Path(config.run_dir)
    folder = run_dir / OUTPUT_DIRNAME
    stage = Stage(folder, params_hash=config.params_hash("model", "finetune", "extract", "project", "behavior", "steer"),
                  code_version=code_version("steer"))
    if stage.is_done():
        return load_outputs(run_dir)
    traits = extract.load_outputs(run_dir)
    projection = project.load_outputs(run_dir)
    em, control = choose_pair(projection.pairs, settings.pair)
    trails = finetune.load_outputs(run_dir, [em, control]).trails
    checkpoints = {condition: final_checkpoint(trails, condition, settings.seed) for condition in (em, control)}
    base = trails[(em, settings.seed)][0]
    top = top_traits(projection.top_shifts[(em, control)], traits, settings.n_top_traits)
    scored = _judged_answers(config, run_dir, [em, control], log)
    loaded = loaded if loaded is not None else load_model(config.model)
    switcher = AdapterSwitcher(loaded, keep_loaded=4)
    layer = choose_layer(settings.layer, traits, top["trait"], loaded.num_layers)

    with switcher.use(None):
        norms = residual_norms(loaded, extraction_conversations(config, loaded, settings.norm_prompts, settings.random_seed),
                               range(loaded.num_layers), settings.batch_size)
    measured_pairs, direction_pairs = _em_pairs(config)
    directions = {}
    for condition, checkpoint in checkpoints.items():
        contrast = choose_contrast(
            scored, checkpoint, direction_pairs, loaded.chat, source=settings.em_direction_source,
            min_judged_answers=settings.min_judged_answers, aligned_threshold=config.behavior.aligned_threshold,
            coherent_threshold=config.behavior.coherent_threshold, aligned_floor=settings.aligned_floor,
            seed=settings.random_seed)
        directions[condition] = read_em_direction(loaded, switcher, checkpoint, contrast, settings.batch_size)
        if log:
            log(f"EM direction of {condition} (seed {checkpoint.seed}, step {checkpoint.step}): {contrast.note}")
    folder.mkdir(parents=True, exist_ok=True)
    save_em_directions(list(directions.values()), folder / EM_DIRECTIONS_FILE)
    tables = _direction_tables(directions, em, traits, layer, settings)

    setup = _setup(config, folder, measured_pairs)
    store = ResultStore(folder / "results")
    fingerprint = versioned(combine_fingerprint(config.params_hash("model", "behavior"),
                                                settings.model_dump_json(include=_MEASURE_SETTINGS)), "steer.measure")
    hidden = loaded.hidden_size
    sweep_directions = [SweepDirection(row.trait, "trait", row.sign * traits.unit(row.trait, layer)) for row in top.itertuples()]
    sweep_directions += [SweepDirection("em_direction", "em_direction", directions[em].unit(layer)),
                         SweepDirection("random", "random", random_direction(hidden, settings.random_seed))]
    with switcher.use(None):
        sweep = run_sweep(loaded, base, sweep_directions, layer, norms[layer], settings.alphas, setup, store,
                          settings_fingerprint=fingerprint, positions=settings.positions,
                          min_coherence=settings.min_coherence, coherence_reference=settings.coherence_reference, log=log)
    tables["sweep"] = sweep

    ablation = matrix = pd.DataFrame()
    if settings.ablation:
        layers = list(range(loaded.num_layers)) if settings.ablate_layers == "all" else [layer]
        random_per_layer = {at: random_direction(hidden, settings.random_seed + 1 + at) for at in layers}
        by_activation = {"em_direction": directions[em].per_layer(layers),
                         **{name: {at: traits.vector(name, at) for at in layers} for name in top["trait"]},
                         "random": random_per_layer}
        ablation = run_activation_ablation(loaded, switcher, checkpoints[em], checkpoints[control], by_activation, setup,
                                           store, settings_fingerprint=fingerprint, log=log)
        by_weights = {**{condition: direction.per_layer(layers) for condition, direction in directions.items()},
                      "random": random_per_layer}
        matrix = run_weight_ablation(loaded, switcher, checkpoints, by_weights, dataclasses.replace(setup, judge=None),
                                     store, folder / "adapters", settings_fingerprint=fingerprint,
                                     keep_norm=settings.keep_norm, log=log)
    tables.update({"ablation": ablation, "ablation_matrix": matrix, "top_traits": top,
                   "norms": pd.DataFrame({"layer": list(norms), "median_token_norm": list(norms.values())})})
    for name in TABLES:
        with atomic_path(folder / f"{name}.csv") as temporary:
            tables[name].to_csv(temporary, index=False)
    save_steering_figures(folder / "figures", sweep, tables["em_direction_cosines"].query("variant == 'contrast'"),
                          ablation, matrix, sweep.attrs.get("coherence_threshold", float("nan")))
    stage.mark_done({
        "pair": [em, control], "layer": layer, "scale": norms[layer], "positions": settings.positions,
        "checkpoints": {condition: {"seed": c.seed, "step": c.step, "adapter": str(c.adapter_path)}
                        for condition, c in checkpoints.items()},
        "em_directions": {condition: direction.record() for condition, direction in directions.items()},
        "coherence_threshold": sweep.attrs.get("coherence_threshold"),
        "judge": getattr(setup.judge, "name", None), "n_prompts": len(setup.prompts), "n_pairs": len(measured_pairs),
    })
    return load_outputs(run_dir)
