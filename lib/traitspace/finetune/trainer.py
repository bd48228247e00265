"""Training the conditions: the Trainer, its callbacks, the checkpoint trail and resuming.

One call, :func:`train_all`, trains every condition of ``config.finetune`` once per training seed
(``finetune.seeds``) with identical settings, so an EM dataset and its matched control differ only in
their data, and two seeds of the same data differ only in their randomness (LoRA initialisation and
data order). Each (condition, seed) is one trail under ``checkpoints/<condition>/seed-<k>/``.

- The loop is transformers' ``Trainer`` with a peft LoRA adapter (:mod:`.lora`). Only three pieces
  are our own, each for a stated reason: the loss mask (:mod:`.data`: it must come from the model's
  own chat template spans), the collator and the sampler (:mod:`.batching`).
- Checkpoints are saved at a log-spaced schedule (dense early, sparse late; see
  :func:`traitspace.core.checkpoints.checkpoint_schedule`), each as an adapter-only folder with the loss so
  far. The latest full trainer checkpoint (optimizer, scheduler, RNG state) is kept beside them for
  resuming: a killed run continues from its last complete checkpoint, and a finished condition is
  never retrained.
"""

from __future__ import annotations

import gc
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..core.artifacts import Stage, atomic_directory, atomic_write_json, read_json
from ..core.checkpoints import (
    ADAPTER_FILES,
    PLAN_FILE,
    RESUME_DIRNAME,
    TRAINER_STATE_FILE,
    TRAINING_LOG_FILE,
    Checkpoint,
    checkpoint_schedule,
    list_checkpoints,
    step_folder_name,
    trail_dir,
)
from ..core.config import FinetuneSection, RunConfig
from ..core.code_versions import code_version
from ..core.integrity import damaged_files
from ..core.models import LoadedModel, load_model
from .batching import EpochSeededSampler, RightPaddingCollator, total_optimizer_steps
from .data import condition_params_hash, condition_sources, load_condition_rows, tokenize_rows
from .lora import attach_lora


class CheckpointsFromOtherParams(RuntimeError):
    """A condition folder holds checkpoints trained with different parameters."""


# -- the trainer and its callbacks ---------------------------------------------------------------
def _trainer_class():
    from transformers import Trainer

    class SeededSamplerTrainer(Trainer):
        """transformers' Trainer with :class:`EpochSeededSampler` as its training sampler."""

        def __init__(self, *args, group_by_length: bool = True, **kwargs):
            self._group_by_length = group_by_length
            super().__init__(*args, **kwargs)

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            group_size = self.args.train_batch_size * self.args.gradient_accumulation_steps if self._group_by_length else None
            return EpochSeededSampler([len(item["input_ids"]) for item in dataset], group_size, self.args.data_seed)

    return SeededSamplerTrainer


def loss_history(log_history: Sequence[dict]) -> list[dict]:
    """Per-step training records (step, epoch, loss, learning rate, gradient norm) from a Trainer log."""
    keys = ("step", "epoch", "loss", "learning_rate", "grad_norm")
    return [{key: entry.get(key) for key in keys} for entry in log_history if "loss" in entry]


def _make_callbacks(condition: str, seed: int, folder: Path, schedule: Sequence[int], total_steps: int, progress: bool):
    from transformers import TrainerCallback

    class CheckpointTrail(TrainerCallback):
        """Saves at the scheduled steps; after each save, copies the adapter into its step folder in
        one rename and drops older full trainer checkpoints (the newest is kept for resuming)."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in schedule:
                control.should_save = True
            return control

        def on_save(self, args, state, control, **kwargs):
            step = state.global_step
            source = Path(args.output_dir) / f"checkpoint-{step}"
            with atomic_directory(folder / step_folder_name(step)) as temporary:
                for name in ADAPTER_FILES:
                    shutil.copy2(source / name, temporary / name)
                shutil.copy2(source / TRAINER_STATE_FILE, temporary / TRAINER_STATE_FILE)
                atomic_write_json(temporary / TRAINING_LOG_FILE, {
                    "condition": condition,
                    "seed": seed,
                    "step": step,
                    "total_steps": total_steps,
                    "epoch": state.epoch,
                    "losses": loss_history(state.log_history),
                })
            # Only now is the older full checkpoint redundant: the newer step folder exists.
            for older in Path(args.output_dir).glob("checkpoint-*"):
                if older.name != source.name:
                    shutil.rmtree(older, ignore_errors=True)
            return control

    class Progress(TrainerCallback):
        """A line every ~10% of the run (the Trainer's own per-step printing is removed)."""

        def __init__(self):
            self.started = time.perf_counter()
            self.every = max(total_steps // 10, 1)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if progress and logs and "loss" in logs and (state.global_step % self.every == 0 or state.global_step == total_steps):
                elapsed = time.perf_counter() - self.started
                print(f"[{condition} seed {seed}] step {state.global_step}/{total_steps}  loss {logs['loss']:.3f}  ({elapsed:.0f} s)", flush=True)
            return control

    return [CheckpointTrail(), Progress()]


def checkpointing_arguments(arguments_class, enabled: bool) -> dict:
    """Activation checkpointing under the name this transformers release knows: recent releases
    call it ``activation_checkpointing``, earlier 5.x and 4.x ones ``gradient_checkpointing`` (a GPU
    image pinned to one of those would otherwise fail before the first step)."""
    import inspect

    known = inspect.signature(arguments_class.__init__).parameters
    name = "activation_checkpointing" if "activation_checkpointing" in known else "gradient_checkpointing"
    return {name: enabled, f"{name}_kwargs": {"use_reentrant": False}}


def save_schedule(finetune, total_steps: int) -> list[int]:
    """The steps a run of ``total_steps`` saves at (what training does and what the plan counts)."""
    return checkpoint_schedule(total_steps, finetune.n_checkpoints, first_moving_step(finetune, total_steps))


def first_moving_step(finetune, total_steps: int) -> int:
    """The first optimizer step after which the adapter differs from its start: 2 under a learning-
    rate warm-up (transformers' warm-up schedules give the first step learning rate 0, so a checkpoint
    at step 1 would measure the base model again), else 1."""
    from types import SimpleNamespace

    from transformers import TrainingArguments

    if finetune.lr_scheduler == "constant" or finetune.warmup_ratio == 0:
        return 1
    arguments = {"warmup_steps": 0, "warmup_ratio": 0.0, **warmup_arguments(TrainingArguments, finetune.warmup_ratio)}
    warmup = TrainingArguments.get_warmup_steps(SimpleNamespace(**arguments), total_steps)
    return 2 if warmup >= 1 and total_steps >= 2 else 1


def warmup_arguments(arguments_class, ratio: float) -> dict:
    """A linear warmup over ``ratio`` of the total steps, under the name this transformers release
    reads as a ratio: 5.x takes a float below 1 in ``warmup_steps`` (and deprecates ``warmup_ratio``),
    4.x reads ``warmup_steps`` as a step count (0.03 would mean no warmup) and needs ``warmup_ratio``.
    Asked of the release's own ``get_warmup_steps`` rather than of its version number."""
    from types import SimpleNamespace

    reads_ratio = arguments_class.get_warmup_steps(SimpleNamespace(warmup_steps=0.5, warmup_ratio=0.0), 10) == 5
    return {"warmup_steps": ratio} if reads_ratio else {"warmup_ratio": ratio}


def build_trainer(
    loaded: LoadedModel,
    peft_model,
    examples: Sequence[dict],
    finetune: FinetuneSection,
    output_dir: Path,
    max_steps: int,
    callbacks: Sequence = (),
    seed: int = 0,
):
    """A Trainer for ``peft_model`` on pre-tokenized ``examples`` (saving only when a callback asks);
    ``seed`` drives the training randomness and the data order together."""
    from transformers import PrinterCallback, ProgressCallback, TrainingArguments

    device = loaded.device
    # The compute dtype the model was loaded with (after QLoRA preparation some weights are float32).
    dtype_name = str(loaded.info.get("dtype", ""))
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=finetune.batch_size,
        gradient_accumulation_steps=finetune.grad_accum,
        learning_rate=finetune.learning_rate,
        max_steps=max_steps,
        lr_scheduler_type=finetune.lr_scheduler,
        **warmup_arguments(TrainingArguments, finetune.warmup_ratio),
        weight_decay=finetune.weight_decay,
        max_grad_norm=finetune.max_grad_norm,
        optim=finetune.optimizer,
        seed=seed,
        data_seed=seed,  # the order examples are seen in (the rows themselves come from finetune.data_seed)
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="no",  # the CheckpointTrail callback decides when to save
        save_only_model=False,  # keep optimizer, scheduler and RNG state for a faithful resume
        **checkpointing_arguments(TrainingArguments, finetune.gradient_checkpointing),
        bf16=device.type != "cpu" and dtype_name.endswith("bfloat16"),
        fp16=device.type != "cpu" and dtype_name.endswith("float16") and not dtype_name.endswith("bfloat16"),
        use_cpu=device.type == "cpu",
        remove_unused_columns=False,
        label_names=["labels"],
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = _trainer_class()(
        model=peft_model,
        args=args,
        train_dataset=list(examples),
        data_collator=RightPaddingCollator(loaded.tokenizer.pad_token_id),
        callbacks=list(callbacks),
        group_by_length=finetune.group_by_length,
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


# -- one condition, all conditions ---------------------------------------------------------------
@dataclass
class ConditionResult:
    """What training one trail (a condition under one seed) produced (or found already finished)."""

    condition: str
    seed: int
    folder: Path
    checkpoints: list[Checkpoint]
    trained_now: bool
    resumed_from_step: int
    total_steps: int
    seconds: float
    summary: dict = field(default_factory=dict)


def _clean_leftovers(folder: Path, keep_step: int | None) -> Path | None:
    """Remove what a killed run may have left half-written; return the resumable trainer checkpoint.

    Half-written step folders are hidden temporaries (``.step-...``) that never got renamed. The full
    trainer checkpoint is trusted only at the step of the last complete step folder, because that
    folder is written after the trainer checkpoint finished; any later trainer checkpoint may be
    partial and is removed.
    """
    for leftover in folder.glob(".step-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    resume_root = folder / RESUME_DIRNAME
    resumable = None
    if resume_root.is_dir():
        for candidate in resume_root.glob("checkpoint-*"):
            if keep_step and candidate.name == f"checkpoint-{keep_step}":
                resumable = candidate
            else:
                shutil.rmtree(candidate, ignore_errors=True)
    return resumable


def train_condition(
    config: RunConfig,
    condition: str,
    progress: bool = True,
    extra_callbacks: Sequence = (),
    seed: int | None = None,
) -> ConditionResult:
    """Train one trail (``condition`` under training ``seed``, default the first of
    ``finetune.seeds``) to the end of its schedule, resuming from its last complete checkpoint.

    A finished trail (same params hash) returns at once. Checkpoints left by different params are
    an error (``CheckpointsFromOtherParams``) rather than silently deleted: they may be hours of work.
    """
    finetune = config.finetune
    seed = finetune.seeds[0] if seed is None else seed
    label = f"{condition} seed {seed}"
    folder = trail_dir(config.run_dir, condition, seed)
    params_hash = condition_params_hash(config, condition, seed)
    stage = Stage(folder, params_hash, code_version=code_version("finetune.training"))
    started = time.perf_counter()
    plan_path = folder / PLAN_FILE
    # A file of a finished trail damaged later (integrity.damaged_files): its step folder and every later
    # one go (they were trained from it), or the damaged plan file, so the trail trains again. The
    # optimizer state to resume mid-trail is not kept once a trail is done: it retrains from step 0
    # (same seed, same weights).
    for problem in damaged_files(folder, params_hash):
        print(f"[{label}] {problem.what}: {folder / problem.file}; training this trail again", flush=True)
        damaged = folder / Path(problem.file).parts[0]
        if damaged.name.startswith("step-"):  # zero-padded: later steps sort after
            for step_folder in folder.glob("step-*"):
                if step_folder.name >= damaged.name:
                    shutil.rmtree(step_folder)
        else:
            damaged.unlink(missing_ok=True)
    if plan_path.is_file() and read_json(plan_path).get("params_hash") != params_hash:
        raise CheckpointsFromOtherParams(
            f"{folder} holds checkpoints trained with other parameters (params hash "
            f"{read_json(plan_path).get('params_hash')} there, {params_hash} now). Give this run a new "
            f"run.name, or delete {folder} to retrain."
        )
    if stage.is_done():
        shutil.rmtree(folder / RESUME_DIRNAME, ignore_errors=True)
        manifest = stage.manifest()
        total_steps = int(manifest["total_steps"])
        return ConditionResult(condition, seed, folder, list_checkpoints(config.run_dir, condition, seed), trained_now=False,
                               resumed_from_step=total_steps, total_steps=total_steps, seconds=0.0, summary=manifest)

    loaded = load_model(config.model)
    rows = load_condition_rows(finetune, condition)
    examples, report = tokenize_rows(loaded, rows, finetune.max_length, finetune.loss_on)
    if not examples:
        raise ValueError(f"condition {condition!r}: none of its {len(rows)} rows fit finetune.max_length={finetune.max_length}")
    total_steps = total_optimizer_steps(len(examples), finetune.batch_size, finetune.grad_accum, finetune.epochs)
    schedule = save_schedule(finetune, total_steps)
    if not plan_path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(plan_path, {
            "params_hash": params_hash,
            "condition": condition,
            "seed": seed,
            "source": condition_sources(finetune)[condition],
            "model": config.model.model_dump(mode="json"),
            "finetune": finetune.model_dump(mode="json"),
            "total_steps": total_steps,
            "schedule": schedule,
            "tokenization": asdict(report),
        })

    done_steps = [checkpoint.step for checkpoint in list_checkpoints(config.run_dir, condition, seed)]
    last_step = done_steps[-1]
    resumable = _clean_leftovers(folder, last_step)
    if last_step > 0 and resumable is None and last_step < total_steps:
        print(f"[{label}] no trainer state for step {last_step}; training again from step 0", flush=True)
        last_step = 0

    train_seconds = 0.0
    padding = {"real_tokens": 0, "padded_tokens": 0}
    if last_step < total_steps:
        if progress:
            where = f"resuming after step {last_step}" if last_step else "from the base model"
            print(f"[{label}] {len(examples)} examples, {total_steps} steps, {where}", flush=True)
        peft_model = attach_lora(loaded, finetune, seed)
        callbacks = [*_make_callbacks(condition, seed, folder, schedule, total_steps, progress), *extra_callbacks]
        trainer = build_trainer(loaded, peft_model, examples, finetune, folder / RESUME_DIRNAME, total_steps, callbacks,
                                seed=seed)
        train_started = time.perf_counter()
        trainer.train(resume_from_checkpoint=str(resumable) if last_step else None)
        train_seconds = time.perf_counter() - train_started
        collator = trainer.data_collator
        padding = {"real_tokens": collator.real_tokens, "padded_tokens": collator.padded_tokens}
        del trainer, peft_model
    # Free this trail's model before the next one loads (the Trainer holds reference cycles).
    del loaded
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    checkpoints = list_checkpoints(config.run_dir, condition, seed)
    missing = sorted(set(schedule) - {checkpoint.step for checkpoint in checkpoints})
    if missing:
        raise RuntimeError(f"[{label}] training ended without checkpoints at steps {missing}")
    summary = {
        "condition": condition,
        "seed": seed,
        "total_steps": total_steps,
        "schedule": schedule,
        "n_examples": len(examples),
        "tokenization": asdict(report),
        "resumed_from_step": last_step,
        "train_seconds_this_process": round(train_seconds, 2),
        "tokens_per_second_this_process": round(padding["real_tokens"] / train_seconds, 1) if train_seconds else None,
        "padding_share_this_process": (1 - padding["real_tokens"] / padding["padded_tokens"]) if padding["padded_tokens"] else None,
        "final_loss": read_json(checkpoints[-1].adapter_path / TRAINING_LOG_FILE)["losses"][-1]["loss"],
    }
    # The resume state goes first: the manifest records the files that stay.
    shutil.rmtree(folder / RESUME_DIRNAME, ignore_errors=True)
    stage.mark_done(summary)
    return ConditionResult(condition, seed, folder, checkpoints, last_step < total_steps, last_step, total_steps,
                           time.perf_counter() - started, summary)


def train_all(
    config: RunConfig, progress: bool = True, callback_factory: Callable[[str, int], Sequence] | None = None
) -> dict[tuple[str, int], ConditionResult]:
    """Train every condition in ``config.finetune.conditions`` once per seed in ``finetune.seeds``
    (each trail resumes or skips on its own), seed by seed so that a stopped run has whole seeds.

    ``callback_factory(condition, seed)`` returns extra Trainer callbacks for that trail (the live
    trait monitor, for instance).
    """
    return {
        (condition, seed): train_condition(config, condition, progress=progress, seed=seed,
                                           extra_callbacks=callback_factory(condition, seed) if callback_factory else ())
        for seed in config.finetune.seeds
        for condition in condition_sources(config.finetune)
    }
