"""LoRA / QLoRA fine-tuning of the configured chat model on each condition, leaving a checkpoint trail.

One call, :func:`train_all`, trains every condition of ``config.finetune`` with identical settings and
the same data-order seed, so an EM dataset and its matched control differ only in their data.

- The loop is transformers' ``Trainer`` with a peft LoRA adapter (QLoRA when the model is loaded in
  4-bit NF4: ``model.quantization: nf4``). Only three pieces are our own, each for a stated reason:
  the loss mask (it must come from the model's own chat template spans), the collator (right padding
  whatever the tokenizer's padding side, and it counts padding), and the sampler (length grouping whose
  order depends on the data seed and the epoch only, so a resumed run replays the same order).
- Response-only loss trains the answer tokens plus the end-of-turn token that follows them (so the
  model learns to stop); the system prompt, the user turn and the template's role markers are masked.
- Checkpoints are saved at a log-spaced schedule (dense early, sparse late; see
  :func:`traitspace.core.checkpoints.checkpoint_schedule`), each as an adapter-only folder with the loss so
  far. The latest full trainer checkpoint (optimizer, scheduler, RNG state) is kept beside them for
  resuming: a killed run continues from its last complete checkpoint, and a finished condition is
  never retrained.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import random
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Any, Iterator, Literal, Sequence

import numpy as np
import torch

from .core.padding import pad_rows
from .core.artifacts import Stage, atomic_directory, atomic_write_json, read_json
from .core.chat import ChatFormat, TokenizedChat
from .core.checkpoints import (
    ADAPTER_FILES,
    PLAN_FILE,
    RESUME_DIRNAME,
    TRAINER_STATE_FILE,
    TRAINING_LOG_FILE,
    Checkpoint,
    checkpoint_schedule,
    condition_dir,
    list_checkpoints,
    step_folder_name,
)
from .core.config import FinetuneSection, ModelSection, RunConfig
from .core.models import LoadedModel, load_model, resolve_source

IGNORE_INDEX = -100  # label value the causal-LM loss skips


class CheckpointsFromOtherParams(RuntimeError):
    """A condition folder holds checkpoints trained with different parameters."""


# -- data ------------------------------------------------------------------------------------------
def condition_sources(finetune: FinetuneSection) -> dict[str, str]:
    """Condition name -> built-in dataset name or JSONL path, in the order the params list them."""
    if isinstance(finetune.conditions, dict):
        return dict(finetune.conditions)
    return {name: name for name in finetune.conditions}


def _as_row(item: Any, where: str) -> dict:
    if isinstance(item, dict) and "messages" in item:
        return {"messages": list(item["messages"]), "meta": dict(item.get("meta") or {})}
    if isinstance(item, list):
        return {"messages": list(item), "meta": {}}
    raise ValueError(f"{where}: expected a conversation (list of messages or {{'messages': [...]}}), got {type(item).__name__}")


def load_condition_rows(finetune: FinetuneSection, condition: str) -> list[dict]:
    """The rows one condition trains on: ``[{"messages": [...], "meta": {...}}]``.

    Built-in datasets are drawn with ``build_dataset(name, n_examples, seed=data_seed)``; a JSONL file
    is read whole and, when ``n_examples`` is set, subsampled with the same seed (file order kept).
    """
    from . import em_data

    sources = condition_sources(finetune)
    if condition not in sources:
        raise KeyError(f"unknown condition {condition!r}; finetune.conditions has {list(sources)}")
    source = sources[condition]
    if source in em_data.DATASETS:
        try:
            rows = em_data.build_dataset(source, n=finetune.n_examples, seed=finetune.data_seed)
        except ValueError as error:
            raise ValueError(f"finetune.n_examples={finetune.n_examples} for condition {condition!r}: {error}") from None
        return [_as_row(row, f"dataset {source} row {index}") for index, row in enumerate(rows)]
    rows = [_as_row(item, f"{source} line {index + 1}") for index, item in enumerate(em_data.load_conversations(source))]
    if finetune.n_examples is not None and finetune.n_examples < len(rows):
        keep = sorted(random.Random(finetune.data_seed).sample(range(len(rows)), finetune.n_examples))
        rows = [rows[index] for index in keep]
    return rows


def _file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()[:16]


def condition_params_hash(config: RunConfig, condition: str) -> str:
    """Hash of everything that shapes one condition's checkpoints: the model section, the fine-tuning
    settings (the list of other conditions excluded, so adding a condition keeps the finished ones) and
    this condition's data source (a JSONL file by content)."""
    finetune = config.finetune.model_dump(mode="json")
    finetune.pop("conditions")
    source = condition_sources(config.finetune)[condition]
    data = {
        "model": config.model.model_dump(mode="json"),
        "finetune": finetune,
        "condition": condition,
        "source": source,
        "source_sha256": _file_sha256(source) if source.endswith(".jsonl") else None,
    }
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# -- tokens and the loss mask ------------------------------------------------------------------------
@dataclass
class ChatTokenizer:
    """A model's tokenizer and chat format without its weights (enough to build training examples)."""

    tokenizer: Any
    chat: ChatFormat


def load_chat_tokenizer(spec: ModelSection) -> ChatTokenizer:
    """The tokenizer and chat format ``load_model(spec)`` would give, without loading the weights."""
    from transformers import AutoTokenizer

    resolved = resolve_source(spec.source)
    tokenizer = AutoTokenizer.from_pretrained(resolved, revision=spec.revision, trust_remote_code=spec.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # as load_model does
    return ChatTokenizer(tokenizer, ChatFormat(tokenizer, system_prompt=spec.system_prompt))


def special_token_ids(tokenizer) -> set[int]:
    """Ids of the tokenizer's special tokens: the named ones (bos, eos, pad, ...) and every added token
    flagged special, which is where chat templates' turn markers live."""
    ids = set(getattr(tokenizer, "all_special_ids", None) or [])
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    ids.update(token_id for token_id, token in added.items() if getattr(token, "special", False))
    return ids


def end_of_turn_length(input_ids: Sequence[int], response_end: int, special_ids: set[int]) -> int:
    """How many tokens after the answer belong to its end-of-turn marker and are trained.

    The marker is everything up to and including the first special token after the answer (Llama-3's
    ``<|eot_id|>``, ChatML's ``<|im_end|>``, Gemma's ``<end_of_turn>``); the newline some templates
    write after it is not trained, since generation stops at the special token. A template whose turn
    end has no special token gets its whole tail trained.
    """
    tail = input_ids[response_end:]
    for offset, token in enumerate(tail):
        if token in special_ids:
            return offset + 1
    return len(tail)


def training_labels(chat: TokenizedChat, loss_on: Literal["response", "all"], special_ids: set[int]) -> list[int]:
    """Labels for one tokenized conversation: token ids where the loss counts, IGNORE_INDEX elsewhere.

    ``loss_on="all"`` trains every token. ``"response"`` trains exactly the answer's tokens as the
    model's own template renders them (``chat.response_span``) plus the end-of-turn token after them.
    """
    ids = list(chat.input_ids)
    if loss_on == "all":
        return ids
    if loss_on != "response":
        raise ValueError(f"loss_on must be 'response' or 'all', got {loss_on!r}")
    if chat.response_span is None:
        raise ValueError("response-only loss needs a conversation that ends with an assistant answer")
    start, end = chat.response_span
    end += end_of_turn_length(ids, end, special_ids)  # nothing when max_length cut the answer
    labels = [IGNORE_INDEX] * len(ids)
    labels[start:end] = ids[start:end]
    return labels


@dataclass
class TokenizationReport:
    """What happened to a condition's rows on the way to training examples."""

    rows: int = 0
    kept: int = 0
    dropped_prompt_too_long: int = 0
    dropped_no_trained_tokens: int = 0
    answers_cut: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    longest: int = 0

    @property
    def mean_length(self) -> float:
        return self.tokens / self.kept if self.kept else 0.0


def tokenize_rows(
    loaded: LoadedModel | ChatTokenizer, rows: Sequence[dict], max_length: int, loss_on: Literal["response", "all"]
) -> tuple[list[dict[str, list[int]]], TokenizationReport]:
    """Training examples ``{"input_ids", "labels"}`` for rows ``{"messages": [...]}``.

    A row whose prompt alone exceeds ``max_length`` is dropped (cutting a prompt would train on a
    question the model never sees whole); a longer answer is cut at ``max_length`` and then has no
    end-of-turn token to learn. Drops and cuts are counted in the report.
    """
    special_ids = special_token_ids(loaded.tokenizer)
    report = TokenizationReport(rows=len(rows))
    examples = []
    for row in rows:
        full = loaded.chat.tokenize(row["messages"])
        if full.prompt_span[1] > max_length:
            report.dropped_prompt_too_long += 1
            continue
        chat = loaded.chat.tokenize(row["messages"], max_length=max_length) if len(full.input_ids) > max_length else full
        if len(full.input_ids) > max_length:
            report.answers_cut += 1
        labels = training_labels(chat, loss_on, special_ids)
        trained = sum(label != IGNORE_INDEX for label in labels)
        if trained == 0:
            report.dropped_no_trained_tokens += 1
            continue
        examples.append({"input_ids": list(chat.input_ids), "labels": labels})
        report.kept += 1
        report.tokens += len(chat.input_ids)
        report.trained_tokens += trained
        report.longest = max(report.longest, len(chat.input_ids))
    return examples, report


def mask_preview(loaded: LoadedModel | ChatTokenizer, messages: Sequence[dict], loss_on: Literal["response", "all"], max_length: int | None = None) -> dict[str, str]:
    """The rendered conversation split into the text the loss ignores and the text it trains on."""
    chat = loaded.chat.tokenize(messages, max_length=max_length)
    labels = training_labels(chat, loss_on, special_token_ids(loaded.tokenizer))
    masked = [token for token, label in zip(chat.input_ids, labels) if label == IGNORE_INDEX]
    trained = [token for token, label in zip(chat.input_ids, labels) if label != IGNORE_INDEX]
    return {
        "ignored by the loss": loaded.tokenizer.decode(masked),
        "trained on": loaded.tokenizer.decode(trained),
    }


# -- batching --------------------------------------------------------------------------------------
@dataclass
class RightPaddingCollator:
    """Pads a batch on the right and counts real and padding tokens.

    Our own rather than DataCollatorForSeq2Seq because that one pads on the tokenizer's side, and
    several chat tokenizers default to left padding (fine for generation, but it shifts position ids in
    training); counting padding here measures what length grouping saves.
    """

    pad_token_id: int
    real_tokens: int = 0
    padded_tokens: int = 0

    def __call__(self, features: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask, _ = pad_rows([feature["input_ids"] for feature in features], self.pad_token_id)
        labels, _, _ = pad_rows([feature["labels"] for feature in features], IGNORE_INDEX)
        self.real_tokens += int(attention_mask.sum())
        self.padded_tokens += attention_mask.numel()
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}

    @property
    def padding_share(self) -> float:
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0


class EpochSeededSampler(torch.utils.data.Sampler[int]):
    """Example order that depends only on (seed, epoch), optionally grouped by length.

    Our own because transformers' LengthGroupedSampler draws from the global RNG (so it follows the
    model seed, not ``data_seed``) and cannot replay a given epoch; here ``set_epoch`` (called by the
    Trainer every epoch, also when resuming) fixes the order, so a resumed run sees the same batches.
    Grouping uses transformers' own ``get_length_grouped_indices`` (mega-batches sorted by length).
    """

    def __init__(self, lengths: Sequence[int], group_size: int | None, seed: int):
        self.lengths = list(lengths)
        self.group_size = group_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        from transformers.trainer_pt_utils import get_length_grouped_indices

        state = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(state)
        if self.group_size:
            return iter(get_length_grouped_indices(self.lengths, self.group_size, generator=generator))
        return iter(torch.randperm(len(self.lengths), generator=generator).tolist())


def total_optimizer_steps(n_examples: int, batch_size: int, grad_accum: int, epochs: float) -> int:
    """Optimizer steps of a run, computed as transformers' Trainer does (last partial batch kept)."""
    batches = math.ceil(n_examples / batch_size)
    per_epoch = max(batches // grad_accum + int(batches % grad_accum > 0), 1)
    return max(math.ceil(epochs * per_epoch), 1)


# -- model -------------------------------------------------------------------------------------------
def lora_config(finetune: FinetuneSection):
    from peft import LoraConfig

    return LoraConfig(
        r=finetune.lora_r,
        lora_alpha=finetune.lora_alpha,
        lora_dropout=finetune.lora_dropout,
        target_modules=finetune.target_modules,
        use_rslora=finetune.use_rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )


def attach_lora(loaded: LoadedModel, finetune: FinetuneSection):
    """Wrap the loaded model in a fresh, trainable LoRA adapter (initialised from ``finetune.seed``)."""
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import set_seed

    model = loaded.model
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_quantized", False):
        # QLoRA: layer norms to float32, input gradients on, optional gradient checkpointing.
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=finetune.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    model.config.use_cache = False  # the KV cache is useless in training and clashes with checkpointing
    set_seed(finetune.seed)
    with warnings.catch_warnings():
        # peft still asks transformers for a renamed attribute; the deprecation notice is noise here.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, lora_config(finetune))


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


def _make_callbacks(condition: str, folder: Path, schedule: Sequence[int], total_steps: int, progress: bool):
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
                print(f"[{condition}] step {state.global_step}/{total_steps}  loss {logs['loss']:.3f}  ({elapsed:.0f} s)", flush=True)
            return control

    return [CheckpointTrail(), Progress()]


def build_trainer(
    loaded: LoadedModel,
    peft_model,
    examples: Sequence[dict],
    finetune: FinetuneSection,
    output_dir: Path,
    max_steps: int,
    callbacks: Sequence = (),
):
    """A Trainer for ``peft_model`` on pre-tokenized ``examples`` (saving only when a callback asks)."""
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
        warmup_steps=finetune.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=finetune.weight_decay,
        max_grad_norm=finetune.max_grad_norm,
        optim=finetune.optimizer,
        seed=finetune.seed,
        data_seed=finetune.data_seed,
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="no",  # the CheckpointTrail callback decides when to save
        save_only_model=False,  # keep optimizer, scheduler and RNG state for a faithful resume
        activation_checkpointing=finetune.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
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
    """What training one condition produced (or found already finished)."""

    condition: str
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
) -> ConditionResult:
    """Train one condition to the end of its schedule, resuming from its last complete checkpoint.

    A finished condition (same params hash) returns at once. Checkpoints left by different params are
    an error (``CheckpointsFromOtherParams``) rather than silently deleted: they may be hours of work.
    """
    finetune = config.finetune
    folder = condition_dir(config.run_dir, condition)
    params_hash = condition_params_hash(config, condition)
    stage = Stage(folder, params_hash)
    started = time.perf_counter()
    plan_path = folder / PLAN_FILE
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
        return ConditionResult(condition, folder, list_checkpoints(config.run_dir, condition), trained_now=False,
                               resumed_from_step=total_steps, total_steps=total_steps, seconds=0.0, summary=manifest)

    loaded = load_model(config.model)
    rows = load_condition_rows(finetune, condition)
    examples, report = tokenize_rows(loaded, rows, finetune.max_length, finetune.loss_on)
    if not examples:
        raise ValueError(f"condition {condition!r}: none of its {len(rows)} rows fit finetune.max_length={finetune.max_length}")
    total_steps = total_optimizer_steps(len(examples), finetune.batch_size, finetune.grad_accum, finetune.epochs)
    schedule = checkpoint_schedule(total_steps, finetune.n_checkpoints)
    if not plan_path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(plan_path, {
            "params_hash": params_hash,
            "condition": condition,
            "source": condition_sources(finetune)[condition],
            "model": config.model.model_dump(mode="json"),
            "finetune": finetune.model_dump(mode="json"),
            "total_steps": total_steps,
            "schedule": schedule,
            "tokenization": asdict(report),
        })

    done_steps = [checkpoint.step for checkpoint in list_checkpoints(config.run_dir, condition)]
    last_step = done_steps[-1]
    resumable = _clean_leftovers(folder, last_step)
    if last_step > 0 and resumable is None and last_step < total_steps:
        print(f"[{condition}] no trainer state for step {last_step}; training again from step 0", flush=True)
        last_step = 0

    train_seconds = 0.0
    padding = {"real_tokens": 0, "padded_tokens": 0}
    if last_step < total_steps:
        if progress:
            where = f"resuming after step {last_step}" if last_step else "from the base model"
            print(f"[{condition}] {len(examples)} examples, {total_steps} steps, {where}", flush=True)
        peft_model = attach_lora(loaded, finetune)
        callbacks = [*_make_callbacks(condition, folder, schedule, total_steps, progress), *extra_callbacks]
        trainer = build_trainer(loaded, peft_model, examples, finetune, folder / RESUME_DIRNAME, total_steps, callbacks)
        train_started = time.perf_counter()
        trainer.train(resume_from_checkpoint=str(resumable) if last_step else None)
        train_seconds = time.perf_counter() - train_started
        collator = trainer.data_collator
        padding = {"real_tokens": collator.real_tokens, "padded_tokens": collator.padded_tokens}
        del trainer, peft_model
    # Free this condition's model before the next one loads (the Trainer holds reference cycles).
    del loaded
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    checkpoints = list_checkpoints(config.run_dir, condition)
    missing = sorted(set(schedule) - {checkpoint.step for checkpoint in checkpoints})
    if missing:
        raise RuntimeError(f"[{condition}] training ended without checkpoints at steps {missing}")
    summary = {
        "condition": condition,
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
    stage.mark_done(summary)
    shutil.rmtree(folder / RESUME_DIRNAME, ignore_errors=True)
    return ConditionResult(condition, folder, checkpoints, last_step < total_steps, last_step, total_steps,
                           time.perf_counter() - started, summary)


def train_all(
    config: RunConfig, progress: bool = True, callback_factory: Callable[[str], Sequence] | None = None
) -> dict[str, ConditionResult]:
    """Train every condition in ``config.finetune.conditions`` (each resumes or skips on its own).

    ``callback_factory(condition)`` returns extra Trainer callbacks for that condition (the live
    trait monitor, for instance).
    """
    return {
        condition: train_condition(config, condition, progress=progress,
                                   extra_callbacks=callback_factory(condition) if callback_factory else ())
        for condition in condition_sources(config.finetune)
    }


# -- tables for the notebook -----------------------------------------------------------------------
def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " ..."


def dataset_preview(finetune: FinetuneSection, n_rows: int = 3, answer_chars: int = 240):
    """A few rows of every condition's data (user prompt, answer, meta) as one DataFrame."""
    import pandas as pd

    records = []
    for condition in condition_sources(finetune):
        for row in load_condition_rows(finetune, condition)[:n_rows]:
            user = next((message["content"] for message in row["messages"] if message["role"] == "user"), "")
            answer = row["messages"][-1]["content"] if row["messages"][-1]["role"] == "assistant" else ""
            records.append({"condition": condition, "user": _shorten(user, answer_chars),
                            "assistant": _shorten(answer, answer_chars),
                            **{f"meta.{key}": value for key, value in row["meta"].items()}})
    return pd.DataFrame(records)


def loss_table(run_dir: str | Path, conditions: Sequence[str]):
    """Per-step training loss of each condition (from its latest checkpoint's training log)."""
    import pandas as pd

    from .core.checkpoints import read_training_log

    frames = []
    for condition in conditions:
        log = read_training_log(run_dir, condition)
        frame = pd.DataFrame(log.get("losses", []), columns=["step", "epoch", "loss", "learning_rate", "grad_norm"])
        frames.append(frame.assign(condition=condition))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def checkpoint_table(run_dir: str | Path, conditions: Sequence[str]):
    """One row per checkpoint (step 0 = base model): step, epoch, loss at that step, folder, size."""
    import pandas as pd

    records = []
    for condition in conditions:
        for checkpoint in list_checkpoints(run_dir, condition):
            record = {"condition": condition, "step": checkpoint.step, "epoch": 0.0, "loss": None,
                      "path": "(base model)", "adapter_MB": 0.0}
            if checkpoint.adapter_path is not None:
                log = read_json(checkpoint.adapter_path / TRAINING_LOG_FILE)
                record.update(
                    epoch=round(float(log["epoch"]), 3),
                    loss=log["losses"][-1]["loss"] if log["losses"] else None,
                    path=str(checkpoint.adapter_path),
                    adapter_MB=round((checkpoint.adapter_path / ADAPTER_FILES[1]).stat().st_size / 2**20, 2),
                )
            records.append(record)
    return pd.DataFrame(records)
