"""Benchmark: projecting checkpoints with adapter swapping vs reloading the model per checkpoint,
and what projecting one checkpoint costs next to training the steps between two checkpoints.

    python bench/project.py                      # embedded SmolLM2-135M-Instruct
    python bench/project.py --model tiny:llama --checkpoints 3
    python bench/project.py --device cuda        # on a GPU

Both ways project the same LoRA checkpoints (random adapters with the default run's LoRA shape)
on the same questions and vectors, in one process.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from traitspace.core.config import FinetuneSection
from traitspace.em_data import build_dataset
from traitspace.core.models import AdapterSwitcher, load_model
from traitspace.core.checkpoints import Checkpoint
from traitspace.project import project_checkpoints
from traitspace.library import load_builtin_library
from traitspace.finetune import attach_lora, build_trainer, tokenize_rows

# The benchmarks' shared device options (bench/ is on sys.path when a script here runs).
from devices import add_device_arguments, describe, prepare_device, synchronize  # noqa: E402


def make_adapters(model_source: str, folder: Path, count: int, device: str = "auto") -> list[Path]:
    from peft import LoraConfig, get_peft_model

    paths = []
    for index in range(count):
        torch.manual_seed(index)
        model = load_model(model_source, device=device).model
        peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                      init_lora_weights=False))
        peft_model.save_pretrained(folder / f"step-{index + 1}")
        paths.append(folder / f"step-{index + 1}")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2")
    parser.add_argument("--checkpoints", type=int, default=4)
    parser.add_argument("--train-steps", type=int, default=4, help="training steps timed for the cost comparison")
    add_device_arguments(parser)
    args = parser.parse_args(argv)
    device = prepare_device(args.device, args.threads)

    questions = list(load_builtin_library().projection_questions)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        adapters = make_adapters(args.model, scratch / "adapters", args.checkpoints, str(device))
        probe = load_model(args.model, device=str(device))
        generator = torch.Generator().manual_seed(0)
        names = [f"trait_{index}" for index in range(247)]
        units = {name: torch.nn.functional.normalize(torch.randn(probe.hidden_size, generator=generator), dim=0)
                 for name in names}
        layers = {name: probe.num_layers // 2 for name in names}
        checkpoints = [Checkpoint("bench", index + 1, path) for index, path in enumerate(adapters)]

        synchronize(device)
        started = time.perf_counter()
        loaded = load_model(args.model, device=str(device))
        project_checkpoints(loaded, AdapterSwitcher(loaded), checkpoints, questions, units, layers,
                            scratch / "swap", params_hash="swap")
        synchronize(device)
        swapping = (time.perf_counter() - started) / len(checkpoints)

        started = time.perf_counter()
        for index, checkpoint in enumerate(checkpoints):
            fresh = load_model(args.model, device=str(device))
            project_checkpoints(fresh, AdapterSwitcher(fresh), [checkpoint], questions, units, layers,
                                scratch / f"reload{index}", params_hash="reload")
        synchronize(device)
        reloading = (time.perf_counter() - started) / len(checkpoints)

        finetune = FinetuneSection(conditions=["insecure_code"], n_examples=args.train_steps * 4, max_length=320)
        examples, _ = tokenize_rows(probe, build_dataset("insecure_code", n=args.train_steps * 4), 320, "response")
        trainer = build_trainer(probe, attach_lora(probe, finetune), examples, finetune, scratch / "train",
                                max_steps=args.train_steps)
        synchronize(device)
        started = time.perf_counter()
        trainer.train()
        synchronize(device)
        seconds_per_step = (time.perf_counter() - started) / args.train_steps

    print(f"model {args.model}: {len(checkpoints)} checkpoints, {len(questions)} questions, 247 directions, "
          f"{describe(device)}")
    print(f"seconds per checkpoint, swapping adapters on one base model: {swapping:7.2f}")
    print(f"seconds per checkpoint, reloading the model each time:       {reloading:7.2f}")
    print(f"ratio (reload / swap): {reloading / swapping:.2f}x")
    print(f"one training step (4 examples, <= 320 tokens): {seconds_per_step:.2f} s; projecting one checkpoint costs "
          f"{swapping / seconds_per_step:.2f} training steps")
    print("default schedule (30 steps, 17 checkpoints): projecting all checkpoints costs "
          f"{100 * 17 * swapping / (30 * seconds_per_step):.0f}% of the training time")


if __name__ == "__main__":
    main()
