"""Training a re-alignment trail: the source adapter loaded *trainable*, a fresh optimizer and warm-up,
a dense checkpoint trail, and resuming after a kill exactly like the fine-tuning trail.

The loop, the checkpoint trail callback, the cleaning of what a kill leaves behind and the resume
from the last complete step folder are the finetune stage's own (:mod:`traitspace.finetune.trainer`);
only the model differs: instead of a fresh LoRA adapter, the source checkpoint's adapter is loaded
with ``is_trainable=True``. peft's default (``is_trainable=False``) loads an adapter for inference with
every weight frozen, and a Trainer then trains nothing without an error: :func:`load_trainable_adapter`
refuses a model with no trainable LoRA weight.
"""

from __future__ import annotations

import gc
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..core.artifacts import Stage, atomic_write_json, read_json
from ..core.checkpoints import PLAN_FILE, RESUME_DIRNAME, TRAINING_LOG_FILE, Checkpoint, list_checkpoints
from ..core.code_versions import code_version
from ..core.config import RunConfig
from ..core.models import LoadedModel, load_model
from ..finetune.batching import total_optimizer_steps
from ..finetune.data import tokenize_rows
# The finetune trainer's own trail machinery, reused so both trails save and resume the same way.
from ..finetune.trainer import CheckpointsFromOtherParams, _clean_leftovers, _make_callbacks, build_trainer
from .plan import (
    RealignTrail,
    benign_rows,
    dense_schedule,
    realign_finetune_section,
    realign_root,
    trail_params_hash,
)


class AdapterNotTrainable(RuntimeError):
    """A LoRA adapter was loaded without trainable weights: training it would change nothing."""


def load_trainable_adapter(loaded: LoadedModel, adapter_path: str | Path, trainable: bool = True):
    """The loaded base model wrapped in the adapter saved at ``adapter_path``, its LoRA weights
    trainable. ``trainable=False`` is peft's default and exists only so a test can show the failure
    this guards against: it raises :class:`AdapterNotTrainable`."""
    from peft import PeftModel, prepare_model_for_kbit_training

    model = loaded.model
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_quantized", False):
        # QLoRA, as attach_lora prepares it: layer norms in float32, input gradients on.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model.config.use_cache = False  # as attach_lora: the KV cache is useless in training
    peft_model = PeftModel.from_pretrained(model, str(adapter_path), is_trainable=trainable)
    trainable_lora = [name for name, parameter in peft_model.named_parameters()
                      if parameter.requires_grad and "lora_" in name]
    if not trainable_lora:
        raise AdapterNotTrainable(
            f"the adapter at {adapter_path} was loaded with no trainable LoRA weight (peft's is_trainable=False): "
            "training would silently change nothing")
    return peft_model


@dataclass
class RealignResult:
    """What training one re-alignment trail produced (or found finished)."""

    trail: RealignTrail
    folder: Path
    checkpoints: list[Checkpoint]     # step 0 = the source checkpoint
    trained_now: bool
    resumed_from_step: int
    total_steps: int
    seconds: float
    summary: dict = field(default_factory=dict)


def realign_checkpoints(run_dir: str | Path, trail: RealignTrail) -> list[Checkpoint]:
    """The trail's complete checkpoints, step 0 being the source checkpoint (its adapter path)."""
    listed = list_checkpoints(realign_root(run_dir), trail.label, trail.seed)
    return [Checkpoint(trail.label, 0, trail.source.adapter_path, trail.seed), *listed[1:]]


def train_realign_trail(config: RunConfig, trail: RealignTrail, em_control: tuple[str, str], progress: bool = True,
                        extra_callbacks: Sequence = ()) -> RealignResult:
    """Continue ``trail.source`` on its benign rows to the end of the dense schedule, resuming from
    the last complete checkpoint; a finished trail (same params hash) returns at once, and a folder
    trained with other parameters is an error, never silently deleted (as for fine-tuning)."""
    run_dir = config.run_dir
    folder = trail.folder(run_dir)
    label = f"realign {trail.label} seed {trail.seed}"
    params_hash = trail_params_hash(config, trail)
    stage = Stage(folder, params_hash, code_version=code_version("realign.training"))
    started = time.perf_counter()
    plan_path = folder / PLAN_FILE
    if plan_path.is_file() and read_json(plan_path).get("params_hash") != params_hash:
        raise CheckpointsFromOtherParams(
            f"{folder} holds re-alignment checkpoints trained with other parameters or from other source weights "
            f"(params hash {read_json(plan_path).get('params_hash')} there, {params_hash} now). Give this run a new "
            f"run.name, or delete {folder} to retrain.")
    if stage.is_done():
        shutil.rmtree(folder / RESUME_DIRNAME, ignore_errors=True)
        manifest = stage.manifest()
        total = int(manifest["total_steps"])
        return RealignResult(trail, folder, realign_checkpoints(run_dir, trail), False, total, total, 0.0, manifest)

    finetune = realign_finetune_section(config)
    loaded = load_model(config.model)
    rows = benign_rows(config, trail, em_control)
    examples, report = tokenize_rows(loaded, rows, finetune.max_length, finetune.loss_on)
    if not examples:
        raise ValueError(f"{label}: none of its {len(rows)} rows fit the max_length of {finetune.max_length}")
    total_steps = total_optimizer_steps(len(examples), finetune.batch_size, finetune.grad_accum, finetune.epochs)
    schedule = dense_schedule(total_steps, config.realign.save_every)
    if not plan_path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(plan_path, {"params_hash": params_hash, **trail.describe(),
                                      "source_adapter": str(trail.source.adapter_path), "total_steps": total_steps,
                                      "schedule": schedule, "training": finetune.model_dump(mode="json"),
                                      "tokenization": asdict(report)})

    last_step = realign_checkpoints(run_dir, trail)[-1].step
    resumable = _clean_leftovers(folder, last_step)
    if last_step > 0 and resumable is None and last_step < total_steps:
        print(f"[{label}] no trainer state for step {last_step}; training again from the source", flush=True)
        last_step = 0
    train_seconds = 0.0
    if last_step < total_steps:
        if progress:
            where = f"resuming after step {last_step}" if last_step else f"from {trail.source.condition} step {trail.source.step}"
            print(f"[{label}] {len(examples)} examples, {total_steps} steps, {where}", flush=True)
        peft_model = load_trainable_adapter(loaded, trail.source.adapter_path)
        callbacks = [*_make_callbacks(trail.label, trail.seed, folder, schedule, total_steps, progress), *extra_callbacks]
        trainer = build_trainer(loaded, peft_model, examples, finetune, folder / RESUME_DIRNAME, total_steps, callbacks,
                                seed=trail.seed)
        train_started = time.perf_counter()
        # A fresh optimizer and schedule from the source's weights; only our own killed run is resumed.
        trainer.train(resume_from_checkpoint=str(resumable) if last_step else None)
        train_seconds = time.perf_counter() - train_started
        del trainer, peft_model
    del loaded
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    checkpoints = realign_checkpoints(run_dir, trail)
    missing = sorted(set(schedule) - {checkpoint.step for checkpoint in checkpoints})
    if missing:
        raise RuntimeError(f"[{label}] training ended without checkpoints at steps {missing}")
    summary = {**trail.describe(), "total_steps": total_steps, "schedule": schedule, "n_examples": len(examples),
               "resumed_from_step": last_step, "train_seconds_this_process": round(train_seconds, 2),
               "final_loss": read_json(checkpoints[-1].adapter_path / TRAINING_LOG_FILE)["losses"][-1]["loss"]}
    shutil.rmtree(folder / RESUME_DIRNAME, ignore_errors=True)
    stage.mark_done(summary)
    return RealignResult(trail, folder, checkpoints, last_step < total_steps, last_step, total_steps,
                         time.perf_counter() - started, summary)


def train_realign_trails(config: RunConfig, trails: Sequence[RealignTrail], pairs: dict[str, str], progress: bool = True,
                         callback_factory: Callable[[RealignTrail], Sequence] | None = None) -> list[RealignResult]:
    """Every trail in order (each resumes or skips on its own)."""
    results = []
    iterator = trails
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(trails, desc="re-alignment trails")
    for trail in iterator:
        results.append(train_realign_trail(config, trail, (trail.pair, pairs[trail.pair]), progress=progress,
                                           extra_callbacks=callback_factory(trail) if callback_factory else ()))
    return results
