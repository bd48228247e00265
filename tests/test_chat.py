"""Chat formatting decided from the template itself, and exact token spans."""

import pytest

from traitspace.core.tiny_models import TINY_DEFAULT_SYSTEM_PROMPT


def test_system_support_and_default_prompt_are_probed(tiny_model_dirs):
    from traitspace.core.models import load_model

    llama = load_model(str(tiny_model_dirs["llama"])).chat
    qwen = load_model(str(tiny_model_dirs["qwen2"])).chat
    nosystem = load_model(str(tiny_model_dirs["nosystem"])).chat
    assert llama.supports_system and llama.model_default_system_prompt is None
    assert qwen.supports_system and qwen.model_default_system_prompt == TINY_DEFAULT_SYSTEM_PROMPT
    assert not nosystem.supports_system
    assert qwen.has_thinking_switch and not llama.has_thinking_switch


def test_default_system_prompt_is_made_explicit(tiny_model_dirs):
    from traitspace.core.models import load_model

    chat = load_model(str(tiny_model_dirs["qwen2"])).chat
    messages = chat.normalize([{"role": "user", "content": "hi"}])
    assert messages[0] == {"role": "system", "content": TINY_DEFAULT_SYSTEM_PROMPT}
    # Rendering the explicit version equals what the template would have inserted silently.
    assert chat.render([{"role": "user", "content": "hi"}]) == chat.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False)


def test_configured_system_prompt_overrides_model_default(tiny_model_dirs):
    from traitspace.core.models import load_model

    chat = load_model(str(tiny_model_dirs["qwen2"]), system_prompt="Be brief.").chat
    assert chat.normalize([{"role": "user", "content": "hi"}])[0]["content"] == "Be brief."


def test_system_prompt_folded_into_first_user_turn(tiny_model_dirs):
    from traitspace.core.models import load_model

    chat = load_model(str(tiny_model_dirs["nosystem"])).chat
    messages = chat.normalize([{"role": "system", "content": "Be a pirate."}, {"role": "user", "content": "Hello"}])
    assert messages == [{"role": "user", "content": "Be a pirate.\n\nHello"}]
    text = chat.render([{"role": "system", "content": "Be a pirate."}, {"role": "user", "content": "Hello"}])
    assert "Be a pirate." in text and text.count("<bos>") == 1


def test_thinking_is_turned_off(tiny_model_dirs):
    from traitspace.core.models import load_model

    chat = load_model(str(tiny_model_dirs["qwen2"])).chat
    prompt = chat.render_prompt([{"role": "user", "content": "hi"}])
    assert prompt.endswith("<think>\n\n</think>\n\n")


def test_spans_decode_to_the_answer_and_prompt(tiny_loaded):
    chat = tiny_loaded.chat
    tokenizer = tiny_loaded.tokenizer
    answer = "Fine, thanks. And you?"
    tokenized = chat.tokenize(chat.conversation("How are you today?", system="Be polite.", assistant=answer))
    start, end = tokenized.span("response")
    assert tokenizer.decode(tokenized.input_ids[start:end]) == answer
    prompt_ids = tokenized.input_ids[: tokenized.prompt_span[1]]
    assert tokenizer.decode(prompt_ids) == chat.render_prompt(tokenized.messages)
    # One BOS at most: the template writes it, tokenization must not add another.
    bos = tokenizer.bos_token_id
    assert tokenized.input_ids.count(bos) <= 1
    assert tokenized.span("last_prompt") == (tokenized.prompt_span[1] - 1, tokenized.prompt_span[1])


def test_response_span_requires_an_answer(tiny_llama):
    tokenized = tiny_llama.chat.tokenize([{"role": "user", "content": "hi"}])
    assert tokenized.response_span is None
    with pytest.raises(ValueError, match="response"):
        tokenized.span("response")


def test_max_length_truncates_the_answer_not_the_prompt(tiny_llama):
    chat = tiny_llama.chat
    full = chat.tokenize(chat.conversation("Question?", assistant="word " * 200))
    cut = chat.tokenize(chat.conversation("Question?", assistant="word " * 200), max_length=full.prompt_span[1] + 5)
    assert cut.prompt_span == full.prompt_span
    assert cut.response_span[1] == full.prompt_span[1] + 5
