"""Benchmark: what measuring the misalignment preference costs per checkpoint, next to projecting
the same checkpoint on 247 directions (both with adapters swapped on one base model, one process).

    python bench/preference.py                        # embedded SmolLM2-135M-Instruct
    python bench/preference.py --model tiny:llama --checkpoints 2 --questions 5
    python bench/preference.py --questions 8 --style-questions 4   # the default run's pairs
    python bench/preference.py --device cuda          # on a GPU

Both measure the same random LoRA checkpoints (the default run's LoRA shape), each twice: as the
stages run them (the projection prompts' shared system prompt run once; each question's prompt run
once for all its answers, answers in length-sorted passes) and with every prompt or answer run whole
(the baselines). Repeats alternate the measurements and the medians are
compared, so machine noise hits all alike.

It also prints the ratio that arithmetic alone sets: the matrix-multiply FLOPs of the tokens each
measure must run at least once (the preference: every question's prompt once, every answer through
all layers and the LM head; the projection: the shared system prompt once, each question through the
layers up to the deepest trait layer). A measured ratio near or below it means the preference is
as cheap as its token count allows; getting below it needs fewer answers, not a faster path.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from traitspace.behavior.preference import load_preference_pairs, measure_checkpoints
from traitspace.core.checkpoints import Checkpoint
from traitspace.core.models import AdapterSwitcher, load_model
from traitspace.core.parts import CheckpointParts
from traitspace.library import load_builtin_library
from traitspace.project import project_checkpoints

# The sibling benchmark's random adapters and the shared device options (bench/ is on sys.path when
# a script here runs).
from devices import add_device_arguments, describe, prepare_device, synchronize  # noqa: E402
from project import make_adapters  # noqa: E402


def matmul_flops(config, tokens: int, layers: int, head_positions: int = 0) -> float:
    """Multiply-add FLOPs of ``tokens`` through ``layers`` decoder blocks (attention projections and
    MLP; the attention scores are left out, small at these lengths) plus the LM head at
    ``head_positions``."""
    hidden, heads = config.hidden_size, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv_width = (getattr(config, "num_key_value_heads", None) or heads) * head_dim
    per_token_layer = 2 * (2 * hidden * heads * head_dim + 2 * hidden * kv_width + 3 * hidden * config.intermediate_size)
    return tokens * layers * per_token_layer + head_positions * 2 * hidden * config.vocab_size


def least_work(loaded, questions, pair_chats, deepest_layer: int) -> tuple[float, float]:
    """FLOPs of (projection, preference) counting each shared prompt once (see the module docstring);
    ``pair_chats``: both answers of every pair, tokenized as the preference scores them."""
    prompts = []
    for question in questions:
        chat = loaded.chat.tokenize(loaded.chat.conversation(question))
        prompts.append(tuple(chat.input_ids[: chat.prompt_span[1]]))
    shared = len(os.path.commonprefix(prompts))
    projection_tokens = shared + sum(len(prompt) - shared for prompt in prompts)
    question_prompts, answer_tokens = {}, 0
    for chat in pair_chats:
        first, end = chat.response_span
        question_prompts[tuple(chat.input_ids[:first])] = first
        answer_tokens += end - first
    config = loaded.model.config
    projection = matmul_flops(config, projection_tokens, deepest_layer + 1)
    preference = matmul_flops(config, sum(question_prompts.values()) + answer_tokens, loaded.num_layers,
                              head_positions=answer_tokens)
    return projection, preference


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2")
    parser.add_argument("--checkpoints", type=int, default=2)
    parser.add_argument("--questions", type=int, default=None, help="first N questions of each kind (default: all)")
    parser.add_argument("--style-questions", type=int, default=None,
                        help="first N style-control questions (default: as --questions)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    add_device_arguments(parser)
    args = parser.parse_args(argv)
    device = prepare_device(args.device, args.threads)

    questions = list(load_builtin_library().projection_questions)
    pairs = load_preference_pairs(max_questions=args.questions, max_style_questions=args.style_questions)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        adapters = make_adapters(args.model, scratch / "adapters", args.checkpoints, str(device))
        loaded = load_model(args.model, device=str(device))
        generator = torch.Generator().manual_seed(0)
        names = [f"trait_{index}" for index in range(247)]
        units = {name: torch.nn.functional.normalize(torch.randn(loaded.hidden_size, generator=generator), dim=0)
                 for name in names}
        layers = {name: loaded.num_layers // 2 for name in names}
        checkpoints = [Checkpoint("bench", index + 1, path) for index, path in enumerate(adapters)]
        pair_chats = [loaded.chat.tokenize(loaded.chat.conversation(pair.question, assistant=answer))
                      for pair in pairs for answer in (pair.first, pair.second)]
        answer_tokens = sum(len(chat.input_ids) for chat in pair_chats)

        # Untimed warm-up (first adapter load, allocator, kernel choice), so the first path timed is not penalised.
        project_checkpoints(loaded, AdapterSwitcher(loaded), checkpoints[:1], questions, units, layers,
                            scratch / "warmup_project", params_hash="bench")
        measure_checkpoints(loaded, checkpoints[:1], pairs, CheckpointParts(scratch / "warmup_preference"), "bench",
                            batch_size=args.batch_size, progress=False)
        projecting, projecting_plain, preferring, preferring_plain = [], [], [], []
        for repeat in range(args.repeats):
            synchronize(device)
            started = time.perf_counter()
            project_checkpoints(loaded, AdapterSwitcher(loaded), checkpoints, questions, units, layers,
                                scratch / f"project{repeat}", params_hash="bench")
            synchronize(device)
            projecting.append((time.perf_counter() - started) / len(checkpoints))
            started = time.perf_counter()
            project_checkpoints(loaded, AdapterSwitcher(loaded), checkpoints, questions, units, layers,
                                scratch / f"project_plain{repeat}", params_hash="bench", share_prefixes=False)
            synchronize(device)
            projecting_plain.append((time.perf_counter() - started) / len(checkpoints))
            started = time.perf_counter()
            measure_checkpoints(loaded, checkpoints, pairs, CheckpointParts(scratch / f"preference{repeat}"),
                                "bench", batch_size=args.batch_size, progress=False)
            synchronize(device)
            preferring.append((time.perf_counter() - started) / len(checkpoints))
            started = time.perf_counter()
            measure_checkpoints(loaded, checkpoints, pairs, CheckpointParts(scratch / f"plain{repeat}"),
                                "bench", batch_size=args.batch_size, progress=False, share_prefixes=False)
            synchronize(device)
            preferring_plain.append((time.perf_counter() - started) / len(checkpoints))

    project_s, preference_s = statistics.median(projecting), statistics.median(preferring)
    plain_s, project_plain_s = statistics.median(preferring_plain), statistics.median(projecting_plain)
    print(f"model {args.model}: {len(checkpoints)} checkpoints x {args.repeats} repeats, {describe(device)}")
    print(f"projection: {len(questions)} questions, 247 directions: {project_s:7.2f} s per checkpoint "
          f"(each prompt run whole: {project_plain_s:.2f} s; shared system prompt {project_plain_s / project_s:.2f}x faster)")
    print(f"preference: {len(pairs)} pairs ({2 * len(pairs)} answers, {answer_tokens:,} tokens): "
          f"{preference_s:7.2f} s per checkpoint (each answer run whole: {plain_s:.2f} s)")
    print(f"shared question prompts: {plain_s / preference_s:.2f}x faster than whole answers")
    print(f"ratio (preference / projection): {preference_s / project_s:.2f}x")
    least_projection, least_preference = least_work(loaded, questions, pair_chats, max(layers.values()))
    print(f"least matmul work: projection {least_projection / 1e9:.1f} GFLOP, preference {least_preference / 1e9:.1f} GFLOP "
          f"per checkpoint: {least_preference / least_projection:.2f}x (the floor of the ratio at equal efficiency)")
    print(f"achieved: projection {least_projection / project_s / 1e9:.1f} GFLOP/s, "
          f"preference {least_preference / preference_s / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
