"""Notebook 03's measurement: every checkpoint of every trail (condition x training seed) projected
into trait space.

The base model is loaded once; each checkpoint's LoRA adapter is swapped in
(:class:`traitspace.core.models.AdapterSwitcher`), the projection questions (disjoint from the
extraction questions) are run through one batched capture at the union of the traits' layers (with
prompt pooling, the template's system prompt they share runs once:
:func:`traitspace.core.prompt_capture.capture_shared_prefixes`), and each activation is projected
onto the unit trait vector at that trait's layer.

Output: one tidy table with columns ``condition, seed, step, trait, layer, prompt, value, act_norm``
(``act_norm`` = the activation's L2 norm at that layer, for the norm-rescaled drift of paper 001),
and its drift table. Each checkpoint is one part of a :class:`traitspace.core.parts.CheckpointParts`
folder (``projections/parts/``) with its mean activation attached, so an interrupted run resumes,
a checkpoint already projected with the same params is not recomputed, and the base model (step 0
of every trail) is projected once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from ..core.artifacts import atomic_path
from ..core.chat import SpanKind
from ..core.checkpoints import Checkpoint
from ..core.code_versions import code_version, versioned
from ..core.hooks import capture_conversations
from ..core.parts import CheckpointParts, combine_fingerprint
from ..core.prompt_capture import capture_shared_prefixes
from ..core.traits import project_at_layers
from ..em_data.registry import resolve_pairs  # noqa: F401  (re-exported: the pairs a projection analyses)
from .analysis import ProjectionAnalysis, analyse_projections, write_analysis
from .plots import save_projection_figures

MEAN_ACTIVATION = "mean_activation.safetensors"  # the attachment of each part


def projection_conversations(loaded, questions: Sequence[str], replies: Sequence[str] | None = None) -> list[list[dict]]:
    """Projection prompts carry no persona system prompt: the model's own default (made explicit)."""
    if replies is None:
        return [loaded.chat.conversation(question) for question in questions]
    return [loaded.chat.conversation(question, assistant=reply) for question, reply in zip(questions, replies)]


def project_activations(
    activations: dict[int, torch.Tensor],
    unit_vectors: dict[str, torch.Tensor],
    trait_layers: dict[str, int],
) -> pd.DataFrame:
    """Project pooled activations onto unit trait vectors.

    activations: {layer: [n_prompts, hidden]}; unit_vectors: {trait: [hidden]} (unit norm, at
    ``trait_layers[trait]``). Returns columns trait, layer, prompt (0..n-1), value, act_norm.
    One matrix product per layer (traits sharing a layer are projected together).
    """
    # Rows grouped by layer (in order of first appearance), as the table has always been laid out.
    first_seen: dict[int, int] = {}
    for name in unit_vectors:
        first_seen.setdefault(int(trait_layers[name]), len(first_seen))
    ordered = sorted(unit_vectors, key=lambda name: first_seen[int(trait_layers[name])])
    names, values, norms = project_at_layers(activations, {name: unit_vectors[name] for name in ordered}, trait_layers)
    n_prompts = values.shape[0]
    return pd.DataFrame({
        "trait": np.repeat(names, n_prompts),
        "layer": np.repeat([int(trait_layers[name]) for name in names], n_prompts),
        "prompt": np.tile(np.arange(n_prompts), len(names)),
        "value": values.T.reshape(-1),
        "act_norm": norms.T.reshape(-1),
    })


def checkpoint_fingerprint(params_hash: str, checkpoint: Checkpoint) -> str:
    """A part is fresh when made with these params from these weights."""
    return versioned(combine_fingerprint(params_hash, checkpoint.identity()), "project.measure")


def project_checkpoints(
    loaded,
    switcher,
    checkpoints: Sequence[Checkpoint],
    questions: Sequence[str],
    unit_vectors: dict[str, torch.Tensor],
    trait_layers: dict[str, int],
    out_dir: Path,
    params_hash: str,
    pooling: SpanKind = "last_prompt",
    batch_size: int = 16,
    max_length: int | None = None,
    max_new_tokens: int = 48,
    seed: int = 0,
    progress: Callable | None = None,
    share_prefixes: bool = True,
) -> pd.DataFrame:
    """Project each checkpoint (resuming finished ones) and return the combined tidy table.

    ``pooling="response"`` first generates a greedy answer with the checkpoint itself, then pools
    over the answer tokens; the other poolings read the prompt only (no generation), with the
    prompts' shared beginning run once unless ``share_prefixes`` is off (kept for the benchmark's
    baseline; the values agree to float rounding).
    """
    parts = CheckpointParts(Path(out_dir) / "parts")
    layers = sorted(set(trait_layers[trait] for trait in unit_vectors))
    iterator = progress(checkpoints) if progress else checkpoints
    for checkpoint in iterator:
        fingerprint = checkpoint_fingerprint(params_hash, checkpoint)
        if parts.is_fresh(checkpoint, fingerprint):
            continue  # includes step 0 of every trail after the first: the base model was projected once
        with switcher.use(checkpoint.adapter_path):
            replies = None
            if pooling == "response":
                from ..core.sampling import generate_replies

                replies = generate_replies(loaded, projection_conversations(loaded, questions),
                                           max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
                replies = [reply or "..." for reply in replies]  # an empty answer has no tokens to pool
            conversations = projection_conversations(loaded, questions, replies)
            if share_prefixes and pooling in ("last_prompt", "prompt"):
                activations = capture_shared_prefixes(loaded, conversations, layers, pooling, batch_size,
                                                      max_length=max_length)
            else:
                activations = capture_conversations(loaded, conversations, layers=layers, pooling=pooling,
                                                    batch_size=batch_size, max_length=max_length)
        frame = project_activations(activations, unit_vectors, trait_layers)
        frame.insert(0, "step", checkpoint.step)
        frame.insert(0, "seed", checkpoint.seed)
        frame.insert(0, "condition", checkpoint.condition)
        # The mean raw activation per layer is kept too (a few KB): the monitor's raw-activation
        # baselines (PCA of activations, activation-norm drift) are computed from it.
        means = {f"layer_{layer}": acts.mean(0).contiguous() for layer, acts in activations.items()}
        parts.write(checkpoint, frame, fingerprint,
                    attachments={MEAN_ACTIVATION: lambda temporary, means=means: save_file(means, str(temporary))})
    return load_projection_parts(parts.folder, checkpoints)


def load_mean_activations(parts_dir: Path, checkpoints: Sequence[Checkpoint]
                          ) -> dict[tuple[str, int, int], dict[int, torch.Tensor]]:
    """{(condition, seed, step): {layer: mean activation over the projection prompts [hidden]}}."""
    parts = CheckpointParts(parts_dir)
    result = {}
    for checkpoint in checkpoints:
        stored = load_file(str(parts.attachment_path(checkpoint, MEAN_ACTIVATION)))
        result[(checkpoint.condition, checkpoint.seed, checkpoint.step)] = {int(key.split("_")[1]): value for key, value in stored.items()}
    return result


def load_projection_parts(parts_dir: Path, checkpoints: Sequence[Checkpoint]) -> pd.DataFrame:
    parts = CheckpointParts(parts_dir)
    frames = [parts.read(checkpoint) for checkpoint in checkpoints]
    table = pd.concat(frames, ignore_index=True)
    return table.sort_values(["condition", "seed", "step", "trait", "prompt"]).reset_index(drop=True)


def norm_rescaled_drift_table(projections: pd.DataFrame) -> pd.DataFrame:
    """Per trail (condition, seed), step, trait: mean drift from step 0 and the same drift as a
    percentage of the step-0 activation norm at that trait's layer (paper 001's norm-rescaled drift)."""
    from ..core.trajectory import drift, norm_rescaled_drift, trail_keys

    trail = trail_keys(projections)
    drifts = drift(projections[[*trail, "step", "trait", "prompt", "value"]])
    base_norms = (projections[projections["step"] == 0].groupby([*trail, "trait"])["act_norm"].mean()
                  .rename("base_norm").reset_index())
    table = drifts.merge(base_norms, on=[*trail, "trait"], how="left")
    table["drift_pct_of_norm"] = norm_rescaled_drift(table["drift"].to_numpy(), table["base_norm"].to_numpy())
    return table


# -- the stage (what notebook 03 calls) -------------------------------------------------------------
@dataclass
class ProjectionResult:
    table: pd.DataFrame          # condition, seed, step, trait, layer, prompt, value, act_norm
    drift: pd.DataFrame          # condition, seed, step, trait, drift, base_norm, drift_pct_of_norm
    pairs: dict[str, str]
    questions: list[str]
    seconds_per_checkpoint: float | None
    mean_activations: dict[tuple[str, int, int], dict[int, torch.Tensor]]  # (condition, seed, step) -> {layer: [hidden]}
    analysis: ProjectionAnalysis | None = None  # notebook 03's tables (written to projections/)
    figures: dict[str, Path] = field(default_factory=dict)  # figure name -> file


def run_projection_stage(config, loaded=None, progress: bool = True) -> ProjectionResult:
    """Project every trained checkpoint of every trail onto the run's trait vectors (cached per
    checkpoint), then write notebook 03's analysis tables and figures into ``projections/``."""
    from ..core.artifacts import Stage
    from ..core.checkpoints import list_conditions, list_trails
    from ..core.models import AdapterSwitcher, load_model
    from .. import extract
    from ..library import load_builtin_library

    run_dir = Path(config.run_dir)
    configured = list(config.finetune.conditions)
    conditions = [name for name in configured if name in set(list_conditions(run_dir))]
    if not conditions:
        raise FileNotFoundError(f"no checkpoints of {configured} under {run_dir / 'checkpoints'}: run notebook 01 first")
    vectors = extract.load_outputs(run_dir)
    settings = config.project
    questions = list(load_builtin_library().projection_questions)
    if settings.n_questions is not None:
        questions = questions[: settings.n_questions]
    checkpoints = [checkpoint for trail in list_trails(run_dir, conditions, list(config.finetune.seeds))
                   for checkpoint in trail]
    params_hash = config.params_hash("model", "finetune", "project") + "-" + str(vectors.info.get("params_hash"))
    stage = Stage(run_dir / "projections", params_hash=params_hash, code_version=code_version("project"))
    pooling = vectors.info.get("pooling", "last_prompt") if settings.pooling == "auto" else settings.pooling
    unit_vectors = {name: torch.as_tensor(vectors.unit(name)).float() for name in vectors.names}
    trait_layers = {name: int(vectors.layer_of(name)) for name in vectors.names}
    if loaded is None:
        loaded = load_model(config.model)
    progress_bar = None
    if progress:
        from tqdm.auto import tqdm

        def progress_bar(items):
            return tqdm(items, desc="project checkpoints")
    parts = CheckpointParts(stage.path / "parts")
    to_compute = {parts.path(checkpoint) for checkpoint in checkpoints
                  if not parts.is_fresh(checkpoint, checkpoint_fingerprint(params_hash, checkpoint))}
    started = time.perf_counter()
    table = project_checkpoints(
        loaded, AdapterSwitcher(loaded), checkpoints, questions, unit_vectors, trait_layers, stage.path,
        params_hash=params_hash, pooling=pooling, batch_size=settings.batch_size,
        max_length=config.capture.max_length, max_new_tokens=settings.max_new_tokens, seed=config.run.seed,
        progress=progress_bar,
    )
    seconds = (time.perf_counter() - started) / len(to_compute) if to_compute else None
    drift = norm_rescaled_drift_table(table)
    with atomic_path(stage.path / "projections.parquet") as temporary:
        table.to_parquet(temporary, index=False)
    with atomic_path(stage.path / "drift.parquet") as temporary:
        drift.to_parquet(temporary, index=False)
    pairs = resolve_pairs(settings.pairs, conditions)
    mean_activations = load_mean_activations(parts.folder, checkpoints)
    analysis = analyse_projections(table, pairs, settings, seed=config.run.seed, mean_activations=mean_activations,
                                   unit_vectors=unit_vectors, trait_layers=trait_layers)
    write_analysis(analysis, stage.path)
    figures = save_projection_figures(analysis, stage.path / "figures", top_k=settings.top_k)
    stage.mark_done({"conditions": conditions, "seeds": sorted(int(seed) for seed in table["seed"].unique()),
                     "pairs": pairs, "n_checkpoints": len(checkpoints), "pooling": pooling,
                     "n_traits": len(unit_vectors), "n_questions": len(questions),
                     "seconds_per_new_checkpoint": seconds,
                     "pca_explained_variance": [float(value) for value in analysis.pca.explained_variance_ratio]})
    return ProjectionResult(table, drift, pairs, questions, seconds, mean_activations, analysis, figures)
