"""Benchmark: pooled activation capture against the plain way, in one process on one model.

Plain way: a full causal-LM forward with ``output_hidden_states=True`` (all layers kept, LM head
computed), then pooling the response tokens afterwards. Ours: ``traitspace.core.hooks.capture_pooled``
(pooling inside hooks, no LM head, early exit after the deepest requested layer).

A second table measures extraction's prompt capture: conversations that share a system prompt
(several questions under each of several personas), read at the last prompt token, by plain
batched capture against ``traitspace.extract.capture_shared_prefixes`` (each shared prefix run once,
its key/value cache reused: :mod:`traitspace.core.prefix_cache`).

    python bench/hooks.py                      # embedded SmolLM2-135M-Instruct
    python bench/hooks.py --model tiny:llama --repeats 2
    python bench/hooks.py --device cuda          # on a GPU (bf16, the dtype params' auto picks there)

Prints tokens/s for each way and the ratios (goals: >= 1.2 at every layer, >= 2.2 at the middle layer;
shared prefixes: faster than plain capture, the same numbers).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from traitspace.core.hooks import capture_conversations, capture_pooled, collate, span_weights
from traitspace.core.models import load_model
from traitspace.extract import capture_shared_prefixes

# The benchmarks' shared device options (bench/ is on sys.path when a script here runs).
from devices import add_device_arguments, describe, prepare_device, synchronize  # noqa: E402


def synthetic_chats(loaded, n: int, target_tokens: int):
    """n conversations of about target_tokens tokens, with varied lengths (as in real batches)."""
    filler = "The assistant considers the question carefully and answers with a detailed, patient explanation. "
    chats = []
    for index in range(n):
        words = filler * (1 + (target_tokens * (8 + index % 5)) // (10 * 16))
        messages = loaded.chat.conversation(f"Question {index}: how should I plan my week?", assistant=words)
        chats.append(loaded.chat.tokenize(messages, max_length=target_tokens - (index % 4) * 8))
    return chats


@torch.inference_mode()
def plain_capture(model, chats, layers, pad_token_id):
    """The plain way, inputs on the model's device; pooled vectors come back to the CPU as ours do."""
    device = next(model.parameters()).device
    inputs, offsets = collate(chats, pad_token_id, "left")
    weights = span_weights([chat.span("response") for chat in chats], offsets, inputs["input_ids"].shape[1])
    inputs = {name: tensor.to(device) for name, tensor in inputs.items()}
    hidden = model(**inputs, output_hidden_states=True, use_cache=False).hidden_states
    return {layer: torch.einsum("bs,bsh->bh", weights.to(device), hidden[layer + 1].float()).cpu() for layer in layers}


def persona_conversations(loaded, n_personas: int, n_questions: int):
    """Every question under every persona system prompt (extraction's shape: long shared prefixes)."""
    personas = [f"You are persona number {index}. You speak calmly, answer in full sentences and always "
                f"explain your reasoning step by step before you give a final answer." for index in range(n_personas)]
    questions = [f"Question {index}: how should I plan my week if I have {index + 2} deadlines?" for index in range(n_questions)]
    return [loaded.chat.conversation(question, system=persona) for persona in personas for question in questions]


def timed(function, repeats: int, device: torch.device) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--personas", type=int, default=8, help="system prompts of the prompt-capture table")
    parser.add_argument("--questions", type=int, default=8, help="questions under each system prompt")
    add_device_arguments(parser)
    args = parser.parse_args(argv)

    device = prepare_device(args.device, args.threads)
    torch.set_grad_enabled(False)
    loaded = load_model(args.model, device=str(device))
    chats = synthetic_chats(loaded, args.batch, args.tokens)
    n_tokens = sum(len(chat.input_ids) for chat in chats)
    all_layers = list(range(loaded.num_layers))
    middle = [loaded.num_layers // 2]
    pad = loaded.tokenizer.pad_token_id
    print(f"model {args.model}: {loaded.num_layers} layers, batch {args.batch}, {n_tokens} tokens, "
          f"{loaded.info['dtype']} on {describe(device)}")

    rows = []
    for label, layers in (("every layer", all_layers), (f"middle layer {middle[0]}", middle)):
        plain = timed(lambda: plain_capture(loaded.model, chats, layers, pad), args.repeats, device)
        ours = timed(lambda: capture_pooled(loaded.model, chats, layers, "response", batch_size=args.batch,
                                            pad_token_id=pad), args.repeats, device)
        rows.append((label, n_tokens / plain, n_tokens / ours, plain / ours))
    # Same numbers from both ways (the benchmark compares equal work).
    reference = plain_capture(loaded.model, chats, middle, pad)[middle[0]]
    ours_vectors = capture_pooled(loaded.model, chats, middle, "response", batch_size=args.batch, pad_token_id=pad)[middle[0]]
    max_error = (reference - ours_vectors).abs().max().item()

    print(f"{'capture':<18}{'plain tok/s':>14}{'ours tok/s':>14}{'ratio':>9}")
    for label, plain_rate, our_rate, ratio in rows:
        print(f"{label:<18}{plain_rate:>14.0f}{our_rate:>14.0f}{ratio:>8.2f}x")
    print(f"max |plain - ours| at the middle layer: {max_error:.2e}")

    conversations = persona_conversations(loaded, args.personas, args.questions)
    prompt_tokens = sum(len(loaded.chat.tokenize(messages).input_ids) for messages in conversations)
    plain = timed(lambda: capture_conversations(loaded, conversations, "all", "last_prompt", batch_size=args.batch),
                  args.repeats, device)
    shared = timed(lambda: capture_shared_prefixes(loaded, conversations, "all", "last_prompt", batch_size=args.batch),
                   args.repeats, device)
    error = max((capture_conversations(loaded, conversations, "all", "last_prompt", batch_size=args.batch)[layer]
                 - vectors).abs().max().item()
                for layer, vectors in capture_shared_prefixes(loaded, conversations, "all", "last_prompt",
                                                              batch_size=args.batch).items())
    print(f"\n{'prompt capture':<18}{'plain tok/s':>14}{'shared tok/s':>14}{'ratio':>9}"
          f"   ({len(conversations)} conversations, {prompt_tokens} prompt tokens)")
    print(f"{'shared prefixes':<18}{prompt_tokens / plain:>14.0f}{prompt_tokens / shared:>14.0f}{plain / shared:>8.2f}x")
    print(f"max |plain - shared| over layers: {error:.2e}")


if __name__ == "__main__":
    main()
