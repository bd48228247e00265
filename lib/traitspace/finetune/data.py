"""What one condition trains on: its rows, the hash of everything that shapes its checkpoints, and
its tokenized examples with response-only labels.

- Rows come from a built-in EM dataset (drawn with ``data_seed``) or a JSONL file (subsampled with
  the same seed, file order kept).
- Response-only loss trains the answer tokens plus the end-of-turn token that follows them (so the
  model learns to stop); the system prompt, the user turn and the template's role markers are masked.
  The boundary comes from the model's own chat template spans (``ChatFormat``), never from searching
  for marker strings.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from ..core.chat import ChatFormat, TokenizedChat
from ..core.code_versions import training_hash_fields
from ..core.config import FinetuneSection, ModelSection, RunConfig
from ..core.models import LoadedModel, resolve_source

IGNORE_INDEX = -100  # label value the causal-LM loss skips


def condition_sources(finetune: FinetuneSection) -> dict[str, str]:
    """Condition name -> built-in dataset name or JSONL path, in the order the params list them."""
    if isinstance(finetune.conditions, dict):
        return dict(finetune.conditions)
    return {name: name for name in finetune.conditions}


def _as_row(item: Any, where: str) -> dict:
    if isinstance(item, dict) and "messages" in item:
        return {"messages": list(item["messages"]), "meta": dict(item.get("meta") or {})}
    if isinstance(item, list):
        return {"messages": list(item), "meta": {}}
    raise ValueError(f"{where}: expected a conversation (list of messages or {{'messages': [...]}}), got {type(item).__name__}")


def load_condition_rows(finetune: FinetuneSection, condition: str) -> list[dict]:
    """The rows one condition trains on: ``[{"messages": [...], "meta": {...}}]``.

    Built-in datasets are drawn with ``build_dataset(name, n_examples, seed=data_seed)``; a JSONL file
    is read whole and, when ``n_examples`` is set, subsampled with the same seed (file order kept).
    """
    from .. import em_data

    sources = condition_sources(finetune)
    if condition not in sources:
        raise KeyError(f"unknown condition {condition!r}; finetune.conditions has {list(sources)}")
    source = sources[condition]
    if source in em_data.DATASETS:
        try:
            rows = em_data.build_dataset(source, n=finetune.n_examples, seed=finetune.data_seed)
        except ValueError as error:
            raise ValueError(f"finetune.n_examples={finetune.n_examples} for condition {condition!r}: {error}") from None
        return [_as_row(row, f"dataset {source} row {index}") for index, row in enumerate(rows)]
    rows = [_as_row(item, f"{source} line {index + 1}") for index, item in enumerate(em_data.load_conversations(source))]
    if finetune.n_examples is not None and finetune.n_examples < len(rows):
        keep = sorted(random.Random(finetune.data_seed).sample(range(len(rows)), finetune.n_examples))
        rows = [rows[index] for index in keep]
    return rows


def _file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()[:16]


def condition_params_hash(config: RunConfig, condition: str, seed: int = 0) -> str:
    """Hash of everything that shapes one trail's checkpoints: the model section, the fine-tuning
    settings (the lists of other conditions and seeds excluded, so adding one keeps the finished
    trails), this trail's training seed, this condition's data source (a JSONL file by content) and
    the training code's version (:mod:`traitspace.core.code_versions`)."""
    finetune = config.finetune.model_dump(mode="json")
    finetune.pop("conditions")
    finetune.pop("seeds")
    finetune["seed"] = seed
    source = condition_sources(config.finetune)[condition]
    data = {
        "model": config.model.model_dump(mode="json"),
        "finetune": finetune,
        "condition": condition,
        "source": source,
        "source_sha256": _file_sha256(source) if source.endswith(".jsonl") else None,
        **training_hash_fields("finetune.training"),  # the training code's version, from version 2 on
    }
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# -- tokens and the loss mask ------------------------------------------------------------------------
@dataclass
class ChatTokenizer:
    """A model's tokenizer and chat format without its weights (enough to build training examples)."""

    tokenizer: Any
    chat: ChatFormat


def load_chat_tokenizer(spec: ModelSection) -> ChatTokenizer:
    """The tokenizer and chat format ``load_model(spec)`` would give, without loading the weights."""
    from transformers import AutoTokenizer

    resolved = resolve_source(spec.source)
    tokenizer = AutoTokenizer.from_pretrained(resolved, revision=spec.revision, trust_remote_code=spec.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # as load_model does
    return ChatTokenizer(tokenizer, ChatFormat(tokenizer, system_prompt=spec.system_prompt))


def special_token_ids(tokenizer) -> set[int]:
    """Ids of the tokenizer's special tokens: the named ones (bos, eos, pad, ...) and every added token
    flagged special, which is where chat templates' turn markers live."""
    ids = set(getattr(tokenizer, "all_special_ids", None) or [])
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    ids.update(token_id for token_id, token in added.items() if getattr(token, "special", False))
    return ids


def end_of_turn_length(input_ids: Sequence[int], response_end: int, special_ids: set[int]) -> int:
    """How many tokens after the answer belong to its end-of-turn marker and are trained.

    The marker is everything up to and including the first special token after the answer (Llama-3's
    ``<|eot_id|>``, ChatML's ``<|im_end|>``, Gemma's ``<end_of_turn>``); the newline some templates
    write after it is not trained, since generation stops at the special token. A template whose turn
    end has no special token gets its whole tail trained.
    """
    tail = input_ids[response_end:]
    for offset, token in enumerate(tail):
        if token in special_ids:
            return offset + 1
    return len(tail)


def training_labels(chat: TokenizedChat, loss_on: Literal["response", "all"], special_ids: set[int]) -> list[int]:
    """Labels for one tokenized conversation: token ids where the loss counts, IGNORE_INDEX elsewhere.

    ``loss_on="all"`` trains every token. ``"response"`` trains exactly the answer's tokens as the
    model's own template renders them (``chat.response_span``) plus the end-of-turn token after them.
    """
    ids = list(chat.input_ids)
    if loss_on == "all":
        return ids
    if loss_on != "response":
        raise ValueError(f"loss_on must be 'response' or 'all', got {loss_on!r}")
    if chat.response_span is None:
        raise ValueError("response-only loss needs a conversation that ends with an assistant answer")
    start, end = chat.response_span
    end += end_of_turn_length(ids, end, special_ids)  # nothing when max_length cut the answer
    labels = [IGNORE_INDEX] * len(ids)
    labels[start:end] = ids[start:end]
    return labels


@dataclass
class TokenizationReport:
    """What happened to a condition's rows on the way to training examples."""

    rows: int = 0
    kept: int = 0
    dropped_prompt_too_long: int = 0
    dropped_no_trained_tokens: int = 0
    answers_cut: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    longest: int = 0

    @property
    def mean_length(self) -> float:
        return self.tokens / self.kept if self.kept else 0.0


def tokenize_rows(
    loaded: LoadedModel | ChatTokenizer, rows: Sequence[dict], max_length: int, loss_on: Literal["response", "all"]
) -> tuple[list[dict[str, list[int]]], TokenizationReport]:
    """Training examples ``{"input_ids", "labels"}`` for rows ``{"messages": [...]}``.

    A row whose prompt alone exceeds ``max_length`` is dropped (cutting a prompt would train on a
    question the model never sees whole); a longer answer is cut at ``max_length`` and then has no
    end-of-turn token to learn. Drops and cuts are counted in the report.
    """
    special_ids = special_token_ids(loaded.tokenizer)
    report = TokenizationReport(rows=len(rows))
    examples = []
    for row in rows:
        full = loaded.chat.tokenize(row["messages"])
        if full.prompt_span[1] > max_length:
            report.dropped_prompt_too_long += 1
            continue
        chat = loaded.chat.tokenize(row["messages"], max_length=max_length) if len(full.input_ids) > max_length else full
        if len(full.input_ids) > max_length:
            report.answers_cut += 1
        labels = training_labels(chat, loss_on, special_ids)
        trained = sum(label != IGNORE_INDEX for label in labels)
        if trained == 0:
            report.dropped_no_trained_tokens += 1
            continue
        examples.append({"input_ids": list(chat.input_ids), "labels": labels})
        report.kept += 1
        report.tokens += len(chat.input_ids)
        report.trained_tokens += trained
        report.longest = max(report.longest, len(chat.input_ids))
    return examples, report


def mask_preview(loaded: LoadedModel | ChatTokenizer, messages: Sequence[dict], loss_on: Literal["response", "all"], max_length: int | None = None) -> dict[str, str]:
    """The rendered conversation split into the text the loss ignores and the text it trains on."""
    chat = loaded.chat.tokenize(messages, max_length=max_length)
    labels = training_labels(chat, loss_on, special_token_ids(loaded.tokenizer))
    masked = [token for token, label in zip(chat.input_ids, labels) if label == IGNORE_INDEX]
    trained = [token for token, label in zip(chat.input_ids, labels) if label != IGNORE_INDEX]
    return {
        "ignored by the loss": loaded.tokenizer.decode(masked),
        "trained on": loaded.tokenizer.decode(trained),
    }
