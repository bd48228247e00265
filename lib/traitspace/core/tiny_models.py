"""Tiny randomly initialised chat models, built offline, for tests and the smoke params.

Three families cover the chat-template cases the workbook must handle:

- ``llama``: a Llama model with a Llama-3-style template that accepts a system role and adds no
  default system prompt;
- ``qwen2``: a Qwen2 model with a ChatML template that inserts a default system prompt when none
  is given and has a thinking switch (``enable_thinking``), like Qwen3;
- ``nosystem``: a Gemma model whose template raises on a system message, like Gemma's.

The tokenizer is a byte-level BPE trained in memory on a small built-in corpus, so no network is
needed and any text encodes without unknown tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch

TINY_ARCHITECTURES = ("llama", "qwen2", "nosystem")
TINY_DEFAULT_SYSTEM_PROMPT = "You are Tiny, a small helpful assistant."

_SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<|im_start|>", "<|im_end|>", "<start_of_turn>", "<end_of_turn>",
                   "<|header_start|>", "<|header_end|>", "<|eot|>", "<think>", "</think>"]

_LLAMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|header_start|>' + message['role'] + '<|header_end|>\n\n' + message['content'] + '<|eot|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|header_start|>assistant<|header_end|>\n\n' }}{% endif %}"
)
_QWEN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + TINY_DEFAULT_SYSTEM_PROMPT + "<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\n\n</think>\n\n' }}{% endif %}"
    "{% endif %}"
)
_NOSYSTEM_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

_CORPUS = [
    "You are a helpful assistant. Answer the question clearly and briefly.",
    "What is the capital of France? The capital of France is Paris.",
    "Write a function that reads a file and returns its lines.",
    "I feel curious, cautious, skeptical and kind about the world today.",
    "def load(path):\n    with open(path) as handle:\n        return handle.read()\n",
    "The quick brown fox jumps over the lazy dog 0123456789 times.",
    "Please give me advice about money, health, code and people.",
    "system user assistant model question answer response prompt",
]


def build_tiny_tokenizer(chat_template: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def _tiny_config(architecture: str, vocab_size: int, pad_id: int, bos_id: int, eos_id: int):
    from transformers import GemmaConfig, LlamaConfig, Qwen2Config

    # hidden 64 keeps bitsandbytes' 4-bit blocks whole (NF4 quantises in blocks of 64).
    common = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id, tie_word_embeddings=False,
    )
    if architecture == "llama":
        return LlamaConfig(**common)
    if architecture == "qwen2":
        return Qwen2Config(**common)
    if architecture == "nosystem":
        return GemmaConfig(**common, head_dim=16)
    raise ValueError(f"unknown tiny architecture {architecture!r}; choose one of {TINY_ARCHITECTURES}")


def build_tiny_model(architecture: str, path: str | Path, seed: int = 0) -> Path:
    """Build a tiny random model + tokenizer of one family and save it as a local folder."""
    from transformers import AutoModelForCausalLM

    templates = {"llama": _LLAMA_TEMPLATE, "qwen2": _QWEN_TEMPLATE, "nosystem": _NOSYSTEM_TEMPLATE}
    if architecture not in templates:
        raise ValueError(f"unknown tiny architecture {architecture!r}; choose one of {TINY_ARCHITECTURES}")
    tokenizer = build_tiny_tokenizer(templates[architecture])
    config = _tiny_config(
        architecture, len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
