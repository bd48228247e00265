"""The answer-likelihood scorer against a direct computation from the model's own logits."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from traitspace.core.likelihood import answer_log_likelihoods

QUESTIONS = ["What would you do with a million dollars?", "hi", "Tell me about your day, in detail please."]
ANSWERS = ["Pay off debts and save the rest.", "Hello! How can I help you today?", "ok"]


def _direct(loaded, chat) -> float:
    """Mean log p of the answer tokens from one unpadded ``model(input_ids)`` call."""
    ids = torch.tensor([chat.input_ids])
    with torch.no_grad():
        logits = loaded.model(input_ids=ids).logits[0].float()
    first, end = chat.response_span
    logp = torch.log_softmax(logits[first - 1: end - 1], dim=-1)
    return float(logp.gather(1, ids[0, first:end, None])[:, 0].mean())


def _chats(loaded):
    return [loaded.chat.tokenize(loaded.chat.conversation(question, assistant=answer))
            for question, answer in zip(QUESTIONS, ANSWERS)]


@pytest.mark.parametrize("share_prefixes", [True, False])
def test_scorer_equals_direct_logits_and_skips_prompt_and_template_tokens(tiny_loaded, share_prefixes):
    chats = _chats(tiny_loaded)
    for chat in chats:  # the scored span is the answer's content only, not the end-of-turn marker
        assert chat.response_span[0] > 0 and chat.response_span[1] <= len(chat.input_ids)
    scores = answer_log_likelihoods(tiny_loaded.model, chats, tiny_loaded.tokenizer.pad_token_id, batch_size=8,
                                    share_prefixes=share_prefixes)
    expected = [_direct(tiny_loaded, chat) for chat in chats]
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)


def test_batched_equals_one_at_a_time(tiny_loaded):
    chats = _chats(tiny_loaded)
    pad = tiny_loaded.tokenizer.pad_token_id
    batched = answer_log_likelihoods(tiny_loaded.model, chats, pad, batch_size=3)
    alone = answer_log_likelihoods(tiny_loaded.model, chats, pad, batch_size=1)
    np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-6)


def test_answers_sharing_a_question_score_on_its_prompt_cache_as_they_would_alone(tiny_loaded):
    """Several answers per question (the preference's shape): the shared-prompt path, in batches that
    split groups and mix groups of one, equals one-at-a-time plain scoring and the direct logits."""
    answers = ["Yes.", "No, never do that, it is dangerous and you could get hurt badly.", "Yes. Absolutely.", "Maybe"]
    questions = QUESTIONS + ["A question with one answer only"]
    pairs = [(question, answer) for question in QUESTIONS for answer in answers] + [(questions[-1], "Sure thing.")]
    chats = [tiny_loaded.chat.tokenize(tiny_loaded.chat.conversation(question, assistant=answer)) for question, answer in pairs]
    pad = tiny_loaded.tokenizer.pad_token_id
    alone = answer_log_likelihoods(tiny_loaded.model, chats, pad, batch_size=1, share_prefixes=False)
    for batch_size in (2, 3, 16):
        shared = answer_log_likelihoods(tiny_loaded.model, chats, pad, batch_size=batch_size, share_prefixes=True)
        np.testing.assert_allclose(shared, alone, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(alone, [_direct(tiny_loaded, chat) for chat in chats], rtol=1e-4, atol=1e-5)


def test_a_conversation_without_an_answer_is_refused(tiny_llama):
    chat = tiny_llama.chat.tokenize(tiny_llama.chat.conversation("no answer here"))
    with pytest.raises(ValueError, match="answer"):
        answer_log_likelihoods(tiny_llama.model, [chat], tiny_llama.tokenizer.pad_token_id)
