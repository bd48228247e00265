"""The steering context manager on tiny random models: exact no-op at alpha 0, ablation leaves no
component, response-only steering spares the prompt and steers the first generated token (with and
without a KV cache, through the project's sampler), batched equals unbatched, LoRA, 4-bit, tuple
block outputs, hooks removed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from traitspace.core.hooks import decoder_layers, residual_stream
from traitspace.core.models import load_model
from traitspace.core.padding import padded_batch
from traitspace.core.sampling import sample_token_ids
from traitspace.steer.hooks import Intervention, apply_operation, steer
from traitspace.steer.scale import residual_norms

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "You are terse and skeptical."},
     {"role": "user", "content": "Tell me about the weather on the coast of France in spring, please."}],
    [{"role": "user", "content": "Write code to read a file."}, {"role": "assistant", "content": "open(path).read()"}],
]


def direction(loaded, seed=0):
    return torch.randn(loaded.hidden_size, generator=torch.Generator().manual_seed(seed))


def ids_of(loaded, messages):
    return loaded.chat.tokenize(messages).input_ids


@torch.no_grad()
def logits_of(loaded, ids):
    return loaded.model(input_ids=torch.tensor([ids], device=loaded.device)).logits[0].float()


@torch.no_grad()
def hidden_at(loaded, ids, layer):
    with residual_stream(loaded.model, [layer]) as captured:
        loaded.model(input_ids=torch.tensor([ids], device=loaded.device))
    return captured[layer][0].float()


def test_alpha_zero_leaves_logits_exactly_unchanged(tiny_loaded):
    ids = ids_of(tiny_loaded, CONVERSATIONS[1])
    before = logits_of(tiny_loaded, ids)
    with steer(tiny_loaded.model, {1: direction(tiny_loaded), 3: direction(tiny_loaded, 1)}, alpha=0.0):
        unchanged = logits_of(tiny_loaded, ids)
    with steer(tiny_loaded.model, {1: direction(tiny_loaded)}, alpha=2.0):
        steered = logits_of(tiny_loaded, ids)
    assert torch.equal(before, unchanged)
    assert not torch.allclose(before, steered, atol=1e-3)  # the hook is live: the test above is not vacuous
    assert all(not block._forward_hooks for block in decoder_layers(tiny_loaded.model))


def test_add_moves_the_block_output_by_alpha_times_scale_along_the_unit_direction(tiny_llama):
    ids = ids_of(tiny_llama, CONVERSATIONS[0])
    vector = direction(tiny_llama)
    unit = vector / vector.norm()
    # The last block's output is read after the steering hook: exactly the change, nothing downstream.
    before = hidden_at(tiny_llama, ids, 3)
    with steer(tiny_llama.model, {3: vector}, alpha=0.5, scales={3: 4.0}):
        after = hidden_at(tiny_llama, ids, 3)
    torch.testing.assert_close(after - before, (2.0 * unit).expand_as(before), atol=1e-5, rtol=1e-5)


def assert_ablated(loaded, layer=2, atol=1e-4):
    ids = ids_of(loaded, CONVERSATIONS[1])
    vector = direction(loaded, 3)
    unit = (vector / vector.norm()).to(loaded.device)
    before = hidden_at(loaded, ids, layer)
    with steer(loaded.model, {layer: vector}, op="ablate"):
        ablated = hidden_at(loaded, ids, layer)
    with steer(loaded.model, {layer: vector}, alpha=1.5, op="ablate_add"):
        set_to = hidden_at(loaded, ids, layer)
    assert (before @ unit).abs().max() > 10 * atol  # there was a component to remove
    assert (ablated @ unit).abs().max() < atol * before.norm(dim=-1).max()
    torch.testing.assert_close(set_to @ unit, torch.full((len(ids),), 1.5, device=loaded.device), atol=atol * 10, rtol=1e-3)
    # Everything orthogonal to the direction is kept.
    torch.testing.assert_close(ablated, before - (before @ unit)[:, None] * unit, atol=1e-4, rtol=1e-3)


def test_ablation_leaves_no_component_along_the_direction(tiny_loaded):
    assert_ablated(tiny_loaded)


def test_ablation_and_alpha_zero_under_a_lora_adapter(tiny_llama):
    from peft import LoraConfig, get_peft_model

    tiny_llama.model = get_peft_model(tiny_llama.model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                                   init_lora_weights=False)).eval()
    assert_ablated(tiny_llama)
    ids = ids_of(tiny_llama, CONVERSATIONS[0])
    before = logits_of(tiny_llama, ids)
    with steer(tiny_llama.model, {1: direction(tiny_llama)}, alpha=0.0):
        assert torch.equal(before, logits_of(tiny_llama, ids))
    with tiny_llama.model.disable_adapter():  # the adapter is live, so the block outputs above were the adapted ones
        assert not torch.allclose(before, logits_of(tiny_llama, ids), atol=1e-3)


def test_ablation_under_4bit_loading(tiny_model_dirs):
    pytest.importorskip("bitsandbytes")
    loaded = load_model(str(tiny_model_dirs["llama"]), quantization="nf4")
    assert loaded.info["quantization"] == "nf4"
    assert_ablated(loaded, atol=1e-3)  # float16/bfloat16 block outputs: the cast back rounds


def test_block_outputs_given_as_tuples_are_steered_and_returned_as_tuples(tiny_llama):
    """Older transformers blocks return (hidden, ...): steering must change element 0 of every batch row."""
    blocks = decoder_layers(tiny_llama.model)
    inputs, _ = padded_batch([ids_of(tiny_llama, messages) for messages in CONVERSATIONS[:2]],
                             tiny_llama.tokenizer.pad_token_id, "left")
    seen = []

    def as_tuple(_module, _inputs, output):
        return (output, "extra")

    def back_to_tensor(_module, _inputs, output):
        seen.append(type(output))
        return output[0]

    vector = direction(tiny_llama)
    with torch.no_grad(), steer(tiny_llama.model, {1: vector}, alpha=1.0):
        reference = tiny_llama.model(**inputs).logits
    first = blocks[1].register_forward_hook(as_tuple)
    try:
        with torch.no_grad(), steer(tiny_llama.model, {1: vector}, alpha=1.0):
            last = blocks[1].register_forward_hook(back_to_tensor)
            try:
                through_tuples = tiny_llama.model(**inputs).logits
            finally:
                last.remove()
    finally:
        first.remove()
    assert seen == [tuple]
    torch.testing.assert_close(through_tuples, reference)


def test_batched_equals_unbatched(tiny_llama):
    rows = [ids_of(tiny_llama, messages) for messages in CONVERSATIONS]
    vector = direction(tiny_llama)
    for op in ("add", "ablate_add", "ablate"):
        with torch.no_grad(), steer(tiny_llama.model, {2: vector}, alpha=0.8, op=op):
            inputs, offsets = padded_batch(rows, tiny_llama.tokenizer.pad_token_id, "left")
            batched = tiny_llama.model(**inputs).logits
            for row, (ids, offset) in enumerate(zip(rows, offsets)):
                alone = tiny_llama.model(input_ids=torch.tensor([ids])).logits[0]
                torch.testing.assert_close(batched[row, offset:], alone, atol=1e-4, rtol=1e-4, msg=f"{op} row {row}")


def test_response_only_steering_spares_the_prompt_and_steers_the_first_generated_token(tiny_llama):
    prompt = ids_of(tiny_llama, CONVERSATIONS[1])
    length = len(prompt)
    generated = [17, 42, 99]
    full = prompt + generated
    vector = direction(tiny_llama)
    before_hidden, before_logits = hidden_at(tiny_llama, full, 1), logits_of(tiny_llama, full)
    with Intervention({1: vector}, alpha=1.0, positions="response").applied(tiny_llama.model, length):
        after_hidden, after_logits = hidden_at(tiny_llama, full, 1), logits_of(tiny_llama, full)
    # Every prompt position before the last is untouched, exactly (causal attention: nothing later reaches them).
    assert torch.equal(before_hidden[: length - 1], after_hidden[: length - 1])
    assert torch.equal(before_logits[: length - 1], after_logits[: length - 1])
    # The last prompt token predicts the first generated token: it is steered, and so is every response token.
    assert not torch.allclose(before_logits[length - 1], after_logits[length - 1], atol=1e-3)
    unit = vector / vector.norm()
    torch.testing.assert_close(after_hidden[length - 1:] - before_hidden[length - 1:],
                               unit.expand(len(generated) + 1, -1), atol=1e-5, rtol=1e-5)

    # With a KV cache (the prompt prefilled, then one token per pass) every step matches the no-cache pass.
    with torch.no_grad(), Intervention({1: vector}, alpha=1.0, positions="response").applied(tiny_llama.model, length):
        output = tiny_llama.model(input_ids=torch.tensor([prompt]), use_cache=True)
        cached = [output.logits[0, -1]]
        cache = output.past_key_values
        for token in generated:
            output = tiny_llama.model(input_ids=torch.tensor([[token]]), past_key_values=cache, use_cache=True)
            cache = output.past_key_values
            cached.append(output.logits[0, -1])
    torch.testing.assert_close(torch.stack(cached).float(), after_logits[length - 1:], atol=1e-4, rtol=1e-4)


@torch.no_grad()
def greedy_reference(loaded, prompt, n_tokens, intervention):
    """Greedy decoding by recomputing the whole sequence each step (no cache), under the intervention."""
    ids = list(prompt)
    with intervention.applied(loaded.model, len(prompt)):
        for _ in range(n_tokens):
            ids.append(int(loaded.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


def test_response_only_steering_through_the_continuous_batching_sampler(tiny_llama):
    prompt = ids_of(tiny_llama, CONVERSATIONS[1])
    steered = Intervention({2: direction(tiny_llama, 5)}, alpha=3.0, positions="response")
    with steered.applied(tiny_llama.model, len(prompt)):
        sampled = sample_token_ids(tiny_llama.model, [prompt, prompt], [0, 1], max_new_tokens=6, stop_ids=[],
                                   pad_token_id=tiny_llama.tokenizer.pad_token_id, temperature=0.0)
    expected = greedy_reference(tiny_llama, prompt, 6, steered)
    assert [list(result.token_ids) for result in sampled] == [expected, expected]
    assert expected != greedy_reference(tiny_llama, prompt, 6, Intervention.none())  # steering changed the reply


def test_hooks_are_removed_when_the_block_raises_and_bad_arguments_are_named(tiny_llama):
    blocks = decoder_layers(tiny_llama.model)
    with pytest.raises(RuntimeError, match="boom"):
        with steer(tiny_llama.model, {0: direction(tiny_llama)}, alpha=1.0):
            raise RuntimeError("boom")
    assert all(not block._forward_hooks for block in blocks)
    with pytest.raises(ValueError, match="unknown steering operation"):
        with steer(tiny_llama.model, {0: direction(tiny_llama)}, op="cap"):
            pass
    with pytest.raises(ValueError, match="norm 0"):
        with steer(tiny_llama.model, {0: torch.zeros(tiny_llama.hidden_size)}):
            pass
    with pytest.raises(ValueError, match="hidden size"):
        with steer(tiny_llama.model, {0: torch.ones(3)}):
            pass
    with pytest.raises(ValueError, match="out of range"):
        with steer(tiny_llama.model, {9: direction(tiny_llama)}):
            pass
    assert all(not block._forward_hooks for block in blocks)


def test_apply_operation_keeps_the_dtype_and_only_steered_tokens_change():
    hidden = torch.randn(2, 5, 8, dtype=torch.bfloat16)
    unit = torch.nn.functional.normalize(torch.randn(8), dim=0)
    mask = torch.tensor([[False, False, True, True, True]] * 2)[..., None]
    out = apply_operation(hidden, unit, 2.0, "add", mask)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out[:, :2], hidden[:, :2]) and not torch.equal(out[:, 2:], hidden[:, 2:])


def test_residual_norms_are_the_median_token_norm_without_the_first_token(tiny_llama):
    conversations = CONVERSATIONS[:2]
    norms = residual_norms(tiny_llama, conversations, [1, 3], batch_size=1)
    batched = residual_norms(tiny_llama, conversations, [1, 3], batch_size=2)
    expected = np.median(torch.cat([hidden_at(tiny_llama, ids_of(tiny_llama, messages), 3)[1:].norm(dim=-1)
                                    for messages in conversations]).numpy())
    assert norms[3] == pytest.approx(float(expected), rel=1e-3)
    assert batched == pytest.approx(norms, rel=1e-4)
