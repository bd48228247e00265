"""Benchmark: the workbook's sampler against ``model.generate``, in one process on one model.

Workload: the EM evaluation's shape, several questions asked N times each at temperature 1,
top_p 1 (no top-k: ``generate`` gets ``top_k=0`` so both sample from the full distribution), with
the same stop tokens and ``max_new_tokens``.

- plain, one prompt at a time: ``generate`` on each sample alone (the naive loop);
- plain, batched: ``generate`` on length-sorted fixed batches of ``--batch`` samples;
- ours: ``traitspace.core.sampling.sample_token_ids`` (one prefill per distinct prompt, continuous
  batching with a preallocated key/value buffer, per-sample seeds).

Tokens/s counts generated tokens up to and including the stop token, the same way for every
method. The last row is a reference, not a sampler: one forward pass over 16 x 128 prompt tokens with
the LM head at every position, the compute roof of this machine at the moment of measuring. The one-at-a-time loop runs on the first ``--single`` samples only (it is slow); its rate
is per token, so the comparison stays fair.

    python bench/sample.py                           # embedded SmolLM2-135M-Instruct
    python bench/sample.py --model tiny:llama --questions 2 --samples 4 --single 2
    python bench/sample.py --dtype bfloat16          # measure bf16 instead of assuming it helps
    python bench/sample.py --device cuda             # on a GPU (dtype auto: bf16 there)

Goal: ours >= 20x the one-at-a-time loop on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from traitspace.library import load_builtin_questions
from traitspace.core.models import load_model
from traitspace.core.sampling import derive_seed, left_padded, sample_token_ids, stop_token_ids

# The benchmarks' shared device options (bench/ is on sys.path when a script here runs).
from devices import add_device_arguments, describe, prepare_device, synchronize  # noqa: E402


def workload(loaded, n_questions: int, n_samples: int) -> list[list[int]]:
    """Prompt token ids: each core question's first paraphrase, repeated n_samples times."""
    questions = load_builtin_questions("core", formats=("plain",))[:n_questions]
    prompts = [loaded.chat.tokenize(question.messages(0)).input_ids for question in questions]
    return [prompt for prompt in prompts for _ in range(n_samples)]


def generated_length(tokens: torch.Tensor, stop_ids: set[int]) -> int:
    """Tokens up to and including the first stop token (generate pads after it)."""
    for position, token in enumerate(tokens.tolist()):
        if token in stop_ids:
            return position + 1
    return len(tokens)


@torch.inference_mode()
def plain_generate(loaded, prompts, batch: int, max_new_tokens: int, stop_ids: list[int], seed: int) -> int:
    """generate() on length-sorted fixed batches; returns the number of generated tokens."""
    torch.manual_seed(seed)
    order = sorted(range(len(prompts)), key=lambda index: len(prompts[index]))
    total = 0
    for start in range(0, len(order), batch):
        inputs, _ = left_padded([prompts[index] for index in order[start: start + batch]], loaded.tokenizer.pad_token_id)
        inputs.pop("position_ids")  # generate() derives positions from the attention mask
        inputs = {name: tensor.to(loaded.device) for name, tensor in inputs.items()}
        output = loaded.model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
            eos_token_id=stop_ids, pad_token_id=loaded.tokenizer.pad_token_id,
        )
        for row in output[:, inputs["input_ids"].shape[1]:]:
            total += generated_length(row, set(stop_ids))
    return total


def ours(loaded, prompts, batch: int, max_new_tokens: int, stop_ids: list[int], seed: int) -> int:
    seeds = [derive_seed(seed, index) for index in range(len(prompts))]
    results = sample_token_ids(loaded.model, prompts, seeds, max_new_tokens=max_new_tokens, stop_ids=stop_ids,
                               pad_token_id=loaded.tokenizer.pad_token_id, temperature=1.0, top_p=1.0,
                               batch_size=batch)
    return sum(len(result.token_ids) for result in results)


@torch.inference_mode()
def full_forward(loaded, prompts, rows: int = 16, length: int = 128) -> int:
    """The compute roof: one forward pass over rows x length prompt tokens with the LM head at every
    position (no cache, no sampling); returns the number of tokens processed."""
    tokens = [token for prompt in prompts for token in prompt]
    needed = rows * length
    ids = torch.tensor((tokens * (needed // len(tokens) + 1))[:needed], device=loaded.device).view(rows, length)
    loaded.model(input_ids=ids, use_cache=False)
    return needed


def rate(function, device: torch.device) -> tuple[float, int, float]:
    synchronize(device)
    start = time.perf_counter()
    tokens = function()
    synchronize(device)
    seconds = time.perf_counter() - start
    return tokens / seconds, tokens, seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--samples", type=int, default=16, help="samples per question")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--single", type=int, default=6, help="samples run one at a time for the baseline")
    parser.add_argument("--skip-batched", action="store_true", help="skip the batched generate() baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="alternating repeats; medians are reported")
    add_device_arguments(parser)
    args = parser.parse_args(argv)

    device = prepare_device(args.device, args.threads)
    torch.set_grad_enabled(False)
    loaded = load_model(args.model, dtype=args.dtype, device=str(device))
    prompts = workload(loaded, args.questions, args.samples)
    stop_ids = stop_token_ids(loaded)
    print(f"model {args.model} ({loaded.info['dtype']}): {len(prompts)} samples "
          f"({args.questions} questions x {args.samples}), max_new_tokens {args.max_new_tokens}, "
          f"batch {args.batch}, {describe(device)}")

    # A short warm-up of each path (first calls allocate and pick kernels).
    plain_generate(loaded, prompts[:1], 1, 4, stop_ids, args.seed)
    ours(loaded, prompts[:2], 2, 4, stop_ids, args.seed)

    single_prompts = prompts[:: max(1, len(prompts) // args.single)][: args.single]
    methods = {"generate, one prompt at a time": lambda: plain_generate(
        loaded, single_prompts, 1, args.max_new_tokens, stop_ids, args.seed)}
    if not args.skip_batched:
        methods[f"generate, batches of {args.batch}"] = lambda: plain_generate(
            loaded, prompts, args.batch, args.max_new_tokens, stop_ids, args.seed)
    methods[f"ours, {args.batch} rows"] = lambda: ours(loaded, prompts, args.batch, args.max_new_tokens, stop_ids, args.seed)
    # Not a sampler: how fast this machine runs the model at all right now (a shared CPU varies).
    methods["roof: one full forward, 16x128"] = lambda: full_forward(loaded, prompts)
    # Methods alternate within each repeat, so a change in the machine's load hits all of them.
    measured: dict[str, list[tuple[float, int, float]]] = {label: [] for label in methods}
    for repeat in range(args.repeats):
        for label, function in methods.items():
            measured[label].append(rate(function, device))
            print(f"  repeat {repeat + 1}: {label}: {measured[label][-1][0]:.1f} tok/s", flush=True)

    baseline = statistics.median(result[0] for result in measured["generate, one prompt at a time"])
    print(f"{'method (median of repeats)':<34}{'tokens':>8}{'seconds':>9}{'tok/s':>9}{'vs one-at-a-time':>18}")
    for label, results in measured.items():
        tokens_per_second = statistics.median(result[0] for result in results)
        tokens, seconds = results[0][1], statistics.median(result[2] for result in results)
        print(f"{label:<34}{tokens:>8}{seconds:>9.1f}{tokens_per_second:>9.1f}{tokens_per_second / baseline:>17.1f}x")


if __name__ == "__main__":
    main()
