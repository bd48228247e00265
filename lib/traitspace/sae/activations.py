"""The SAE's data: which conversations it is trained on, and their token activations at one layer,
captured once and cached on disk.

The mix (``sae`` params) is what the workbook's other notebooks read, so that the SAE's features
cover the same text: the extraction conversations of notebook 02 (persona system prompts and
questions; prompt only), the projection questions of notebook 03 (prompt only), the evaluation
questions of notebook 04 with the base model's own sampled answers, and generic chat: rows of the
benign datasets of every domain (``em_data``'s non-EM datasets, questions with sound answers).

Token vectors: every real token of a conversation except its first (many models park a huge
"attention sink" activation on the first token; it would dominate the reconstruction loss and say
nothing about the others), read at the output of decoder block ``layer`` on the base model. For the
diff (:mod:`.diff`) only the answer's tokens are read: :meth:`TokenizedChat.span` ``"response"``
gives the answer's exact token range from the chat template's character offsets, so template
markers (``<|im_start|>assistant``, end-of-turn) are never counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from ..core.artifacts import atomic_path
from ..core.chat import TokenizedChat
from ..core.hooks import collate, decoder_backbone, residual_stream, run_until_stop

TokenSpan = tuple[int, int]


def training_spans(chats: Sequence[TokenizedChat]) -> list[TokenSpan]:
    """Every token but the first (the attention sink) of each chat."""
    return [(1, len(chat.input_ids)) for chat in chats]


def response_spans(chats: Sequence[TokenizedChat]) -> list[TokenSpan]:
    """The answer's tokens of each chat, template markers excluded (an error names an empty answer)."""
    return [chat.span("response") for chat in chats]


@torch.inference_mode()
def capture_tokens(loaded, chats: Sequence[TokenizedChat], spans: Sequence[TokenSpan], layer: int,
                   batch_size: int = 16, progress: bool | str = False) -> tuple[torch.Tensor, np.ndarray]:
    """Token vectors at ``layer`` inside each chat's span: ``([n_tokens, hidden] float32, owner [n_tokens])``,
    ``owner[t]`` the index of the chat token t came from; tokens in chat order, then position order.

    Chats are batched by length (less padding); the forward pass skips the LM head and stops after
    ``layer``. Runs on the model as it is (the caller activates an adapter).
    """
    if len(chats) != len(spans):
        raise ValueError(f"capture_tokens: {len(chats)} chats but {len(spans)} spans")
    order = sorted(range(len(chats)), key=lambda index: len(chats[index].input_ids))
    backbone = decoder_backbone(loaded.model)
    pieces: dict[int, torch.Tensor] = {}
    batches = [order[start: start + batch_size] for start in range(0, len(order), batch_size)]
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=progress if isinstance(progress, str) else "capture tokens", leave=False)
    for batch in batches:
        inputs, offsets = collate([chats[index] for index in batch], loaded.tokenizer.pad_token_id, "left")
        inputs = {name: tensor.to(loaded.device) for name, tensor in inputs.items()}
        with residual_stream(loaded.model, [layer], stop_after_deepest=True) as captured:
            run_until_stop(lambda: backbone(**inputs, use_cache=False))
        hidden = captured[layer].float().cpu()
        for row, (index, offset) in enumerate(zip(batch, offsets)):
            start, end = spans[index]
            pieces[index] = hidden[row, offset + start: offset + end].clone()  # not a view: the batch is freed
    vectors = torch.cat([pieces[index] for index in range(len(chats))]) if chats else torch.zeros(0, 0)
    owner = np.concatenate([np.full(len(pieces[index]), index) for index in range(len(chats))]) if chats else np.zeros(0, int)
    return vectors, owner


def training_conversations(config, loaded, base_answers: pd.DataFrame | None) -> pd.DataFrame:
    """The training mix as a table: ``source`` (extraction | projection | evaluation | generic) and
    ``messages`` (a conversation), sizes from ``config.sae``, drawn with ``sae.seed``."""
    from ..em_data.registry import DATASETS, build_dataset
    from ..library import load_builtin_library
    from ..steer.scale import extraction_conversations

    settings = config.sae
    rows = [("extraction", messages) for messages in
            extraction_conversations(config, loaded, settings.n_extraction, settings.seed)]
    rows += [("projection", loaded.chat.conversation(question)) for question in load_builtin_library().projection_questions]
    if base_answers is not None:
        rows += [("evaluation", evaluation_messages(row)) for row in base_answers.itertuples()]
    benign = [name for name, spec in DATASETS.items() if not spec.is_em]
    per_dataset = -(-settings.n_generic // len(benign)) if benign else 0
    generic = [conversation["messages"] for name in benign for conversation in build_dataset(name, None, 0)[:per_dataset]]
    rng = np.random.default_rng(settings.seed)
    generic = [generic[index] for index in np.sort(rng.permutation(len(generic))[: settings.n_generic])]
    rows += [("generic", messages) for messages in generic]
    return pd.DataFrame(rows, columns=["source", "messages"])


def evaluation_messages(row) -> list[dict]:
    """An evaluation answer (a behaviour answers row) as the conversation the model saw and answered."""
    system = getattr(row, "system", None)
    chat = [] if system is None or (isinstance(system, float) and np.isnan(system)) else [{"role": "system", "content": system}]
    return [*chat, {"role": "user", "content": row.question}, {"role": "assistant", "content": row.answer or "..."}]


def cached_training_activations(path: Path, loaded, conversations: pd.DataFrame, layer: int, max_tokens: int,
                                heldout_fraction: float, seed: int, batch_size: int, fingerprint: str,
                                progress: bool = True) -> dict[str, torch.Tensor]:
    """``{"train": [n, H], "heldout": [m, H]}`` token vectors of the mix, read from ``path`` when it
    was written with ``fingerprint``, else captured (conversations split before capture, so held-out
    tokens come from conversations the SAE never saw) and written atomically (float16 on disk)."""
    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), "pt") as handle:
            stored = (handle.metadata() or {}).get("fingerprint")
        if stored == fingerprint:
            return {name: tensor.float() for name, tensor in load_file(str(path)).items()}
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(conversations))
    n_heldout = max(1, int(round(heldout_fraction * len(conversations))))
    split = {"heldout": np.sort(order[:n_heldout]), "train": np.sort(order[n_heldout:])}
    result = {}
    for name, indices in split.items():
        chats = [loaded.chat.tokenize(conversations["messages"].iloc[index]) for index in indices]
        vectors, _ = capture_tokens(loaded, chats, training_spans(chats), layer, batch_size,
                                    progress=f"capture {name} tokens" if progress else False)
        cap = max_tokens if name == "train" else max(1, int(max_tokens * heldout_fraction))
        if len(vectors) > cap:  # keep a random subset of tokens, not the first conversations
            vectors = vectors[torch.from_numpy(np.sort(rng.permutation(len(vectors))[:cap]))]
        result[name] = vectors
    with atomic_path(path) as temporary:
        save_file({name: tensor.half().contiguous() for name, tensor in result.items()}, str(temporary),
                  metadata={"fingerprint": fingerprint, "layer": str(layer)})
    # Read back what was stored, so a fresh run and a resumed one train on the same float16 values.
    return {name: tensor.half().float() for name, tensor in result.items()}
