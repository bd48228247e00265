"""Run stage 09: get an SAE (train one, or load a published one), diff every checkpoint
through it, test the changes across seeds, compare the top features with the trait directions,
steer along them, and add the SAE baseline to notebook 05's monitor table.

Inputs come only through the earlier stages' loaders: trait vectors (02), the EM/control pairs (03),
the checkpoint trails (01), the evaluation answers (04), the EM direction (06, optional) and the
monitor evaluation of notebook 05 (:func:`traitspace.findings.monitor_evaluation` on the same params;
optional: without notebook 04's rates there is no monitor table).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..core.artifacts import Stage, atomic_path, atomic_write_json, read_json
from ..core.checkpoints import Checkpoint
from ..core.code_versions import code_version, training_hash_fields, versioned
from ..core.parts import CheckpointParts, combine_fingerprint
from .activations import cached_training_activations, evaluation_messages, training_conversations
from .analysis import (
    MEASURES,
    changes_from_base,
    chance_abs_cosine,
    closest_references,
    direction_cosines,
    em_minus_control,
    top_answers,
    top_features,
)
from .diff import measure_checkpoint, read_part, write_part
from .model import reconstruction_quality
from .saelens_format import load_saelens, save_saelens

OUTPUT_DIRNAME = "sae"
SAE_FOLDER = "sae_model"                   # the SAE used, in SAE Lens's format
ACTIVATIONS_FILE = "activations.safetensors"
TRAIN_CHECKPOINT = "train_checkpoint.pt"
TRAINING_FILE = "training.json"
TABLES = ("quality", "training_loss", "feature_stats", "tested", "top_mean_activation", "top_frequency", "cosines",
          "top_answers", "sweep", "against_random", "monitor_results")
_TRAINING_KEYS = {"published", "layer", "d_sae", "k", "steps", "batch_size", "learning_rate", "n_extraction", "n_generic",
                  "max_tokens", "heldout_fraction", "seed"}
_MEASURE_KEYS = {"preference_questions", "samples_per_question", "max_new_tokens"}


def _answers_for(answers: pd.DataFrame, checkpoint: Checkpoint, which: str) -> pd.DataFrame:
    """The evaluation answers a checkpoint reads: the base model's, or its own (questions only)."""
    questions = answers[answers["kind"] == "question"]
    if which == "base" or checkpoint.step == 0:
        rows = questions[questions["step"] == 0]
    else:
        rows = questions[(questions["condition"] == checkpoint.condition) & (questions["seed"] == checkpoint.seed)
                         & (questions["step"] == checkpoint.step)]
    return rows.drop_duplicates("answer_id").sort_values("answer_id").reset_index(drop=True)


def diffed_checkpoints(trails, answers: pd.DataFrame, conditions, which: str) -> list[Checkpoint]:
    """The trained checkpoints the diff reads. On the base model's answers (``which='base'``) only the
    weights differ, so every checkpoint of every trail is read: every training seed (the unit the
    EM-minus-control test needs) and every step notebook 05's monitor labels. On their own answers,
    only the checkpoints notebook 04 sampled."""
    trained = [c for (condition, _), trail in trails.items() if condition in conditions for c in trail if c.step > 0]
    if which != "base":
        answered = answers[(answers["step"] > 0) & answers["condition"].isin(conditions)][["condition", "seed", "step"]]
        keys = set(map(tuple, answered.itertuples(index=False)))
        trained = [c for c in trained if (c.condition, c.seed, c.step) in keys]
    return sorted(trained, key=lambda c: (c.condition, c.seed, c.step))


def _get_sae(config, loaded, folder: Path, layer_setting, traits, base_answers, log):
    """(SAE, layer, quality rows, training record): the published SAE, or one trained (resumably) here."""
    from ..steer.stage import choose_layer
    from .train import TrainSettings, train_sae

    settings = config.sae
    if settings.published is not None:
        sae, layer, cfg = load_saelens(settings.published)
        if sae.d_in != loaded.hidden_size:
            raise ValueError(f"sae.published: the SAE reads {sae.d_in} dimensions, the model has {loaded.hidden_size}")
        if layer_setting != "traits" and choose_layer(layer_setting, traits, [], loaded.num_layers) != layer:
            raise ValueError(f"sae.layer {layer_setting} disagrees with the published SAE's hook "
                             f"{cfg.get('meta', {}).get('hook_name') or cfg.get('hook_name')} (layer {layer})")
        return sae, layer, [], {"source": str(settings.published), "seconds": None}
    layer = choose_layer(layer_setting, traits, [], loaded.num_layers)
    conversations = training_conversations(config, loaded, base_answers)
    fingerprint = versioned(combine_fingerprint(config.params_hash("model", "extract"), str(layer),
                                                settings.model_dump_json(include=_TRAINING_KEYS),
                                                combine_fingerprint(*(str(messages) for messages in conversations["messages"]))),
                            "sae.training")
    data = cached_training_activations(folder / ACTIVATIONS_FILE, loaded, conversations, layer, settings.max_tokens,
                                       settings.heldout_fraction, settings.seed, settings.batch_size_capture, fingerprint)
    train_settings = TrainSettings(d_sae=settings.d_sae, k=settings.k, steps=settings.steps,
                                   batch_size=min(settings.batch_size, len(data["train"])),
                                   learning_rate=settings.learning_rate, seed=settings.seed)
    result = train_sae(data["train"], train_settings, folder / TRAIN_CHECKPOINT, progress="train SAE", log=log,
                       identity_extra=training_hash_fields("sae.training"))
    record_path = folder / TRAINING_FILE
    record = read_json(record_path) if record_path.is_file() and result.seconds == 0 else {}
    if result.seconds > 0 or not record:
        record = {"source": "trained", "seconds": result.seconds, "resumed_from_step": result.resumed_from,
                  "steps": settings.steps, "n_train_tokens": int(len(data["train"])),
                  "n_heldout_tokens": int(len(data["heldout"])), "input_scale": result.scale,
                  "conversations": conversations["source"].value_counts().to_dict()}
        atomic_write_json(record_path, record)
    save_saelens(result.sae, folder / SAE_FOLDER, layer, model_name=config.model.source)
    quality = [{"activations": "base model, held-out training mix (all tokens but the first)", "condition": "base",
                "seed": -1, "step": 0, **reconstruction_quality(result.sae, data["heldout"]).as_dict()},
               {"activations": "base model, training mix", "condition": "base", "seed": -1, "step": 0,
                **reconstruction_quality(result.sae, data["train"]).as_dict()}]
    return result.sae, layer, quality, {**record, "losses": result.losses}


def _references(run_dir: Path, traits, layer: int, em: str, log) -> dict[str, torch.Tensor]:
    """Trait unit vectors at ``layer`` and, when notebook 06 ran, the EM condition's EM direction."""
    from .. import steer

    references = {name: traits.unit(name, layer) for name in traits.names}
    try:
        directions = steer.load_outputs(run_dir).em_directions
    except FileNotFoundError as error:
        if log:
            log(f"no EM direction ({error}); cosines with trait vectors only")
        return references
    if em in directions:
        references["em_direction"] = directions[em].unit(layer)
    return references


def _monitor(config, changes: pd.DataFrame, log) -> tuple[pd.DataFrame, str]:
    from .. import findings
    from .monitor import sae_monitor_results

    try:
        inputs = findings.load_inputs(config)
        evaluation = findings.monitor_evaluation(inputs, config.findings, seed=config.run.seed)
        return sae_monitor_results(evaluation, changes, config.sae.monitor_k, config.findings, config.run.seed), \
            evaluation.description
    except (FileNotFoundError, ValueError, KeyError) as error:
        if log:
            log(f"no monitor table: {error}")
        return pd.DataFrame(), f"not evaluated: {error}"


def run_sae_stage(config, loaded=None, log: Callable[[str], None] | None = print):
    """Everything notebook 09 shows (module docstring); returns :class:`~traitspace.sae.SaeOutputs`."""
    from .. import behavior, extract, finetune, project
    from ..core.models import AdapterSwitcher, load_model
    from ..steer.results import ResultStore
    from ..steer.scale import extraction_conversations, residual_norms
    from ..steer.sweep import run_sweep
    from . import load_outputs
    from .plots import save_sae_figures
    from .steering import against_random, measure_setup, preference_pairs, sweep_directions

    settings, run_dir = config.sae, Path(config.run_dir)
    folder = run_dir / OUTPUT_DIRNAME
    stage = Stage(folder, params_hash=config.params_hash("model", "finetune", "extract", "behavior", "findings", "sae"),
                  code_version=code_version("sae"))
    if stage.is_done():
        return load_outputs(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    traits = extract.load_outputs(run_dir)
    pairs = project.load_outputs(run_dir).pairs
    if not pairs:
        raise ValueError("notebook 03 found no EM/control pair; the SAE diff needs one (finetune.conditions, project.pairs)")
    conditions = sorted({name for pair in pairs.items() for name in pair})
    answers = behavior.load_outputs(run_dir, config.behavior, conditions).answers
    trails = finetune.load_outputs(run_dir, conditions).trails
    checkpoints = diffed_checkpoints(trails, answers, conditions, settings.answers)
    base = next(iter(trails.values()))[0]
    loaded = loaded if loaded is not None else load_model(config.model)
    switcher = AdapterSwitcher(loaded, keep_loaded=2)

    base_answers = _answers_for(answers, base, "base")
    with switcher.use(None):
        sae, layer, quality_rows, training = _get_sae(config, loaded, folder, settings.layer, traits, base_answers, log)
    losses = training.pop("losses", pd.DataFrame())
    sae_fingerprint = combine_fingerprint(*(f"{name}:{float(getattr(sae, name).sum()):.6e}" for name in ("W_enc", "W_dec", "b_enc", "b_dec")))

    # -- the diff: every checkpoint of diffed_checkpoints (and the base model once) through the SAE ------------
    parts = CheckpointParts(folder / "features")
    stats, per_answer_max, read_answers, diff_seconds = [], {}, {}, []
    from tqdm.auto import tqdm

    for checkpoint in tqdm([base, *checkpoints], desc="SAE diff", leave=False):
        rows = _answers_for(answers, checkpoint, settings.answers)
        fingerprint = versioned(combine_fingerprint(sae_fingerprint, str(layer), checkpoint.identity(), settings.answers,
                                                    combine_fingerprint(*rows["question"], *rows["answer"].fillna(""))),
                                "sae.features")
        if not parts.is_fresh(checkpoint, fingerprint):
            with switcher.use(checkpoint.adapter_path):
                measured = measure_checkpoint(loaded, sae, layer, [evaluation_messages(row) for row in rows.itertuples()],
                                              settings.batch_size_capture)
            write_part(parts, checkpoint, measured, fingerprint)
            diff_seconds.append(measured.seconds)
        table, attachment, info = read_part(parts, checkpoint)
        label = ("base" if checkpoint.step == 0 else checkpoint.condition, -1 if checkpoint.step == 0 else checkpoint.seed,
                 checkpoint.step)
        stats.append(table.assign(condition=label[0], seed=label[1], step=label[2]))
        per_answer_max[label], read_answers[label] = attachment["max"], rows
        quality_rows.append({"activations": f"{label[0]} seed {label[1]} step {label[2]}, evaluation answers"
                             if checkpoint.step else "base model, evaluation answers",
                             "condition": label[0], "seed": label[1], "step": label[2], **info["quality"]})
    stats = pd.concat(stats, ignore_index=True)
    changes = changes_from_base(stats)

    # -- EM minus control across seeds; the top features and what they look like ---------------------------
    tested_parts, tops = [], {measure: [] for measure in MEASURES}
    for em, control in pairs.items():
        for measure in MEASURES:
            tested = em_minus_control(changes, em, control, measure).assign(em=em, control=control)
            tested_parts.append(tested)
            tops[measure].append(top_features(tested, settings.n_top))
    tested = pd.concat(tested_parts, ignore_index=True)
    top_tables = {measure: pd.concat(parts_, ignore_index=True) for measure, parts_ in tops.items()}
    first_em = next(iter(pairs))
    directions = sae.decoder_directions()
    shown = sorted({int(f) for table in top_tables.values() for f in table["feature"]})
    cosines = direction_cosines({f: directions[f] for f in shown}, _references(run_dir, traits, layer, first_em, log))
    chance = chance_abs_cosine(sae.d_in)
    closest = closest_references(cosines, 3, exclude=["em_direction"])
    for measure, table in top_tables.items():
        table = table.merge(closest, on="feature", how="left")
        em_cos = cosines[cosines["reference"] == "em_direction"].set_index("feature")["cosine"]
        top_tables[measure] = table.assign(cos_em_direction=table["feature"].map(em_cos), chance_abs_cosine=chance)
    em_final = {key: value for key, value in per_answer_max.items() if key[0] == first_em
                and key[2] == max(k[2] for k in per_answer_max if k[0] == first_em)}
    examples = top_answers(em_final, read_answers, top_tables["mean_activation"]["feature"].head(settings.n_top).tolist()
                           if len(top_tables["mean_activation"]) else [], settings.n_top_answers)

    # -- causal check: steer the base model along the top features, a random feature as control ------------
    sweep, versus = pd.DataFrame(), pd.DataFrame()
    if settings.n_steer > 0:
        top_first = top_tables["mean_activation"][top_tables["mean_activation"]["em"] == first_em]
        live = (stats[stats["step"] == 0].set_index("feature")["frequency"].reindex(range(sae.d_sae)).fillna(0) > 0).to_numpy()
        setup = measure_setup(config, folder, preference_pairs(config))
        with switcher.use(None):
            norms = residual_norms(loaded, extraction_conversations(config, loaded, 64, settings.seed), [layer],
                                   settings.batch_size_capture)
            sweep = run_sweep(loaded, base, sweep_directions(sae, top_first, live, settings.n_steer, settings.seed),
                              layer, norms[layer], settings.alphas, setup, ResultStore(folder / "steering"),
                              settings_fingerprint=combine_fingerprint(config.params_hash("model", "behavior"),
                                                                       settings.model_dump_json(include=_MEASURE_KEYS)),
                              positions="response", min_coherence=settings.min_coherence, log=log)
        versus = against_random(sweep)

    # -- the SAE baseline beside notebook 05's monitor feature sets, same folds -------------------------------
    monitor, monitor_description = _monitor(config, changes, log)

    tables = {"quality": pd.DataFrame(quality_rows), "training_loss": losses, "feature_stats": stats, "tested": tested,
              "top_mean_activation": top_tables["mean_activation"], "top_frequency": top_tables["frequency"],
              "cosines": cosines, "top_answers": examples, "sweep": sweep, "against_random": versus,
              "monitor_results": monitor}
    for name in TABLES:  # parquet is what load_outputs reads (answers' raw text survives); CSV for a reader
        with atomic_path(folder / f"{name}.parquet") as temporary:
            tables[name].to_parquet(temporary, index=False)
        with atomic_path(folder / f"{name}.csv") as temporary:
            tables[name].to_csv(temporary, index=False, quoting=csv.QUOTE_NONNUMERIC)
    save_sae_figures(folder / "figures", tables, chance, sweep.attrs.get("coherence_threshold", float("nan")))
    stage.mark_done({
        "layer": layer, "d_in": sae.d_in, "d_sae": sae.d_sae, "k": sae.k, "activation": sae.activation,
        "pairs": pairs, "answers": settings.answers, "n_checkpoints": len(checkpoints),
        "training": training, "diff_seconds_per_checkpoint": float(np.mean(diff_seconds)) if diff_seconds else None,
        "chance_abs_cosine": chance, "monitor_description": monitor_description,
        "steering_scale": None if sweep.empty else float(norms[layer]),
        "coherence_threshold": sweep.attrs.get("coherence_threshold") if len(sweep) else None,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return load_outputs(run_dir)
