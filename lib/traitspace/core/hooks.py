"""Capture the residual stream at chosen layers and pool it over token spans, batched.

Layer convention (the one used everywhere in this workbook): **layer i is the output of decoder
block i**, counting from 0. For every layer but the last this equals transformers'
``hidden_states[i + 1]`` (``hidden_states[0]`` is the embeddings). For the last block,
transformers' ``hidden_states[-1]`` has the model's final norm applied; layer ``L-1`` here is the
block's raw output, like every other layer.

Three steps, kept apart (as in steering-vectors): a hook context that sees each block's output
(:func:`residual_stream`), pooling functions (:func:`span_weights`, :func:`pool`), and the batched
driver (:func:`capture_pooled`). Pooling happens inside the hook, so only a ``[batch, hidden]``
vector per layer is kept, never the full hidden states of all layers.

Speed: when only activations are wanted, the driver runs the decoder backbone without the LM head
and stops the forward pass right after the deepest requested layer (by raising from its hook). On
a compute-bound CPU this saves the LM head and all later blocks; the model is untouched afterwards
(hooks are removed in ``finally``; no cache is kept).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Literal, Sequence

import torch
from torch import nn

from .chat import SpanKind, TokenizedChat
from .padding import PaddingSide, padded_batch
from .traits import middle_layer

LayerSpec = Sequence[int] | Literal["all", "middle"]


class _StopForward(Exception):
    """Raised from the deepest hook to end a forward pass early."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The causal-LM module under peft wrappers (LoRA layers stay injected in it)."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else model


def decoder_backbone(model: nn.Module) -> nn.Module:
    """The transformer stack without the LM head (``LlamaModel`` inside ``LlamaForCausalLM``)."""
    base = unwrap_model(model)
    get_decoder = getattr(base, "get_decoder", None)
    backbone = get_decoder() if callable(get_decoder) else None
    if backbone is None or not hasattr(backbone, "layers"):
        # transformers 4.x: get_decoder() of a causal LM asks its inner model, which returns None
        backbone = getattr(base, "model", None)
    if backbone is None or not hasattr(backbone, "layers"):
        raise TypeError(f"cannot find the decoder stack of {type(base).__name__}")
    return backbone


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks, in order; block i's output is layer i."""
    return decoder_backbone(model).layers


def resolve_layers(spec: LayerSpec, num_layers: int) -> list[int]:
    """Turn "all", "middle" or a list of ints (negative counts from the end) into sorted layers."""
    if spec == "all":
        return list(range(num_layers))
    if spec == "middle":
        return [middle_layer(num_layers)]
    layers = sorted({layer + num_layers if layer < 0 else layer for layer in spec})
    bad = [layer for layer in layers if not 0 <= layer < num_layers]
    if bad or not layers:
        raise ValueError(f"layers {list(spec)} out of range for a model with {num_layers} layers (0..{num_layers - 1})")
    return layers


def _block_output(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


@contextlib.contextmanager
def residual_stream(
    model: nn.Module,
    layers: Sequence[int],
    on_output: Callable[[int, torch.Tensor], object] | None = None,
    stop_after_deepest: bool = False,
) -> Iterator[dict[int, object]]:
    """Hook decoder blocks ``layers``; yield a dict filled during each forward pass.

    The dict maps layer -> ``on_output(layer, hidden[batch, seq, hidden])`` (or the hidden state
    itself when ``on_output`` is None). With ``stop_after_deepest`` the forward pass is ended after
    the deepest layer; call the model through :func:`run_until_stop`. Hooks are removed on exit,
    also when the forward pass raises.
    """
    blocks = decoder_layers(model)
    results: dict[int, object] = {}
    deepest = max(layers)
    handles = []

    def make_hook(layer: int):
        def hook(_module, _inputs, output):
            hidden = _block_output(output)
            results[layer] = on_output(layer, hidden) if on_output is not None else hidden
            if stop_after_deepest and layer == deepest:
                raise _StopForward

        return hook

    try:
        for layer in layers:
            handles.append(blocks[layer].register_forward_hook(make_hook(layer)))
        yield results
    finally:
        for handle in handles:
            handle.remove()


def run_until_stop(forward: Callable[[], object]) -> None:
    """Run a forward pass that may be ended early by :func:`residual_stream`."""
    try:
        forward()
    except _StopForward:
        pass


# -- pooling ---------------------------------------------------------------------------------------
def span_weights(spans: Sequence[tuple[int, int]], offsets: Sequence[int], seq_len: int) -> torch.Tensor:
    """Averaging weights ``[batch, seq_len]``: 1/len over each example's span, 0 elsewhere.

    ``spans`` are token ranges within each unpadded example; ``offsets`` are where each example
    starts in the padded batch (left padding shifts it right).
    """
    weights = torch.zeros(len(spans), seq_len)
    for row, ((start, end), offset) in enumerate(zip(spans, offsets)):
        if end <= start:
            raise ValueError(f"empty span {start}:{end} in batch row {row}")
        weights[row, offset + start: offset + end] = 1.0 / (end - start)
    return weights


def pool(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum over positions: ``[batch, seq, hidden] x [batch, seq] -> [batch, hidden]`` (float32)."""
    return torch.einsum("bs,bsh->bh", weights.to(hidden.device), hidden.float())


def collate(
    chats: Sequence[TokenizedChat], pad_token_id: int, padding_side: PaddingSide = "left"
) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Pad a batch of chats (see :func:`traitspace.core.padding.padded_batch`); return model inputs
    and each example's start offset in the padded rows."""
    return padded_batch([chat.input_ids for chat in chats], pad_token_id, padding_side)


@torch.inference_mode()
def capture_pooled(
    model: nn.Module,
    chats: Sequence[TokenizedChat],
    layers: Sequence[int],
    pooling: SpanKind = "response",
    batch_size: int = 16,
    pad_token_id: int = 0,
    padding_side: Literal["left", "right"] = "left",
    fast: bool = True,
    progress: bool | str = False,
) -> dict[int, torch.Tensor]:
    """Pooled residual-stream vectors: ``{layer: Tensor[n_chats, hidden]}`` (float32, CPU), in input order.

    Examples are sorted by length before batching (less padding), and results are put back in
    input order. ``fast=True`` skips the LM head and stops after the deepest layer; ``fast=False``
    runs the full causal LM (kept for benchmarks and checks).
    """
    if not chats:
        raise ValueError("no conversations to capture")
    layers = sorted(set(layers))
    spans = [chat.span(pooling) for chat in chats]
    order = sorted(range(len(chats)), key=lambda index: len(chats[index].input_ids))
    device = next(model.parameters()).device
    backbone = decoder_backbone(model) if fast else model
    outputs: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    batches = [order[start: start + batch_size] for start in range(0, len(order), batch_size)]
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=progress if isinstance(progress, str) else "capture", leave=False)
    for batch_indices in batches:
        batch_chats = [chats[index] for index in batch_indices]
        inputs, offsets = collate(batch_chats, pad_token_id, padding_side)
        weights = span_weights([spans[index] for index in batch_indices], offsets, inputs["input_ids"].shape[1])
        inputs = {name: tensor.to(device) for name, tensor in inputs.items()}
        with residual_stream(
            model, layers, on_output=lambda _layer, hidden: pool(hidden, weights).cpu(), stop_after_deepest=fast
        ) as pooled:
            run_until_stop(lambda: backbone(**inputs, use_cache=False))
        for layer in layers:
            outputs[layer].append(pooled[layer])
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return {layer: torch.cat(parts)[inverse] for layer, parts in outputs.items()}


def capture_conversations(
    loaded,
    conversations: Sequence[Sequence[dict]],
    layers: LayerSpec = "all",
    pooling: SpanKind = "response",
    batch_size: int = 16,
    max_length: int | None = None,
    padding_side: Literal["left", "right"] = "left",
    fast: bool = True,
    progress: bool | str = False,
) -> dict[int, torch.Tensor]:
    """Tokenize chat conversations with the model's own template and capture pooled activations."""
    chats = [loaded.chat.tokenize(messages, max_length=max_length) for messages in conversations]
    return capture_pooled(
        loaded.model,
        chats,
        resolve_layers(layers, loaded.num_layers),
        pooling=pooling,
        batch_size=batch_size,
        pad_token_id=loaded.tokenizer.pad_token_id,
        padding_side=padding_side,
        fast=fast,
        progress=progress,
    )
