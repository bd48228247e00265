"""The extraction stage: run the plan on a model (:func:`extract_vectors`), save everything into
``<run>/traits/`` (:func:`save_extraction`), cache it by the parameters' hash
(:func:`run_extraction`), and read the tables back for notebook 02.

A rerun with the same model and ``extract`` parameters loads the stored vectors instead of touching
the model (:class:`traitspace.core.artifacts.Stage`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..core import traits as trait_math
from ..core.artifacts import Stage, atomic_path, atomic_write_text, read_json
from ..core.config import ExtractSection, RunConfig
from ..library import TraitLibrary, load_builtin_library
from .capture import CaptureCounts, capture_prompts, generate_and_capture
from .fit import FittedDirection, ResponseJudge, choose_layers, fit_owner, judge_keep
from .plan import AXIS_NAME, build_plan, chunks_by_owner, extraction_questions, selected_traits
from .vectors import (FORMAT_VERSION, LAYER_CONVENTION, OUTPUT_FOLDER, VECTORS_FILE, TraitVectors,
                      load_trait_vectors)

_CHUNK_ROWS = 2048  # conversations whose activations are held in memory at once (~140 MB for SmolLM2)


@dataclass
class Extraction:
    """Everything :func:`extract_vectors` computes (held in memory; :func:`save_extraction` writes it).

    ``vectors``: name -> ``[L, H]`` float32 raw mean differences (traits, then ``assistant_axis``);
    ``metadata``: one row per vector (see :data:`traitspace.extract.vectors.METADATA_COLUMNS`);
    ``separation``: held-out ``auroc``, ``cohens_d``, ``mean_gap`` per (``trait``, ``layer``);
    ``heldout_projections``: each held-out conversation's projection at its vector's layer;
    ``responses``: the generated answers (response mode) with the judge's verdicts, else None.
    """

    vectors: dict[str, np.ndarray]
    metadata: pd.DataFrame
    separation: pd.DataFrame
    heldout_projections: pd.DataFrame
    plan: pd.DataFrame
    responses: pd.DataFrame | None = None
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def extract_vectors(
    loaded,
    settings: ExtractSection,
    library: TraitLibrary | None = None,
    judge: ResponseJudge | None = None,
    progress: bool = True,
) -> Extraction:
    """Read every planned conversation, fit each direction and pick layers (see the package doc)."""
    library = library or load_builtin_library()
    plan = build_plan(library, settings)
    entries = {entry.name: entry for entry in selected_traits(library, settings)}
    layers = list(range(loaded.num_layers))
    timings: dict[str, float] = {}
    counts = CaptureCounts()
    fitted: dict[str, FittedDirection] = {}
    response_tables: list[pd.DataFrame] = []
    started, cpu_started = time.perf_counter(), time.process_time()
    chunks = chunks_by_owner(plan, _CHUNK_ROWS)
    iterator: Any = chunks
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(chunks, desc=f"extract ({settings.mode} mode)", unit="chunk")
    for owners in iterator:
        chunk = plan[plan["owner"].isin(owners)]
        if settings.mode == "prompt":
            activations = capture_prompts(loaded, chunk, settings, layers, timings, counts)
            answers = None
        else:
            activations, answers = generate_and_capture(loaded, chunk, settings, layers, timings)
        positions = np.arange(len(chunk))
        for owner in owners:
            mask = (chunk["owner"] == owner).to_numpy()
            rows = chunk[mask]
            keep = np.ones(len(rows), dtype=bool)
            if answers is not None:
                owner_answers = [answers[index] for index in positions[mask]]
                scores = np.full(len(rows), np.nan)
                if judge is not None and owner in entries:
                    keep, scores = judge_keep(entries[owner], rows, owner_answers, judge, settings.judge_threshold)
                response_tables.append(rows.assign(answer=owner_answers, judge_score=scores, kept=keep))
            fitted[owner] = fit_owner(owner, rows, activations[mask], keep)
        del activations
    timings["total_s"] = time.perf_counter() - started
    timings["cpu_s"] = time.process_time() - cpu_started  # CPU seconds of this process (all threads)

    choice = choose_layers(fitted, entries, settings, loaded.num_layers)
    questions, heldout = extraction_questions(library, settings)
    info = {
        "mode": settings.mode,
        "pooling": "response" if settings.mode == "response" else settings.pooling,
        "shared_layer": choice.shared_layer,
        "layer_scope": settings.layer_scope,
        "layer_selection": settings.layer_selection,
        "questions": questions,
        "heldout_question_indices": sorted(heldout),
        "n_conversations": len(plan),
        "tokens_run": counts.tokens_run,
        "tokens_without_prefix_sharing": counts.tokens_plain,
        "judge": getattr(judge, "__name__", type(judge).__name__) if judge is not None else None,
    }
    return Extraction(
        vectors={name: item.direction for name, item in fitted.items()},
        metadata=choice.metadata,
        separation=choice.separation,
        heldout_projections=choice.heldout_projections,
        plan=plan,
        responses=pd.concat(response_tables, ignore_index=True) if response_tables else None,
        timings={key: round(value, 3) for key, value in timings.items()},
        info=info,
    )


# -- storage ------------------------------------------------------------------------------------------
def _write_table(table: pd.DataFrame, folder: Path, stem: str, parquet: bool = True) -> None:
    with atomic_path(folder / f"{stem}.csv") as temporary:
        table.to_csv(temporary, index=False)
    if parquet:
        with atomic_path(folder / f"{stem}.parquet") as temporary:
            table.to_parquet(temporary, index=False)


def save_extraction(extraction: Extraction, folder: str | Path, model_info: Mapping[str, Any], params_hash: str) -> Path:
    """Write ``vectors.safetensors`` (one ``[L, H]`` tensor per vector, metadata in its header),
    ``metadata.csv/.parquet``, ``separation_by_layer.csv``, ``heldout_projections.csv``, ``plan.csv``
    and (response mode) ``responses.csv/.parquet`` into ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    header = {
        "format": FORMAT_VERSION,
        "layer_convention": LAYER_CONVENTION,
        "model_source": str(model_info.get("source")),
        "model": json.dumps(dict(model_info), default=str),
        "params_hash": params_hash,
        "vectors": json.dumps(extraction.metadata.replace({np.nan: None}).to_dict(orient="records")),
        **{key: json.dumps(value, default=str) for key, value in extraction.info.items()},
    }
    tensors = {name: torch.from_numpy(np.ascontiguousarray(vector)) for name, vector in extraction.vectors.items()}
    with atomic_path(folder / VECTORS_FILE) as temporary:
        save_file(tensors, str(temporary), metadata=header)
    _write_table(extraction.metadata, folder, "metadata")
    _write_table(extraction.separation, folder, "separation_by_layer", parquet=False)
    _write_table(extraction.heldout_projections, folder, "heldout_projections", parquet=False)
    _write_table(extraction.plan, folder, "plan", parquet=False)
    if extraction.responses is not None:
        _write_table(extraction.responses, folder, "responses")
    return folder / VECTORS_FILE


def stage_hash(config: RunConfig, judge: ResponseJudge | None = None) -> str:
    """Cache key of the extraction stage: the model and extract sections (and the judge, if any)."""
    base = config.params_hash("model", "extract")
    return base if judge is None else f"{base}+judge={getattr(judge, '__name__', type(judge).__name__)}"


def run_extraction(
    config: RunConfig,
    loaded=None,
    judge: ResponseJudge | None = None,
    library: TraitLibrary | None = None,
    progress: bool = True,
) -> TraitVectors:
    """Extract (or load, when ``<run>/traits/`` already holds this configuration) the trait vectors.

    ``loaded`` is the model (a :class:`traitspace.core.models.LoadedModel`) or None to load
    ``config.model`` only if work is needed: a cache hit never touches a model.
    """
    stage = Stage(config.run_dir / OUTPUT_FOLDER, params_hash=stage_hash(config, judge))
    if stage.is_done():
        return load_trait_vectors(stage.path)
    if judge is not None and config.extract.mode != "response":
        raise ValueError("a judge filters generated answers; it needs extract.mode: response")
    if loaded is None:
        from ..core.models import load_model

        loaded = load_model(config.model)
    extraction = extract_vectors(loaded, config.extract, library=library, judge=judge, progress=progress)
    save_extraction(extraction, stage.path, loaded.info, stage.params_hash)
    summary = extraction.metadata[extraction.metadata["kind"] != "axis"]
    stage.mark_done({
        "timings": extraction.timings,
        "n_vectors": len(extraction.vectors),
        "n_separating": int(summary["separates"].sum()),
        **{key: value for key, value in extraction.info.items() if key not in ("questions",)},
    })
    return load_trait_vectors(stage.path)


# -- what notebook 02 shows ---------------------------------------------------------------------------
def settings_table(settings: ExtractSection) -> pd.DataFrame:
    """The ``extract`` parameters, one row each."""
    return pd.Series(settings.model_dump(), name="value").to_frame()


def judge_note(settings: ExtractSection, judge: ResponseJudge | None) -> str:
    """Whether generated answers are filtered by a trait judge."""
    if settings.mode != "response":
        return "prompt mode: nothing is generated, so there is nothing to judge"
    if judge is None:
        return "response mode: no trait judge available, so every generated answer is kept"
    return f"response mode: answers filtered by the judge {getattr(judge, '__name__', type(judge).__name__)}"


def run_report(vectors: TraitVectors, cached: bool) -> str:
    """How the vectors were obtained (cache or now), the timings and token counts of the run that
    made them (its manifest), and their shape."""
    manifest = read_json(Path(vectors.path).parent / "manifest.json")
    return "\n".join([
        "loaded from cache" if cached else "extracted now",
        f"extraction took {manifest['seconds']:.0f} s when it ran; timings: {manifest['timings']}",
        f"tokens run: {manifest['tokens_run']:,} (without prefix sharing: {manifest['tokens_without_prefix_sharing']:,})",
        f"{len(vectors)} vectors of shape {tuple(vectors.vectors[AXIS_NAME].shape)} "
        f"(layers x hidden); layer convention: {vectors.info['layer_convention']}",
    ])


def read_separation(folder: str | Path) -> pd.DataFrame:
    """``separation_by_layer.csv``: every vector's held-out separation at every layer."""
    return pd.read_csv(Path(folder) / "separation_by_layer.csv")


def read_heldout_projections(folder: str | Path) -> pd.DataFrame:
    """``heldout_projections.csv``: each held-out conversation's projection at its vector's layer."""
    return pd.read_csv(Path(folder) / "heldout_projections.csv")


def trait_metadata(vectors: TraitVectors) -> pd.DataFrame:
    """The metadata rows of the traits (the Assistant Axis left out), in stored order."""
    metadata = vectors.metadata.reset_index(drop=True)
    return metadata[metadata["kind"] != "axis"]


def validation_summary(vectors: TraitVectors, threshold: float) -> str:
    """How many traits separate on held-out questions, the Assistant Axis' separation, and the
    traits flagged as not separating."""
    metadata = vectors.metadata.reset_index(drop=True)
    traits = trait_metadata(vectors)
    axis = metadata[metadata["kind"] == "axis"].iloc[0]
    flagged = traits.loc[~traits["separates"], "trait"].tolist()
    return "\n".join([
        f"{int(traits['separates'].sum())} of {len(traits)} traits separate on held-out questions "
        f"(AUROC >= {threshold}); median AUROC {traits['auroc'].median():.2f}, "
        f"median Cohen's d {traits['cohens_d'].median():.2f}",
        f"Assistant Axis: layer {axis['layer']}, held-out AUROC {axis['auroc']:.2f}, Cohen's d {axis['cohens_d']:.2f}",
        f"flagged (do not separate): {len(flagged)}: {', '.join(flagged[:40])}{' ...' if len(flagged) > 40 else ''}",
    ])


VALIDATION_COLUMNS = ["trait", "kind", "category", "layer", "auroc", "cohens_d", "separates", "norm",
                      "activation_norm", "cos_assistant_axis", "n_prompts", "n_heldout"]


def validation_table(vectors: TraitVectors, n: int = 15) -> pd.DataFrame:
    """The ``n`` vectors with the lowest held-out AUROC, at their layers (rounded for display)."""
    metadata = vectors.metadata.reset_index(drop=True)
    return metadata.sort_values("auroc")[VALIDATION_COLUMNS].round(3).head(n)


def trait_cosines(vectors: TraitVectors, layer: int) -> pd.DataFrame:
    """Cosine similarity of every pair of trait vectors at ``layer`` (traits x traits)."""
    names = vectors.trait_names
    matrix = vectors.unit_matrix(names, layers=layer).numpy()
    return pd.DataFrame(trait_math.cosine_matrix(matrix), index=names, columns=names)


def extreme_pairs(cosines: pd.DataFrame, k: int = 8) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``k`` most similar and the ``k`` most opposite trait pairs (``trait_a``, ``trait_b``, ``cosine``)."""
    pairs = cosines.where(np.triu(np.ones(cosines.shape, dtype=bool), k=1)).stack().rename("cosine").reset_index()
    pairs.columns = ["trait_a", "trait_b", "cosine"]
    return pairs.nlargest(k, "cosine").round(3), pairs.nsmallest(k, "cosine").round(3)


def alignment_table(vectors: TraitVectors) -> pd.DataFrame:
    """The alignment traits: polarity, cosine with the Assistant Axis, held-out AUROC."""
    metadata = vectors.metadata.reset_index(drop=True)
    return metadata[metadata["kind"] == "alignment"][["trait", "polarity", "cos_assistant_axis", "auroc"]].round(3)


def write_summary(vectors: TraitVectors, folder: str | Path) -> Path:
    """A short human-readable ``summary.txt`` next to the vectors."""
    table = vectors.metadata
    traits = table[table["kind"] != "axis"]
    lines = [
        f"vectors: {len(vectors)} ({len(traits)} traits + assistant_axis)",
        f"mode: {vectors.info.get('mode')}, pooling: {vectors.info.get('pooling')}",
        f"shared layer: {vectors.info.get('shared_layer')}",
        f"separating (held-out AUROC >= threshold): {int(traits['separates'].sum())} / {len(traits)}",
    ]
    return atomic_write_text(Path(folder) / "summary.txt", "\n".join(lines) + "\n")
