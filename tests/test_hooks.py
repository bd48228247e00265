"""The pooled capture must equal what transformers' own output_hidden_states gives on each example
run alone: every tiny family, both padding sides, mixed lengths, LoRA, 4-bit, early exit."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from traitspace.core.hooks import (
    capture_conversations,
    capture_pooled,
    decoder_backbone,
    decoder_layers,
    resolve_layers,
    residual_stream,
)
from traitspace.core.models import load_model

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
    [
        {"role": "system", "content": "You are terse and skeptical about everything you are told."},
        {"role": "user", "content": "Tell me about the weather on the coast of France in spring, please."},
        {"role": "assistant", "content": "Probably mild. Probably. Check a forecast rather than trusting me."},
    ],
    [{"role": "user", "content": "Write code to read a file."}, {"role": "assistant", "content": "open(path).read()"}],
]


@contextlib.contextmanager
def final_norm_disabled(model):
    """transformers' hidden_states[-1] has the final norm applied; our layer L-1 is the raw block
    output, so the reference swaps the norm out to read the raw value."""
    backbone = decoder_backbone(model)
    norm = backbone.norm
    backbone.norm = nn.Identity()
    try:
        yield
    finally:
        backbone.norm = norm


@torch.no_grad()
def reference_pooled(loaded, conversations, layers, pooling):
    """Each conversation alone, full forward with output_hidden_states, pooled afterwards."""
    result = {layer: [] for layer in layers}
    with final_norm_disabled(loaded.model):
        for messages in conversations:
            chat = loaded.chat.tokenize(messages)
            ids = torch.tensor([chat.input_ids], device=loaded.device)
            hidden = loaded.model(input_ids=ids, output_hidden_states=True).hidden_states
            start, end = chat.span(pooling)
            for layer in layers:
                result[layer].append(hidden[layer + 1][0, start:end].float().mean(0).cpu())
    return {layer: torch.stack(vectors) for layer, vectors in result.items()}


def assert_matches(loaded, pooling, padding_side, fast=True, atol=1e-4, batch_size=3):
    layers = list(range(loaded.num_layers))
    got = capture_conversations(loaded, CONVERSATIONS, layers=layers, pooling=pooling,
                                padding_side=padding_side, fast=fast, batch_size=batch_size)
    expected = reference_pooled(loaded, CONVERSATIONS, layers, pooling)
    for layer in layers:
        torch.testing.assert_close(got[layer], expected[layer], atol=atol, rtol=1e-4, msg=f"layer {layer}")


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("pooling", ["response", "prompt", "last_prompt"])
def test_pooled_capture_matches_hidden_states(tiny_loaded, pooling, padding_side):
    assert_matches(tiny_loaded, pooling, padding_side)


def test_full_forward_path_matches_too(tiny_llama):
    assert_matches(tiny_llama, "response", "left", fast=False)


def test_batched_equals_one_at_a_time(tiny_llama):
    batched = capture_conversations(tiny_llama, CONVERSATIONS, layers="all", batch_size=3)
    alone = capture_conversations(tiny_llama, CONVERSATIONS, layers="all", batch_size=1)
    for layer in batched:
        torch.testing.assert_close(batched[layer], alone[layer], atol=1e-5, rtol=1e-5)


def test_early_exit_stops_after_deepest_layer_and_leaves_model_usable(tiny_llama):
    blocks = decoder_layers(tiny_llama.model)
    calls = []
    handles = [block.register_forward_hook(lambda m, i, o, k=k: calls.append(k)) for k, block in enumerate(blocks)]
    try:
        capture_conversations(tiny_llama, CONVERSATIONS[:1], layers=[1])
    finally:
        for handle in handles:
            handle.remove()
    assert calls == [0, 1], "blocks after the deepest requested layer must not run"
    assert all(not block._forward_hooks for block in blocks)
    ids = torch.tensor([tiny_llama.chat.tokenize(CONVERSATIONS[0]).input_ids])
    logits = tiny_llama.model(input_ids=ids).logits
    assert logits.shape[-1] == tiny_llama.model.config.vocab_size


def test_hooks_removed_when_forward_raises(tiny_llama):
    blocks = decoder_layers(tiny_llama.model)
    with pytest.raises(RuntimeError, match="boom"):
        with residual_stream(tiny_llama.model, [0, 2]):
            raise RuntimeError("boom")
    assert all(not block._forward_hooks for block in blocks)
    bad_ids = torch.tensor([[10**6]])  # out of vocabulary: the embedding lookup raises
    with pytest.raises(IndexError):
        capture_pooled(tiny_llama.model, [type("C", (), {"input_ids": [10**6], "span": lambda self, k: (0, 1)})()],
                       layers=[0])
    assert all(not block._forward_hooks for block in blocks)
    del bad_ids


def test_under_lora_adapter(tiny_llama, tmp_path):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(tiny_llama.model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                             init_lora_weights=False))
    tiny_llama.model = peft_model.eval()
    assert_matches(tiny_llama, "response", "left")
    # The adapter really changes the activations (so the test above is not vacuous).
    with peft_model.disable_adapter():
        base = capture_conversations(tiny_llama, CONVERSATIONS, layers=[3])
    adapted = capture_conversations(tiny_llama, CONVERSATIONS, layers=[3])
    assert not torch.allclose(base[3], adapted[3], atol=1e-3)


def test_under_4bit_loading(tiny_model_dirs):
    pytest.importorskip("bitsandbytes")
    loaded = load_model(str(tiny_model_dirs["llama"]), quantization="nf4")
    assert loaded.info["quantization"] == "nf4"
    assert_matches(loaded, "response", "left", atol=1e-3)


def test_resolve_layers():
    assert resolve_layers("all", 4) == [0, 1, 2, 3]
    assert resolve_layers("middle", 30) == [15]
    assert resolve_layers([-1, 0, 0], 4) == [0, 3]
    with pytest.raises(ValueError, match="out of range"):
        resolve_layers([4], 4)
