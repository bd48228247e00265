"""The extraction stage: run the plan on a model (:func:`extract_vectors`), save everything into
``<run>/traits/`` (:func:`save_extraction`) and cache it by the parameters' hash
(:func:`run_extraction`). What notebook 02 shows of it is in :mod:`.report`.

A rerun with the same model, ``extract`` parameters and library files loads the stored vectors
instead of touching the model (:class:`traitspace.core.artifacts.Stage`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..core.artifacts import Stage, atomic_path
from ..core.code_versions import code_version
from ..core.config import ExtractSection, RunConfig
from ..library import TraitLibrary
from ..library.traits import load_library
from .capture import CaptureCounts, capture_prompts, generate_and_capture
from .controls import CONTROL_KIND
from .crossval import NO_FOLDS_NOTE
from .fit import FittedDirection, ResponseJudge, choose_layers, fit_owner, judge_keep
from .plan import build_plan, chunks_by_owner, control_entries, extraction_questions, selected_traits
from .vectors import (FORMAT_VERSION, LAYER_CONVENTION, OUTPUT_FOLDER, VECTORS_FILE, TraitVectors,
                      load_trait_vectors)

_CHUNK_ROWS = 2048  # conversations whose activations are held in memory at once (~140 MB for SmolLM2)


@dataclass
class Extraction:
    """Everything :func:`extract_vectors` computes (held in memory; :func:`save_extraction` writes it).

    ``vectors``: name -> ``[L, H]`` float32 raw mean differences (traits, then ``assistant_axis``;
    never the controls); ``metadata``: one row per vector (see
    :data:`traitspace.extract.vectors.METADATA_COLUMNS`); ``controls``: the control contrasts' rows,
    same columns; ``separation``: held-out-question ``auroc``, ``cohens_d``, ``mean_gap`` per
    (``trait``, ``layer``), controls included; ``heldout_projections``: each held-out conversation's
    projection at its vector's layer; ``instruction_folds``: one row per vector and instruction fold
    (:data:`traitspace.extract.crossval.FOLD_COLUMNS`); ``responses``: the generated answers
    (response mode) with the judge's verdicts, else None.
    """

    vectors: dict[str, np.ndarray]
    metadata: pd.DataFrame
    separation: pd.DataFrame
    heldout_projections: pd.DataFrame
    plan: pd.DataFrame
    controls: pd.DataFrame = field(default_factory=pd.DataFrame)
    instruction_folds: pd.DataFrame = field(default_factory=pd.DataFrame)
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
    library = library or load_library(settings.library)
    plan = build_plan(library, settings)
    entries = {entry.name: entry for entry in [*selected_traits(library, settings), *control_entries(settings)]}
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
            fitted[owner] = fit_owner(owner, rows, activations[mask], keep, settings.heldout_fraction, settings.seed)
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
        "library": settings.library,
        "n_instruction_pairs": settings.n_instruction_pairs,
        "instruction_folds": len(choice.instruction_folds["heldout_pair"].unique()),
        "instruction_note": NO_FOLDS_NOTE if settings.n_instruction_pairs < 2 else
        f"GroupKFold over {settings.n_instruction_pairs} instruction pairs, one fold each: a fold fits on the "
        f"other pairs' fitting questions and scores its pair's held-out questions",
        "n_conversations": len(plan),
        "tokens_run": counts.tokens_run,
        "tokens_without_prefix_sharing": counts.tokens_plain,
        "judge": getattr(judge, "__name__", type(judge).__name__) if judge is not None else None,
    }
    is_control = (choice.metadata["kind"] == CONTROL_KIND).to_numpy()
    return Extraction(
        vectors={name: item.direction for name, item in fitted.items() if item.kind != CONTROL_KIND},
        metadata=choice.metadata[~is_control].reset_index(drop=True),
        controls=choice.metadata[is_control].reset_index(drop=True),
        separation=choice.separation,
        heldout_projections=choice.heldout_projections,
        instruction_folds=choice.instruction_folds,
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


def _records(table: pd.DataFrame) -> str:
    """A table as JSON records for the file header (nan as null)."""
    return table.to_json(orient="records") if len(table) else "[]"


def save_extraction(extraction: Extraction, folder: str | Path, model_info: Mapping[str, Any], params_hash: str) -> Path:
    """Write ``vectors.safetensors`` (one ``[L, H]`` tensor per vector, metadata and the controls'
    rows in its header), ``metadata.csv/.parquet``, ``controls.csv``, ``separation_by_layer.csv``,
    ``heldout_projections.csv``, ``instruction_folds.csv``, ``plan.csv`` and (response mode)
    ``responses.csv/.parquet`` into ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    header = {
        "format": FORMAT_VERSION,
        "layer_convention": LAYER_CONVENTION,
        "model_source": str(model_info.get("source")),
        "model": json.dumps(dict(model_info), default=str),
        "params_hash": params_hash,
        "vectors": _records(extraction.metadata),
        "controls": _records(extraction.controls),
        **{key: json.dumps(value, default=str) for key, value in extraction.info.items()},
    }
    tensors = {name: torch.from_numpy(np.ascontiguousarray(vector)) for name, vector in extraction.vectors.items()}
    with atomic_path(folder / VECTORS_FILE) as temporary:
        save_file(tensors, str(temporary), metadata=header)
    _write_table(extraction.metadata, folder, "metadata")
    _write_table(extraction.separation, folder, "separation_by_layer", parquet=False)
    _write_table(extraction.heldout_projections, folder, "heldout_projections", parquet=False)
    _write_table(extraction.controls, folder, "controls", parquet=False)
    _write_table(extraction.instruction_folds, folder, "instruction_folds", parquet=False)
    _write_table(extraction.plan, folder, "plan", parquet=False)
    if extraction.responses is not None:
        _write_table(extraction.responses, folder, "responses")
    return folder / VECTORS_FILE


def library_fingerprint(source: str) -> str | None:
    """Short sha256 of a library folder's files (names and bytes), so that editing a folder's traits
    invalidates the cache; None for the built-in library (it changes with the package)."""
    if source == "builtin":
        return None
    folder = Path(source).expanduser()
    digest = hashlib.sha256()
    for file in sorted(path for path in folder.rglob("*") if path.is_file() and path.suffix in (".json", ".yaml", ".yml")):
        digest.update(str(file.relative_to(folder)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def stage_hash(config: RunConfig, judge: ResponseJudge | None = None) -> str:
    """Cache key of the extraction stage: the model and extract sections, a library folder's
    contents, and the judge, if any."""
    key = config.params_hash("model", "extract")
    fingerprint = library_fingerprint(config.extract.library)
    if fingerprint is not None:
        key += f"+library={fingerprint}"
    return key if judge is None else f"{key}+judge={getattr(judge, '__name__', type(judge).__name__)}"


def extraction_stage(config: RunConfig, judge: ResponseJudge | None = None) -> Stage:
    """The stage ``<run>/traits/``, keyed by :func:`stage_hash` and the extraction code's version
    (``extraction_stage(config).is_done()`` says whether :func:`run_extraction` will load, not compute)."""
    return Stage(config.run_dir / OUTPUT_FOLDER, params_hash=stage_hash(config, judge), code_version=code_version("extract"))


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
    stage = extraction_stage(config, judge)
    if stage.is_done():
        return load_trait_vectors(stage.path)
    if judge is not None and config.extract.mode != "response":
        raise ValueError("a judge filters generated answers; it needs extract.mode: response")
    if loaded is None:
        from ..core.models import load_model

        loaded = load_model(config.model)
    extraction = extract_vectors(loaded, config.extract, library=library, judge=judge, progress=progress)
    save_extraction(extraction, stage.path, loaded.info, stage.params_hash)
    stage.mark_done({
        "timings": extraction.timings,
        "n_vectors": len(extraction.vectors),
        **validity_counts(extraction.metadata, extraction.controls),
        **{key: value for key, value in extraction.info.items() if key not in ("questions",)},
    })
    return load_trait_vectors(stage.path)


def validity_counts(metadata: pd.DataFrame, controls: pd.DataFrame) -> dict[str, Any]:
    """The stage summary: traits separating on held-out questions and on held-out instructions, the
    controls separating on each, the best control's AUROC, and the traits whose AUROC beats it
    (strictly)."""
    traits = metadata[~metadata["kind"].isin(["axis", CONTROL_KIND])]
    counts: dict[str, Any] = {"n_traits": len(traits), "n_controls": len(controls)}
    for heldout in ("questions", "instructions"):
        auroc = traits[f"auroc_heldout_{heldout}"]
        best = controls[f"auroc_heldout_{heldout}"].max() if len(controls) else np.nan
        counts[f"n_separating_heldout_{heldout}"] = int(traits[f"separates_heldout_{heldout}"].eq(True).sum())
        counts[f"best_control_auroc_heldout_{heldout}"] = None if pd.isna(best) else round(float(best), 4)
        counts[f"n_beating_best_control_heldout_{heldout}"] = None if pd.isna(best) else int((auroc > best).sum())
        counts[f"n_controls_separating_heldout_{heldout}"] = (
            int(controls[f"separates_heldout_{heldout}"].eq(True).sum()) if len(controls) else 0)
    return counts
