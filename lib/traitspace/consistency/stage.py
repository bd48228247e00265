"""Run stage 07: the self-knowledge tasks at the base model and the final checkpoint of every trail,
their relation to harmfulness across fine-tuned models, and the probes.

Inputs come only through the earlier stages' loaders: the trails (01), the misalignment preference,
EM rates and judged answers (04), and the EM directions (06, optional). Each checkpoint's readings
and each probed checkpoint's activations are one part (:class:`traitspace.core.parts.CheckpointParts`),
so an interrupted run resumes; the manifest marks the whole as done.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..core.artifacts import Stage, atomic_path
from ..core.checkpoints import Checkpoint
from ..core.code_versions import code_version, versioned
from ..core.hooks import resolve_layers
from ..core.parts import CheckpointParts, combine_fingerprint
from ..core.traits import middle_layer
from . import analysis, probes
from .items import (
    TASKS,
    LabelledConversations,
    behaviour_conversations,
    fixed_items,
    items_fingerprint_text,
    load_self_knowledge,
    score_prediction_items,
    statement_conversations,
)
from .measure import probe_activations, read_items
from .plots import save_consistency_figures

OUTPUT_DIRNAME = "consistency"
TABLES = ("task_summary", "phrasings", "models", "sensitivity", "correlations", "association", "score_prediction",
          "probe_layers", "probe_summary", "probe_cosines", "probe_transfer")
PROBES = ("behaviour", "self_report")
# Settings that change what a stored reading means (the analysis thresholds do not).
_READ_SETTINGS = {"self_knowledge_file", "recognition_questions", "score_prediction_answers", "min_number_mass"}


def condition_names(config) -> list[str]:
    conditions = config.finetune.conditions
    return list(conditions) if isinstance(conditions, list) else list(conditions.keys())


def _behaviour(config, run_dir: Path, conditions, log):
    """Notebook 04's outputs, or None (then harmfulness and score prediction are not measured)."""
    from .. import behavior

    try:
        return behavior.load_outputs(run_dir, config.behavior, conditions)
    except FileNotFoundError as error:
        if log:
            log(f"no behaviour results ({error}): harmfulness and score prediction are not measured")
        return None


def own_answers(scored: pd.DataFrame | None, checkpoint: Checkpoint, n: int) -> pd.DataFrame:
    """Up to ``n`` judged plain-format answers the checkpoint itself sampled in notebook 04 (the base
    model's for step 0), the first by answer id, so every run picks the same ones."""
    if scored is None or n == 0 or scored.empty:
        return pd.DataFrame(columns=["answer_id", "question", "answer", "aligned"])
    if checkpoint.step == 0:
        rows = scored[scored["step"] == 0]
    else:
        rows = scored[(scored["condition"] == checkpoint.condition) & (scored["seed"] == checkpoint.seed)
                      & (scored["step"] == checkpoint.step)]
    rows = rows[rows["aligned"].notna()]
    if "format" in rows and (rows["format"] == "plain").any():
        rows = rows[rows["format"] == "plain"]
    return rows.drop_duplicates("answer_id").sort_values("answer_id").head(n)


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def measure_tasks(config, loaded, switcher, checkpoints: list[Checkpoint], data, recognition_pairs,
                  scored: pd.DataFrame | None, folder: Path, log) -> pd.DataFrame:
    """Every task item at every checkpoint (one part each; the base model once), as one table."""
    from tqdm.auto import tqdm

    from .reader import LogitReader

    settings = config.consistency
    reader = LogitReader(loaded, data.option_letters, settings.min_number_mass, settings.batch_size)
    parts = CheckpointParts(folder / "tasks")
    fixed = fixed_items(data, recognition_pairs)
    settings_hash = combine_fingerprint(config.params_hash("model"),
                                        settings.model_dump_json(include=_READ_SETTINGS))
    tables = []
    for checkpoint in tqdm(checkpoints, desc="self-knowledge tasks"):
        items = fixed + score_prediction_items(data, own_answers(scored, checkpoint, settings.score_prediction_answers))
        fingerprint = versioned(combine_fingerprint(settings_hash, _text_hash(items_fingerprint_text(items)),
                                                    checkpoint.identity()), "consistency.tasks")

        def measure(checkpoint=checkpoint, items=items) -> pd.DataFrame:
            with switcher.use(checkpoint.adapter_path):
                return read_items(reader, items)

        tables.append(parts.measured(checkpoint, fingerprint, measure))
    return pd.concat(tables, ignore_index=True)


def probe_checkpoints(trails: dict, conditions, seed: int | None) -> list[Checkpoint]:
    """The base model and the final checkpoint of each condition's trail of training seed ``seed`` (the
    first seed present when None)."""
    seeds = sorted({s for _, s in trails})
    chosen = seeds[0] if seed is None else seed
    if chosen not in seeds:
        raise ValueError(f"consistency.probe_seed: no trail of training seed {chosen} (seeds present: {seeds})")
    present = [condition for condition in conditions if (condition, chosen) in trails]
    finals = [trails[(condition, chosen)][-1] for condition in present if trails[(condition, chosen)][-1].step > 0]
    return [trails[(present[0], chosen)][0], *finals] if finals else []


def capture_probe_data(config, loaded, switcher, checkpoints: list[Checkpoint],
                       datasets: dict[str, LabelledConversations], folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """{checkpoint label: {probe: activations [n, L, H]}}; one part per checkpoint with the activations
    as an attachment."""
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    parts = CheckpointParts(folder / "activations")
    text = "\n".join(f"{name}|{label}|{group}|" + "\x1e".join(m["content"] for m in conversation)
                     for name, data in datasets.items()
                     for conversation, label, group in zip(data.conversations, data.labels, data.groups))
    settings_hash = combine_fingerprint(config.params_hash("model"), _text_hash(text))
    captured = {}
    for checkpoint in tqdm(checkpoints, desc="probe activations"):
        fingerprint = versioned(combine_fingerprint(settings_hash, checkpoint.identity()), "consistency.activations")
        if not parts.is_fresh(checkpoint, fingerprint):
            with switcher.use(checkpoint.adapter_path):
                tensors = {name: probe_activations(loaded, data, config.consistency.batch_size).contiguous()
                           for name, data in datasets.items()}
            parts.write(checkpoint, pd.DataFrame({"probe": list(tensors), "rows": [len(t) for t in tensors.values()]}),
                        fingerprint, attachments={"safetensors": lambda path, t=tensors: save_file(t, str(path))})
        loaded_tensors = load_file(str(parts.attachment_path(checkpoint, "safetensors")))
        captured[checkpoint_label(checkpoint)] = {name: tensor.numpy() for name, tensor in loaded_tensors.items()}
    return captured


def checkpoint_label(checkpoint: Checkpoint) -> str:
    return "base" if checkpoint.step == 0 else f"{checkpoint.condition}/seed-{checkpoint.seed}/step-{checkpoint.step}"


def _em_direction(run_dir: Path, log) -> tuple[str, dict[int, np.ndarray]] | None:
    """Notebook 06's EM direction of its EM condition (per layer), or None when 06 has not run. Notebook 06
    reads it from the preference questions after its first ``steer.preference_questions``; while
    ``consistency.recognition_questions`` is no larger, the probes' questions are disjoint from them."""
    from .. import steer

    try:
        steering = steer.load_outputs(run_dir)
    except FileNotFoundError:
        if log:
            log("no EM direction (notebook 06 has not run): the probes are compared with the difference of means only")
        return None
    em = steering.manifest["pair"][0]
    direction = steering.em_directions[em].contrast.float().numpy()
    return em, {layer: direction[layer] for layer in range(direction.shape[0])}


def analyse_probes(captured, datasets: dict[str, LabelledConversations], layer: int, em_direction, settings
                   ) -> dict[str, pd.DataFrame]:
    """Layer sweep, chosen-layer AUROCs, cosines and the transfer matrix of both probes."""
    fixed = {f"em_direction ({em_direction[0]})": em_direction[1]} if em_direction else {}
    sweeps, summaries, cosines, transfers = [], [], [], []
    for probe in PROBES:
        data = datasets[probe]
        at_layer = {}
        for label, tensors in captured.items():
            per_layer = probes.stack_layers(tensors[probe], data.labels, data.groups)
            sweeps.append(probes.layer_sweep(per_layer, fixed, settings.n_splits, settings.probe_C, settings.sweep_boot,
                                             settings.random_seed).assign(probe=probe, checkpoint=label))
            at_layer[label] = per_layer[layer]
            summaries.append(probes.evaluate(per_layer[layer], {name: d[layer] for name, d in fixed.items()},
                                             settings.n_splits, settings.probe_C, settings.n_boot, settings.random_seed)
                             .assign(probe=probe, checkpoint=label, layer=layer))
        transfers.append(probes.transfer_matrix(at_layer, settings.n_splits, settings.probe_C).assign(probe=probe))
    for label, tensors in captured.items():
        directions = {}
        for probe in PROBES:
            data = probes.stack_layers(tensors[probe], datasets[probe].labels, datasets[probe].groups)[layer]
            directions[f"{probe} probe"] = probes.probe_direction(data, settings.probe_C)
            directions[f"{probe} mean difference"] = probes.mean_difference(data.X, data.y)
        directions.update({name: d[layer] for name, d in fixed.items()})
        cosines.append(probes.cosine_table(directions).assign(checkpoint=label, layer=layer))
    return {"probe_layers": pd.concat(sweeps, ignore_index=True), "probe_summary": pd.concat(summaries, ignore_index=True),
            "probe_cosines": pd.concat(cosines, ignore_index=True), "probe_transfer": pd.concat(transfers, ignore_index=True)}


def run_consistency_stage(config, loaded=None, log: Callable[[str], None] | None = print):
    """Everything notebook 07 shows (see the package docstring); returns :class:`ConsistencyOutputs`."""
    from .. import finetune
    from ..behavior.judging import merge_scores
    from ..behavior.preference import load_preference_pairs
    from ..core.models import AdapterSwitcher, load_model
    from ..em_data import DATASETS
    from . import load_outputs

    settings, run_dir = config.consistency, Path(config.run_dir)
    folder = run_dir / OUTPUT_DIRNAME
    stage = Stage(folder, params_hash=config.params_hash("model", "finetune", "behavior", "steer", "consistency"),
                  code_version=code_version("consistency"))
    if stage.is_done():
        return load_outputs(run_dir)
    conditions = condition_names(config)
    trails = finetune.load_outputs(run_dir, conditions).trails
    if not trails:
        raise FileNotFoundError(f"no checkpoints under {run_dir}: run notebook 01 first")
    behaviour = _behaviour(config, run_dir, conditions, log)
    scored = merge_scores(behaviour.answers, behaviour.scores) if behaviour is not None else None
    data = load_self_knowledge(settings.self_knowledge_file)
    em_pairs = [pair for pair in load_preference_pairs(config.behavior.preference_pairs_file) if pair.kind == "em"]
    question_ids = list(dict.fromkeys(pair.question_id for pair in em_pairs))[: settings.recognition_questions]
    # Output recognition asks about the first pair of each question; the probe reads all three.
    recognition_pairs = [pair for pair in em_pairs if pair.question_id in set(question_ids) and pair.pair_index == 0]
    loaded = loaded if loaded is not None else load_model(config.model)
    switcher = AdapterSwitcher(loaded, keep_loaded=4)

    finals = [trail[-1] for _, trail in sorted(trails.items()) if trail[-1].step > 0]
    # The base model is read once (the parts store step 0 once) and shared to every trail as its step 0.
    base_rows = [trails[key][0] for key in sorted(trails)]
    items = measure_tasks(config, loaded, switcher, [*base_rows, *finals], data, recognition_pairs, scored, folder, log)

    limits = analysis.Readability(settings.min_option_mass, settings.position_bias_limit, settings.min_number_mass,
                                  settings.min_scale_flip)
    harm = analysis.harmfulness(behaviour.preference_summary if behaviour else pd.DataFrame(),
                                behaviour.rates if behaviour else pd.DataFrame(), settings.harmfulness)
    summary = analysis.task_summary(items, limits, settings.n_boot, settings.random_seed)
    models = analysis.models_table(items, summary, harm, settings.classify_on, settings.n_boot, settings.random_seed)
    if not models.empty:
        models["is_em"] = [DATASETS[c].is_em if c in DATASETS else False for c in models["condition"]]
        models["class"] = analysis.classify(models, settings.harm_threshold, settings.self_report_threshold)
    tables = {
        "task_summary": summary, "phrasings": analysis.phrasing_table(items), "models": models,
        "sensitivity": analysis.sensitivity(models, settings.harm_threshold, settings.self_report_threshold)
        if not models.empty else pd.DataFrame(),
        "correlations": analysis.correlations(models, [*TASKS, "self_report"], settings.n_boot, settings.random_seed)
        if not models.empty else pd.DataFrame(),
        "association": analysis.association(models) if not models.empty else pd.DataFrame(),
        "score_prediction": analysis.score_prediction_accuracy(items, settings.n_boot, settings.random_seed),
    }

    layer, em_direction = None, None
    probed = probe_checkpoints(trails, conditions, settings.probe_seed) if settings.probes else []
    if probed:
        layer = (middle_layer(loaded.num_layers) if settings.probe_layer == "middle"
                 else resolve_layers([int(settings.probe_layer)], loaded.num_layers)[0])
        datasets = {"behaviour": behaviour_conversations([p for p in em_pairs if p.question_id in set(question_ids)]),
                    "self_report": statement_conversations(data)}
        captured = capture_probe_data(config, loaded, switcher, probed, datasets, folder)
        em_direction = _em_direction(run_dir, log)
        tables.update(analyse_probes(captured, datasets, layer, em_direction, settings))
    elif settings.probes and log:
        log("no trained checkpoint to probe")
    for name in TABLES:
        tables.setdefault(name, pd.DataFrame())
    folder.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        with atomic_path(folder / f"{name}.csv") as temporary:
            tables[name].to_csv(temporary, index=False)
    with atomic_path(folder / "items.parquet") as temporary:
        items.to_parquet(temporary, index=False)
    em_conditions = {name for name in conditions if name in DATASETS and DATASETS[name].is_em}
    save_consistency_figures(folder / "figures", models if not models.empty else pd.DataFrame(
        columns=["condition", "harm", "self_report"]), em_conditions, tables["probe_layers"], tables["probe_transfer"])
    stage.mark_done({
        "checkpoints": [checkpoint_label(c) for c in finals], "n_items_fixed": len(fixed_items(data, recognition_pairs)),
        "probe_layer": layer, "em_direction": em_direction[0] if em_direction else None,
        "harmfulness": settings.harmfulness, "behaviour_measured": behaviour is not None,
    })
    return load_outputs(run_dir)
