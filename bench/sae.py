"""Benchmark: notebook 09's costs on one model, in one process: training the SAE, and diffing one
checkpoint through it next to projecting the same checkpoint (notebook 03).

    python bench/sae.py                              # embedded SmolLM2-135M-Instruct, the default sae params
    python bench/sae.py --model tiny:llama --steps 50
    python bench/sae.py --device cuda

The diff reads 60 evaluation-style answers (the judge-free preference pairs' answers, about the
default run's 60 sampled answers of <= 48 tokens) and encodes every answer token; projection reads the
projection questions' last prompt token onto 247 directions. Both run on the same random LoRA
adapters (the default run's LoRA shape) swapped into one base model.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from traitspace.behavior.preference import load_preference_pairs
from traitspace.core.checkpoints import Checkpoint
from traitspace.core.config import SaeSection
from traitspace.core.models import AdapterSwitcher, load_model
from traitspace.library import load_builtin_library
from traitspace.project import project_checkpoints
from traitspace.sae import TrainSettings, train_sae
from traitspace.sae.activations import capture_tokens, training_spans
from traitspace.sae.diff import measure_checkpoint

from devices import add_device_arguments, describe, prepare_device, synchronize  # noqa: E402
from project import make_adapters  # noqa: E402  (bench/project.py: random adapters of the default shape)


def main(argv: list[str] | None = None) -> None:
    defaults = SaeSection()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2")
    parser.add_argument("--checkpoints", type=int, default=2)
    parser.add_argument("--steps", type=int, default=defaults.steps, help="SAE training steps timed")
    parser.add_argument("--d-sae", type=int, default=defaults.d_sae)
    parser.add_argument("--k", type=int, default=defaults.k)
    parser.add_argument("--answers", type=int, default=60)
    add_device_arguments(parser)
    args = parser.parse_args(argv)
    device = prepare_device(args.device, args.threads)

    library = load_builtin_library()
    questions = list(library.projection_questions)
    pairs = load_preference_pairs()[: args.answers]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        adapters = make_adapters(args.model, scratch / "adapters", args.checkpoints, str(device))
        loaded = load_model(args.model, device=str(device))
        layer = loaded.num_layers // 2
        switcher = AdapterSwitcher(loaded)

        # Training data: every token but the first of the extraction and projection questions, base model.
        conversations = [loaded.chat.conversation(question) for question in [*library.extraction_questions, *questions]]
        chats = [loaded.chat.tokenize(messages) for messages in conversations]
        synchronize(device)
        started = time.perf_counter()
        vectors, _ = capture_tokens(loaded, chats, training_spans(chats), layer)
        synchronize(device)
        capture_seconds = time.perf_counter() - started
        result = train_sae(vectors.cpu(), TrainSettings(d_sae=args.d_sae, k=args.k, steps=args.steps,
                                                        batch_size=min(defaults.batch_size, len(vectors))))
        sae = result.sae

        checkpoints = [Checkpoint("bench", index + 1, path) for index, path in enumerate(adapters)]
        answered = [loaded.chat.conversation(pair.question, assistant=pair.first) for pair in pairs]
        diff_seconds = []
        for checkpoint in checkpoints:
            with switcher.use(checkpoint.adapter_path):
                diff_seconds.append(measure_checkpoint(loaded, sae, layer, answered).seconds)
        diff = sum(diff_seconds) / len(diff_seconds)

        generator = torch.Generator().manual_seed(0)
        units = {f"trait_{index}": torch.nn.functional.normalize(torch.randn(loaded.hidden_size, generator=generator), dim=0)
                 for index in range(247)}
        layers = {name: layer for name in units}
        synchronize(device)
        started = time.perf_counter()
        project_checkpoints(loaded, switcher, checkpoints, questions, units, layers, scratch / "project", params_hash="bench")
        synchronize(device)
        project = (time.perf_counter() - started) / len(checkpoints)

    n_answer_tokens = sum(len(loaded.chat.tokenize(m).input_ids) for m in answered)
    print(f"model {args.model}, layer {layer}, {describe(device)}")
    print(f"SAE training data: {len(vectors)} token vectors from {len(chats)} prompts, captured in {capture_seconds:.1f} s")
    print(f"SAE training: {args.steps} steps of {min(defaults.batch_size, len(vectors))} vectors, d_sae {args.d_sae}, "
          f"k {args.k}: {result.seconds:.1f} s ({result.seconds / args.steps * 1000:.0f} ms per step)")
    print(f"diff one checkpoint ({len(answered)} answers, {n_answer_tokens} tokens with prompts, every answer token "
          f"encoded): {diff:.2f} s")
    print(f"project one checkpoint ({len(questions)} questions, 247 directions): {project:.2f} s")
    print(f"ratio (diff / project): {diff / project:.2f}x")
    print(f"SAE training costs {result.seconds / project:.0f} checkpoint projections")


if __name__ == "__main__":
    main()
