"""Reading the model for extraction: one activation per layer and planned conversation.

- Prompt mode: the residual stream at the last prompt token, or the mean over the prompt tokens,
  with shared prefixes computed once (:func:`traitspace.core.prompt_capture.capture_shared_prefixes`).
  Conversations that share a system prompt share every token before the question: that prefix runs
  once, its key/value cache is reused, and only the question tokens run on top, which is exact
  (causal attention) and cuts the tokens processed by more than half for the trait library.
- Response mode: the model answers each question under its system prompt
  (:func:`traitspace.core.sampling.generate_replies`), then activations are averaged over the answer
  tokens (:func:`traitspace.core.hooks.capture_conversations`).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ..core.config import ExtractSection
from ..core.hooks import capture_conversations
from ..core.prompt_capture import CaptureCounts, capture_shared_prefixes
from .plan import plan_conversations, system_or_none


def capture_prompts(loaded, plan: pd.DataFrame, settings: ExtractSection, layers: list[int],
                    timings: dict[str, float], counts: CaptureCounts) -> np.ndarray:
    """Prompt mode: ``[n rows, L, H]`` activations of the plan's conversations (shared prefixes
    computed once unless ``extract.share_prefixes`` is off)."""
    conversations = plan_conversations(loaded, plan)
    started = time.perf_counter()
    if settings.share_prefixes:
        captured = capture_shared_prefixes(loaded, conversations, layers, settings.pooling, settings.batch_size, counts)
    else:
        captured = capture_conversations(loaded, conversations, layers=layers, pooling=settings.pooling,
                                         batch_size=settings.batch_size)
        lengths = sum(len(loaded.chat.tokenize(messages).input_ids) for messages in conversations)
        counts.tokens_run += lengths
        counts.tokens_plain += lengths
    timings["capture_s"] = timings.get("capture_s", 0.0) + time.perf_counter() - started
    return np.stack([captured[layer].numpy() for layer in layers], axis=1)


def generate_and_capture(loaded, plan: pd.DataFrame, settings: ExtractSection, layers: list[int],
                         timings: dict[str, float]) -> tuple[np.ndarray, list[str]]:
    """Response mode: the answers to the plan's conversations and ``[n rows, L, H]`` activations
    averaged over each answer (nan rows where the answer is empty)."""
    conversations = plan_conversations(loaded, plan)
    started = time.perf_counter()
    from ..core.sampling import generate_replies

    answers = generate_replies(loaded, conversations, max_new_tokens=settings.max_new_tokens,
                               temperature=settings.temperature, batch_size=settings.batch_size, seed=settings.seed)
    timings["generate_s"] = timings.get("generate_s", 0.0) + time.perf_counter() - started
    activations = np.full((len(plan), len(layers), loaded.hidden_size), np.nan, dtype=np.float32)
    answered = [index for index, answer in enumerate(answers) if answer.strip()]
    if answered:
        started = time.perf_counter()
        with_answers = [loaded.chat.conversation(plan["question"].iloc[index], system=system_or_none(plan["system"].iloc[index]),
                                                 assistant=answers[index]) for index in answered]
        captured = capture_conversations(loaded, with_answers, layers=layers, pooling="response",
                                         batch_size=settings.batch_size)
        activations[answered] = np.stack([captured[layer].numpy() for layer in layers], axis=1)
        timings["capture_s"] = timings.get("capture_s", 0.0) + time.perf_counter() - started
    return activations, answers
