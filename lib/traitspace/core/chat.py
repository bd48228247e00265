"""Chat formatting and token spans, decided from the model's own chat template.

Everything here is derived by rendering test conversations through the template, never from the
model's name:

- whether the template accepts a system role (Gemma's raises on one): if not, the system prompt
  is folded into the first user turn;
- the model's default system prompt (SmolLM2 and Qwen2.5 insert one when none is given): it is
  made explicit, so every recorded conversation shows the system prompt the model really saw;
- whether the template has a thinking switch (Qwen3's ``enable_thinking``): thinking is turned off.

Token spans (prompt, response) come from character offsets in the rendered text, so the boundary
between prompt and answer is exactly where the template puts it. Rendered text is tokenized with
``add_special_tokens=False`` because the template already wrote the BOS token (a second BOS is a
classic pitfall).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

Message = dict  # {"role": "system" | "user" | "assistant", "content": str}
SpanKind = Literal["response", "prompt", "last_prompt"]

_SYSTEM_PROBE = "SYSTEM-PROBE-7f3a"
_USER_PROBE = "USER-PROBE-2b9c"


@dataclass(frozen=True)
class TokenizedChat:
    """One conversation as token ids plus the spans that pooling reads.

    ``prompt_span``: tokens of the rendered prompt (system + user turns + generation prompt);
    ``response_span``: tokens of the final assistant message's content (template markers excluded),
    or None when the conversation ends with the prompt.
    """

    input_ids: list[int]
    prompt_span: tuple[int, int]
    response_span: tuple[int, int] | None
    messages: tuple[Message, ...]

    def span(self, kind: SpanKind) -> tuple[int, int]:
        """[start, end) token range read by a pooling kind."""
        if kind == "prompt":
            return self.prompt_span
        if kind == "last_prompt":
            return (self.prompt_span[1] - 1, self.prompt_span[1])
        if kind == "response":
            if self.response_span is None or self.response_span[0] == self.response_span[1]:
                raise ValueError("pooling over 'response' needs a conversation ending with a non-empty assistant message")
            return self.response_span
        raise ValueError(f"unknown span kind {kind!r}; use 'response', 'prompt' or 'last_prompt'")


class ChatFormat:
    """The chat conventions of one tokenizer, probed from its template."""

    def __init__(self, tokenizer, system_prompt: str | None = None):
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(
                "this tokenizer has no chat template; the workbook studies chat models "
                "(pass an instruct/chat model, or set tokenizer.chat_template)"
            )
        self.tokenizer = tokenizer
        self.has_thinking_switch = "enable_thinking" in str(tokenizer.chat_template)
        self.supports_system = self._probe_system_support()
        self.model_default_system_prompt = self._probe_default_system_prompt()
        # The system prompt used when a conversation has none: the configured one, else the model's
        # own default (so it is recorded, not silently inserted by the template).
        self.default_system_prompt = system_prompt if system_prompt is not None else self.model_default_system_prompt

    def _template(self, messages: Sequence[Message], add_generation_prompt: bool) -> str:
        kwargs = {"enable_thinking": False} if self.has_thinking_switch else {}
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
        )

    def _probe_system_support(self) -> bool:
        try:
            text = self._template(
                [{"role": "system", "content": _SYSTEM_PROBE}, {"role": "user", "content": _USER_PROBE}], False
            )
        except Exception:  # jinja raise_exception() surfaces as TemplateError; any failure means "no system role"
            return False
        return _SYSTEM_PROBE in text

    def _probe_default_system_prompt(self) -> str | None:
        """The text a template inserts as system prompt when none is given, or None."""
        if not self.supports_system:
            return None
        with_probe = self._template(
            [{"role": "system", "content": _SYSTEM_PROBE}, {"role": "user", "content": _USER_PROBE}], False
        )
        without = self._template([{"role": "user", "content": _USER_PROBE}], False)
        prefix, suffix = with_probe.split(_SYSTEM_PROBE, 1)
        if without.startswith(prefix) and without.endswith(suffix) and len(without) >= len(prefix) + len(suffix):
            inserted = without[len(prefix): len(without) - len(suffix)]
            return inserted or None
        return None

    # -- conversations -------------------------------------------------------------------------
    def conversation(self, user: str, system: str | None = None, assistant: str | None = None) -> list[Message]:
        messages: list[Message] = []
        if system is not None:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": user})
        if assistant is not None:
            messages.append({"role": "assistant", "content": assistant})
        return messages

    def normalize(self, messages: Sequence[Message]) -> list[Message]:
        """The messages the model really sees: default system prompt made explicit, and the system
        prompt folded into the first user turn when the template has no system role."""
        messages = [dict(message) for message in messages]
        if not messages:
            raise ValueError("empty conversation")
        has_system = messages[0]["role"] == "system"
        if not has_system and self.default_system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.default_system_prompt})
            has_system = True
        if has_system and not self.supports_system:
            system = messages.pop(0)["content"]
            if not messages or messages[0]["role"] != "user":
                raise ValueError("a system prompt needs a following user turn to fold into on this template")
            if system:
                messages[0]["content"] = f"{system}\n\n{messages[0]['content']}"
        return messages

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
        return self._template(self.normalize(messages), add_generation_prompt)

    def render_prompt(self, messages: Sequence[Message]) -> str:
        """Rendered text up to and including the generation prompt (drops a final assistant turn)."""
        messages = list(messages)
        if messages and messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        return self.render(messages, add_generation_prompt=True)

    def tokenize(self, messages: Sequence[Message], max_length: int | None = None) -> TokenizedChat:
        """Token ids and spans of a conversation (ending with a user turn or an assistant answer)."""
        normalized = self.normalize(messages)
        prompt_text = self.render_prompt(normalized)
        answer = normalized[-1]["content"] if normalized[-1]["role"] == "assistant" else None
        if answer is None:
            full_text = prompt_text
        else:
            # The answer goes right after the generation prompt, as if the model had generated it,
            # followed by the template's own end-of-turn text. For most templates this equals the
            # rendered conversation; for some (a thinking block only in the generation prompt) it
            # is what the model really sees when it answers.
            rendered = self._template(normalized, add_generation_prompt=False)
            end_of_turn = rendered[rendered.rindex(answer) + len(answer):] if answer else ""
            full_text = prompt_text + answer + end_of_turn
        encoding = self.tokenizer(
            full_text, add_special_tokens=False, return_offsets_mapping=True, truncation=False
        )
        ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
        prompt_end = _first_token_at_or_after(offsets, len(prompt_text))
        response_span = None
        if answer is not None:
            start_char = full_text.index(answer, len(prompt_text)) if answer else len(prompt_text)
            end_char = start_char + len(answer)
            first = _first_token_at_or_after(offsets, start_char)
            last = _first_token_at_or_after(offsets, end_char)
            response_span = (first, last)
        if prompt_end == 0:
            raise ValueError("empty prompt after tokenization")
        if max_length is not None and len(ids) > max_length:
            # Keep the prompt intact and cut the answer: answer tokens at the end are the least needed.
            if prompt_end > max_length:
                raise ValueError(f"prompt of {prompt_end} tokens exceeds max_length={max_length}")
            ids = ids[:max_length]
            if response_span is not None:
                response_span = (min(response_span[0], max_length), min(response_span[1], max_length))
        return TokenizedChat(list(ids), (0, prompt_end), response_span, tuple(normalized))


def _first_token_at_or_after(offsets: Sequence[tuple[int, int]], char: int) -> int:
    """Index of the first token that ends after ``char`` (a token straddling ``char`` belongs to the
    later span, so a boundary merged into one token is never lost from the response)."""
    for index, (start, end) in enumerate(offsets):
        if end > char:
            return index
    return len(offsets)
