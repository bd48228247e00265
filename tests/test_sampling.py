"""The continuous-batching sampler: same greedy output as ``generate``, exact sampling
distribution, per-sample seeds independent of batching, and the row/column bookkeeping of the
shared key/value buffer checked step by step on a scripted model."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from scipy import stats as scipy_stats

from traitspace.core.hooks import collate
from traitspace.core.sampling import (
    _inverse_cdf,
    _top_p_mask,
    choose_next_tokens,
    derive_seed,
    generate_replies,
    sample_replies,
    sample_token_ids,
    stop_token_ids,
)

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and on a CPU shared with other jobs OpenMP
    threads that wait for each other make these tests ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


QUESTIONS = [
    "Hi there",
    "What is the capital of France? Tell me about it, please, in detail.",
    "x",
    "Write a function that reads a file.",
    "I feel curious today.",
]


# -- against generate -----------------------------------------------------------------------------
@torch.inference_mode()
def _generate_greedy(loaded, conversations, max_new_tokens, batch_size):
    """Plain ``generate`` (greedy) on fixed left-padded batches, decoded like the sampler."""
    stops = stop_token_ids(loaded)
    chats = [loaded.chat.tokenize(messages) for messages in conversations]
    replies = []
    for start in range(0, len(chats), batch_size):
        inputs, _ = collate(chats[start: start + batch_size], loaded.tokenizer.pad_token_id, "left")
        inputs.pop("position_ids")
        output = loaded.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                       eos_token_id=stops, pad_token_id=loaded.tokenizer.pad_token_id)
        for row in output[:, inputs["input_ids"].shape[1]:]:
            replies.append(loaded.tokenizer.decode(row, skip_special_tokens=True).strip())
    return replies


def test_greedy_equals_generate_on_every_tiny_family(tiny_loaded):
    conversations = [tiny_loaded.chat.conversation(question) for question in QUESTIONS]
    expected = _generate_greedy(tiny_loaded, conversations, max_new_tokens=24, batch_size=1)
    # batch_size 2 < 5 prompts of different lengths: rows are refilled and columns shifted.
    ours = generate_replies(tiny_loaded, conversations, max_new_tokens=24, temperature=0.0, batch_size=2)
    assert ours == expected
    assert generate_replies(tiny_loaded, conversations, max_new_tokens=24, temperature=0.0, batch_size=8) == expected


def test_greedy_equals_batched_generate(tiny_llama):
    conversations = [tiny_llama.chat.conversation(question, system="Be brief.") for question in QUESTIONS]
    expected = _generate_greedy(tiny_llama, conversations, max_new_tokens=16, batch_size=len(conversations))
    assert generate_replies(tiny_llama, conversations, max_new_tokens=16, temperature=0.0) == expected


def test_stop_tokens_include_end_of_turn(tiny_llama):
    stops = stop_token_ids(tiny_llama)
    assert tiny_llama.tokenizer.eos_token_id in stops
    assert tiny_llama.tokenizer.convert_tokens_to_ids("<|eot|>") in stops  # the tiny Llama template's end of turn


# -- seeds ----------------------------------------------------------------------------------------
def test_sample_does_not_depend_on_batching(tiny_llama):
    conversations = [tiny_llama.chat.conversation(question) for question in QUESTIONS] * 3
    seeds = [derive_seed("test", index) for index in range(len(conversations))]
    together = sample_replies(tiny_llama, conversations, seeds, max_new_tokens=20, batch_size=16)
    small_batches = sample_replies(tiny_llama, conversations, seeds, max_new_tokens=20, batch_size=3)
    alone = [sample_replies(tiny_llama, [messages], [seed], max_new_tokens=20, batch_size=1)[0]
             for messages, seed in zip(conversations[:5], seeds[:5])]
    assert together == small_batches
    assert together[:5] == alone
    # Same prompt, different seeds: different samples (a random tiny model spreads its mass widely).
    assert len({reply.text for reply in together[::5]}) == 3
    assert all(reply.seed == seed for reply, seed in zip(together, seeds))
    assert all(0 < reply.n_tokens <= 20 for reply in together)


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(0, "q", 1) == derive_seed(0, "q", 1)
    assert derive_seed(0, "q", 1) != derive_seed(0, "q", 2)
    assert 0 <= derive_seed("anything") < 2**63


# -- the token choice -------------------------------------------------------------------------------
def test_inverse_cdf_matches_full_cumulative_sum():
    generator = torch.Generator().manual_seed(0)
    weights = torch.exp(3 * torch.randn(16, 1000, generator=generator))
    weights[:, 300:700] = 0.0  # whole zero blocks must be skipped
    weights[:, -3:] = 0.0
    uniforms = torch.rand(16, generator=generator, dtype=torch.float64)
    cumulative = weights.double().cumsum(-1)
    expected = torch.searchsorted(cumulative, (uniforms * cumulative[:, -1])[:, None], right=True).squeeze(-1)
    assert torch.equal(_inverse_cdf(weights, uniforms), expected)
    assert (weights.gather(1, _inverse_cdf(weights, torch.full((16,), 0.999999, dtype=torch.float64))[:, None]) > 0).all()


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sampling_distribution_is_softmax(temperature):
    vocab, draws = 700, 40000  # vocab spans three blocks of the two-level search
    generator = torch.Generator().manual_seed(1)
    logits = torch.full((vocab,), -30.0)
    support = torch.tensor([3, 100, 257, 420, 511, 699])
    logits[support] = torch.tensor([0.0, 1.0, -0.5, 0.3, 2.0, -1.0])
    uniforms = torch.rand(draws, generator=generator, dtype=torch.float64)
    tokens = choose_next_tokens(logits.expand(draws, vocab), uniforms, temperature=temperature)
    counts = torch.bincount(tokens, minlength=vocab)
    assert counts.sum() == counts[support].sum()  # the -30 tokens have ~1e-13 probability
    expected = torch.softmax(logits / temperature, -1)[support].double().numpy()
    _, p_value = scipy_stats.chisquare(counts[support].numpy(), expected / expected.sum() * draws)
    assert p_value > 1e-3


def test_top_p_keeps_the_same_tokens_as_transformers():
    from transformers.generation.logits_process import TopPLogitsWarper

    generator = torch.Generator().manual_seed(2)
    logits = 2 * torch.randn(8, 300, generator=generator)
    for top_p in (0.1, 0.5, 0.9):
        warped = TopPLogitsWarper(top_p=top_p)(None, logits.clone())
        removed_by_transformers = torch.isinf(warped)
        assert torch.equal(_top_p_mask(torch.softmax(logits, -1), top_p), removed_by_transformers)
        uniforms = torch.rand(8, generator=generator, dtype=torch.float64)
        chosen = choose_next_tokens(logits, uniforms, temperature=1.0, top_p=top_p)
        assert not removed_by_transformers.gather(1, chosen[:, None]).any()


def test_greedy_choice_is_argmax():
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, 0.0, 5.0]])
    assert choose_next_tokens(logits, None, temperature=0.0).tolist() == [1, 0]
    with pytest.raises(ValueError):
        choose_next_tokens(logits, None, temperature=1.0)


# -- the buffer bookkeeping, on a scripted model ------------------------------------------------------
STOP = 1
PREFIX = [3, 4, 5, 6, 7, 8, 9, 2]  # a "system prompt" every scripted prompt begins with


class ScriptedModel(torch.nn.Module):
    """A fake causal LM whose cache stores each token's (position, token id).

    Every forward checks what a real model would silently get wrong: the unmasked cache columns of
    each row must hold positions 0..n-1 in order and exactly the row's own tokens (shared prefix,
    its prompt code, the codes generated so far), and during decoding the mask must be one
    contiguous block at the right. Prompts are PREFIX + [code] * k; the model repeats the code until
    position ``len(prompt) + 4 * (code % 5)``, where it emits STOP (long and short answers mixed, so
    rows leave at different times and the buffer must be trimmed and refilled).
    """

    def __init__(self, prompt_lengths: dict[int, int], prefix: list[int] = PREFIX, vocab: int = 64, layers: int = 2):
        super().__init__()
        self.prefix = prefix
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.prompt_lengths = prompt_lengths
        self.vocab = vocab
        text = SimpleNamespace(num_hidden_layers=layers, layer_types=None, is_encoder_decoder=False)
        text.get_text_config = lambda decoder=True: text
        self.config = text
        self.prefill_calls: list[list[list[int]]] = []  # input token ids of each prefill forward

    def forward(self, input_ids, attention_mask, position_ids, past_key_values, use_cache=True, logits_to_keep=0):
        rows, new = input_ids.shape
        prefill = type(past_key_values).__name__ != "BufferCache"  # decoding runs on the sampler's buffer
        if prefill:
            self.prefill_calls.append(input_ids.tolist())
        states = torch.stack([position_ids.float(), input_ids.float()], dim=-1)[:, None]
        for layer in range(self.config.num_hidden_layers):
            keys, _ = past_key_values.update(states, states, layer)
        codes = input_ids[:, -1]
        for row in range(rows):
            real = attention_mask[row].bool().nonzero().squeeze(-1)
            assert torch.equal(keys[row, 0, real, 0], torch.arange(len(real), dtype=torch.float32)), "positions"
            if not prefill:
                assert int(real[0]) + len(real) == attention_mask.shape[1], "decoding mask not one block at the right"
            seen = keys[row, 0, real, 1].long().tolist()
            if len(seen) > len(self.prefix):
                code = int(codes[row])
                assert seen == self.prefix + [code] * (len(seen) - len(self.prefix)), "a row sees other tokens"
        logits = torch.full((rows, 1, self.vocab), -10.0)
        for row, (code, position) in enumerate(zip(codes.tolist(), position_ids[:, -1].tolist())):
            if code in self.prompt_lengths:
                stop_at = self.prompt_lengths[code] + 4 * (code % 5)
                logits[row, 0, STOP if position >= stop_at else code] = 10.0
        return SimpleNamespace(logits=logits)


def test_scheduler_keeps_rows_and_columns_consistent():
    # Prompts: PREFIX then code c repeated 1..8 times (codes 10..17); three samples each.
    prompts = {code: PREFIX + [code] * (1 + code - 10) for code in range(10, 18)}
    model = ScriptedModel({code: len(prompt) for code, prompt in prompts.items()})
    requests = [prompts[code] for code in prompts for _ in range(3)]
    limits = [3 if index % 7 == 0 else 20 for index in range(len(requests))]
    results = sample_token_ids(model, requests, seeds=list(range(len(requests))), max_new_tokens=limits,
                               stop_ids=[STOP], pad_token_id=0, temperature=0.0, batch_size=4, refill_fraction=0.25)
    for prompt, limit, result in zip(requests, limits, results):
        code = prompt[-1]
        expected = [code] * (4 * (code % 5) + 1) + [STOP]
        assert list(result.token_ids) == expected[:limit]
        assert result.stopped == (len(expected) <= limit)
    # Each distinct prompt is prefilled once however many samples it has, and the shared PREFIX runs
    # once per prefill batch (as a single row) instead of once per prompt.
    suffix_tokens = [token for call in model.prefill_calls for row in call for token in row if token >= 10]
    assert sorted(set(suffix_tokens)) == sorted(prompts)
    prefix_runs = [call for call in model.prefill_calls if call == [PREFIX]]
    assert 1 <= len(prefix_runs) < len(prompts)
    assert sum(len(call) for call in model.prefill_calls if call != [PREFIX]) == len(prompts)


def test_prompts_without_a_long_common_prefix_are_prefilled_whole():
    prompts = {code: [code] * 4 for code in range(10, 14)}
    model = ScriptedModel({code: 4 for code in prompts}, prefix=[])
    results = sample_token_ids(model, list(prompts.values()), seeds=[0] * 4, max_new_tokens=30, stop_ids=[STOP],
                               pad_token_id=0, temperature=0.0)
    assert [len(result.token_ids) for result in results] == [4 * (code % 5) + 2 for code in prompts]
    assert len(model.prefill_calls) == 1 and len(model.prefill_calls[0]) == 4


def test_scheduler_rejects_bad_input():
    model = ScriptedModel({5: 1})
    with pytest.raises(ValueError, match="seeds"):
        sample_token_ids(model, [[5]], seeds=[], max_new_tokens=2, stop_ids=[STOP], pad_token_id=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        sample_token_ids(model, [[5]], seeds=[0], max_new_tokens=0, stop_ids=[STOP], pad_token_id=0)
    assert sample_token_ids(model, [], seeds=[], max_new_tokens=2, stop_ids=[STOP], pad_token_id=0) == []


def test_models_the_buffer_cannot_hold_fall_back_to_generate(tiny_llama, monkeypatch):
    from traitspace.core import sampling

    conversations = [tiny_llama.chat.conversation(question) for question in QUESTIONS[:3]]
    fast = generate_replies(tiny_llama, conversations, max_new_tokens=12)
    hybrid = SimpleNamespace(layer_types=["full_attention", "linear_attention"], is_encoder_decoder=False)
    hybrid.get_text_config = lambda decoder=True: hybrid
    assert not sampling.supports_fast_sampling(SimpleNamespace(config=hybrid))
    monkeypatch.setattr(sampling, "supports_fast_sampling", lambda model: False)
    assert generate_replies(tiny_llama, conversations, max_new_tokens=12) == fast  # greedy: same replies
    with pytest.raises(NotImplementedError):
        sample_token_ids(tiny_llama.model, [[1, 2]], [0], max_new_tokens=2, stop_ids=[2], pad_token_id=0)


def test_left_padded_positions_count_real_tokens():
    from traitspace.core.sampling import left_padded

    inputs, offsets = left_padded([[5, 6, 7], [8]], pad_token_id=0)
    assert offsets == [0, 2]
    assert inputs["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert inputs["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert inputs["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]
