"""Benchmark: a checkpoint measured with its LoRA adapter merged into the base weights vs unmerged
(what ``AdapterSwitcher(merge=...)`` chooses between), for a forward pass and for greedy generation.

    python bench/adapters.py                          # embedded SmolLM2-135M-Instruct
    python bench/adapters.py --model tiny:llama --batch 4 --tokens 16
    python bench/adapters.py --device cuda            # on a GPU (merging is off there by default)

One random LoRA adapter of the default run's shape (r 16, all linear modules). Repeats alternate
the two settings and the medians are compared, so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from traitspace.core.models import AdapterSwitcher, load_model

# bench/ is on sys.path when a script here runs.
from devices import add_device_arguments, describe, prepare_device, synchronize  # noqa: E402
from project import make_adapters  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2")
    parser.add_argument("--batch", type=int, default=16, help="sequences per pass")
    parser.add_argument("--tokens", type=int, default=96, help="tokens per sequence in the forward pass")
    parser.add_argument("--new-tokens", type=int, default=24, help="greedy tokens generated after a third of them")
    parser.add_argument("--repeats", type=int, default=3)
    add_device_arguments(parser)
    args = parser.parse_args(argv)
    device = prepare_device(args.device, args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        [adapter] = make_adapters(args.model, Path(scratch), 1, str(device))
        loaded = load_model(args.model, device=str(device))
        switchers = {"unmerged": AdapterSwitcher(loaded, merge=False), "merged": AdapterSwitcher(loaded, merge=True)}
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(100, min(loaded.model.config.vocab_size, 5000), (args.batch, args.tokens), generator=generator)
        ids = ids.to(device)
        prompt = ids[:, : max(args.tokens // 3, 1)]

        def forward(model):
            model(input_ids=ids)

        def generate(model):
            model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=args.new_tokens,
                           min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)

        seconds = {(work, setting): [] for work in ("forward", "generate") for setting in switchers}
        with torch.inference_mode():
            for _ in range(args.repeats):
                for work, run in (("forward", forward), ("generate", generate)):
                    for setting, switcher in switchers.items():
                        with switcher.use(adapter) as model:
                            synchronize(device)
                            started = time.perf_counter()
                            run(model)
                            synchronize(device)
                            seconds[(work, setting)].append(time.perf_counter() - started)

    print(f"model {args.model}: batch {args.batch}, {args.repeats} repeats, {describe(device)}")
    for work, shape in (("forward", f"{args.tokens} tokens"), ("generate", f"{args.new_tokens} new tokens")):
        unmerged, merged = (statistics.median(seconds[(work, setting)]) for setting in ("unmerged", "merged"))
        print(f"{work:8s} ({shape}): unmerged {unmerged:6.2f} s, merged {merged:6.2f} s: merged {unmerged / merged:.2f}x faster")


if __name__ == "__main__":
    main()
