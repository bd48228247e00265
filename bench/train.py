"""Benchmark: the project's fine-tuning path against a plain transformers Trainer + peft run.

Both runs train the same model on the same tokenized examples (same loss mask) with the same LoRA and
optimizer settings and the same number of optimizer steps, in one process.

- plain: ``Trainer`` + ``get_peft_model`` + ``DataCollatorForSeq2Seq``, random batches, no checkpoints;
- ours:  ``traitspace.finetune.train_condition`` (length-grouped batches, checkpoints at the log-spaced
  schedule written as it goes, so the saving cost is included).

Tokens/s counts real (non-padding) tokens, so wasted padding shows up as lost speed.

    python bench/train.py                                  # embedded SmolLM2-135M-Instruct
    python bench/train.py --model tiny:llama --examples 24 --epochs 1
    python bench/train.py --threads 1                      # on a busy shared CPU, one thread is faster
    python bench/train.py --device cuda                    # on a GPU (bf16, the dtype params' auto picks there)

Prints tokens/s for both, their ratio (goal >= 1.0) and the padding share of our batches (goal <= 10%).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from traitspace.core.config import load_config
from traitspace.core.models import load_model
from traitspace.finetune import (
    IGNORE_INDEX,
    load_chat_tokenizer,
    load_condition_rows,
    lora_config,
    tokenize_rows,
    total_optimizer_steps,
    train_condition,
)
from traitspace.finetune.trainer import warmup_arguments

# The benchmarks' shared device options (bench/ is on sys.path when a script here runs).
from devices import add_device_arguments, describe, prepare_device, synchronize  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class CountingCollator:
    """Wraps a collator and counts the real and padded tokens of the batches it builds."""

    def __init__(self, collator):
        self.collator = collator
        self.real_tokens = 0
        self.padded_tokens = 0

    def __call__(self, features):
        batch = self.collator(features)
        self.real_tokens += int(batch["attention_mask"].sum())
        self.padded_tokens += batch["attention_mask"].numel()
        return batch


def plain_run(config, examples, max_steps: int, output_dir: Path) -> tuple[int, float, float]:
    """The textbook way; returns (real tokens, seconds in trainer.train(), padding share)."""
    from peft import get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    finetune = config.finetune
    loaded = load_model(config.model)
    loaded.model.config.use_cache = False
    set_seed(finetune.seeds[0])
    model = get_peft_model(loaded.model, lora_config(finetune))
    collator = CountingCollator(DataCollatorForSeq2Seq(loaded.tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX))
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
        seed=finetune.seeds[0],
        data_seed=finetune.seeds[0],
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=loaded.device.type == "cpu",
        remove_unused_columns=False,
    )
    trainer = Trainer(model=model, args=args, train_dataset=list(examples), data_collator=collator)
    synchronize(loaded.device)
    started = time.perf_counter()
    trainer.train()
    synchronize(loaded.device)
    seconds = time.perf_counter() - started
    return collator.real_tokens, seconds, 1 - collator.real_tokens / collator.padded_tokens


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2")
    parser.add_argument("--dataset", default="insecure_code")
    parser.add_argument("--examples", type=int, default=120, help="rows drawn (the default run's data size)")
    parser.add_argument("--epochs", type=float, default=0.25, help="fraction of an epoch to train (sets the steps)")
    parser.add_argument("--max-length", type=int, default=320)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--checkpoints", type=int, default=4, help="checkpoints our run writes")
    add_device_arguments(parser)
    args = parser.parse_args(argv)
    device = prepare_device(args.device, args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        config = load_config(REPO / "params" / "default.yaml", {
            "run.output_root": scratch,
            "model.source": args.model,
            "model.device": str(device),
            "finetune.conditions": [args.dataset],
            "finetune.n_examples": args.examples,
            "finetune.epochs": args.epochs,
            "finetune.max_length": args.max_length,
            "finetune.batch_size": args.batch,
            "finetune.n_checkpoints": args.checkpoints,
        })
        finetune = config.finetune
        examples, report = tokenize_rows(load_chat_tokenizer(config.model), load_condition_rows(finetune, args.dataset),
                                         finetune.max_length, finetune.loss_on)
        steps = total_optimizer_steps(len(examples), finetune.batch_size, finetune.grad_accum, finetune.epochs)
        print(f"model {args.model}: {len(examples)} examples (mean {report.mean_length:.0f} tokens), "
              f"{steps} optimizer steps of {finetune.batch_size} x <= {finetune.max_length} tokens, "
              f"{describe(device)}", flush=True)

        plain_tokens, plain_seconds, plain_padding = plain_run(config, examples, steps, Path(scratch) / "plain")
        plain_speed = plain_tokens / plain_seconds
        print(f"plain Trainer + peft : {plain_tokens:7,d} tokens in {plain_seconds:6.1f} s = {plain_speed:6.1f} tokens/s"
              f"  (padding {plain_padding:.1%})", flush=True)

        ours = train_condition(config, args.dataset, progress=False).summary
        our_speed = ours["tokens_per_second_this_process"]
        our_padding = ours["padding_share_this_process"]
        our_seconds = ours["train_seconds_this_process"]
        print(f"traitspace.finetune  : {round(our_speed * our_seconds):7,d} tokens in {our_seconds:6.1f} s = "
              f"{our_speed:6.1f} tokens/s  (padding {our_padding:.1%}, {args.checkpoints} checkpoints written)")
        print(f"ratio ours / plain   : {our_speed / plain_speed:.2f}  (goal >= 1.0)")
        print(f"padding in our batches: {our_padding:.1%}  (goal <= 10%)")


if __name__ == "__main__":
    main()
