"""Benchmark: training time with and without the live trait monitor, in one process.

    python bench/monitor.py                          # embedded SmolLM2-135M-Instruct
    python bench/monitor.py --model tiny:llama --steps 20 --repeats 1
    python bench/monitor.py --device cuda            # on a GPU

Both runs train the same LoRA on the same data for the same steps; the monitored run measures the
trait projections every K steps (K and the number of questions as in the live-monitor defaults).
Prints seconds for each arm (median over alternating repeats), the wall-clock overhead (goal: at most 5%
at the default K), and the time spent inside the callback, which is less sensitive to machine noise.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from traitspace.core.config import FinetuneSection, LiveMonitorSection
from traitspace.em_data import build_dataset
from traitspace.finetune import LiveMonitorSpec, make_live_monitor_callback
from traitspace.core.models import load_model
from traitspace.library import load_builtin_library
from traitspace.finetune import attach_lora, build_trainer, tokenize_rows

# The benchmarks' shared device options (bench/ is on sys.path when a script here runs).
from devices import add_device_arguments, describe, prepare_device, synchronize  # noqa: E402


def train_once(model_source: str, device: torch.device, steps: int, callback_factory=None) -> tuple[float, object]:
    loaded = load_model(model_source, device=str(device))
    finetune = FinetuneSection(conditions=["insecure_code"], n_examples=steps * 4, max_length=192, batch_size=4,
                               lora_r=16, lora_alpha=32)
    torch.manual_seed(0)
    peft_model = attach_lora(loaded, finetune)
    examples, _ = tokenize_rows(loaded, build_dataset("insecure_code", n=steps * 4), 192, "response")
    callbacks = [callback_factory(loaded)] if callback_factory else []
    with tempfile.TemporaryDirectory() as folder:
        trainer = build_trainer(loaded, peft_model, examples, finetune, Path(folder), max_steps=steps, callbacks=callbacks)
        synchronize(device)
        started = time.perf_counter()
        trainer.train()
        synchronize(device)
        return time.perf_counter() - started, (callbacks[0] if callbacks else None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2,
                        help="pairs of runs; the arms alternate (plain, monitored, plain, ...) so drift in the "
                             "machine's speed hits both")
    add_device_arguments(parser)
    args = parser.parse_args(argv)
    device = prepare_device(args.device, args.threads)
    defaults = LiveMonitorSection()
    questions = list(load_builtin_library().projection_questions[: defaults.n_questions])

    def factory(loaded):
        # Directions at the middle layer: the cost of a check depends on the deepest layer read, not on
        # the directions' values (notebook 02's layers for the embedded model sit around the middle).
        generator = torch.Generator().manual_seed(0)
        names = [f"trait_{index}" for index in range(247)]
        units = {name: torch.nn.functional.normalize(torch.randn(loaded.hidden_size, generator=generator), dim=0)
                 for name in names}
        layers = {name: loaded.num_layers // 2 for name in names}
        spec = LiveMonitorSpec(every_k_steps=defaults.every_k_steps, questions=questions, unit_vectors=units,
                               trait_layers=layers, key_traits={names[0]: 1})
        return make_live_monitor_callback(loaded, spec, Path(tempfile.mkdtemp()) / "live.jsonl")

    plain_seconds, monitored_seconds, inside_seconds, base_seconds, checks = [], [], [], [], 0
    for _ in range(args.repeats):
        plain_seconds.append(train_once(args.model, device, args.steps)[0])
        seconds, callback = train_once(args.model, device, args.steps, factory)
        monitored_seconds.append(seconds)
        inside_seconds.append(callback.measure_seconds)
        base_seconds.append(callback.base_seconds)
        checks = len(callback.records)
    plain, monitored = statistics.median(plain_seconds), statistics.median(monitored_seconds)
    inside, base = statistics.median(inside_seconds), statistics.median(base_seconds)
    print(f"model {args.model}, {args.steps} steps of 4 x <=192 tokens, check every {defaults.every_k_steps} steps "
          f"on {len(questions)} questions, {describe(device)}, {args.repeats} pair(s)")
    print(f"training without monitor: {plain:8.1f} s  (runs: {', '.join(f'{s:.1f}' for s in plain_seconds)})")
    print(f"training with monitor:    {monitored:8.1f} s  (runs: {', '.join(f'{s:.1f}' for s in monitored_seconds)}; "
          f"{checks} checks + the base measurement)")
    print(f"time inside the monitor:  {inside:8.2f} s  ({inside / plain:.2%} of plain training; "
          f"{(inside - base) / max(checks, 1):.2f} s per check, base {base:.2f} s)")
    print(f"overhead, wall clock: {100 * (monitored - plain) / plain:+.1f}%  (ratio {monitored / plain:.3f}; goal <= 5%)")


if __name__ == "__main__":
    main()
