"""Steer the residual stream along directions: one context manager for add, ablate and ablate-then-add.

``with steer(model, {layer: direction}, alpha, op=...):`` changes the output of decoder block
``layer`` (the layer convention of :mod:`traitspace.core.hooks`: layer i = output of block i) in
every forward pass run inside the block, whatever runs it: generation (with or without a KV cache,
the continuous-batching sampler included), likelihood scoring, or activation capture (a capture hook
registered inside the block sees the steered output). With ``u`` the unit direction and ``h`` a
token's residual vector:

- ``add``: ``h + alpha * scale * u``;
- ``ablate``: ``h - (h . u) u`` (no component along ``u`` is left);
- ``ablate_add``: ``h - (h . u) u + alpha * scale * u`` (the component is set to a fixed value).

``scale`` is the layer's typical residual norm (:mod:`.scale`), so ``alpha`` means the same at every
layer and model size; without scales ``alpha`` is absolute.

Which tokens: all positions, or only the response's, given as ``from_position``: tokens whose
position id is at least ``from_position`` are steered. For a prompt of length L the response's
tokens are steered with ``from_position = L - 1``: the last prompt token is the position whose output
predicts the first response token, so the first generated token is steered too, and every earlier
prompt position is left exactly as it was. Position ids (not column indices) decide, so left padding,
a KV cache (one new token per pass) and shared-prefix prefills all see the same rule.

The arithmetic runs in float32 and the result is cast back to the block's dtype, so ``alpha = 0`` with
``add`` returns the block output bit for bit. The hook returns a new output of the type the block
returned: transformers 5 decoder blocks return a tensor, earlier ones a tuple whose first element is
the hidden state (indexing ``output[0]`` on a tensor would silently take batch row 0). Hooks are
removed on exit, also when the block raises. LoRA adapters (hooks sit on the blocks under the peft
wrapper) and 4-bit models (the block output is a plain tensor) need nothing special.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from ..core.hooks import decoder_layers, resolve_layers

Operation = Literal["add", "ablate", "ablate_add"]
OPERATIONS = ("add", "ablate", "ablate_add")
Positions = Literal["all", "response"]


def unit_directions(directions: Mapping[int, torch.Tensor], num_layers: int, hidden_size: int) -> dict[int, torch.Tensor]:
    """``{layer: unit vector [H] (float32)}``; negative layers count from the end; errors name the layer."""
    units = {}
    for layer, vector in directions.items():
        (resolved,) = resolve_layers([layer], num_layers)
        vector = torch.as_tensor(vector).detach().float().flatten()
        if vector.numel() != hidden_size:
            raise ValueError(f"direction at layer {layer} has {vector.numel()} values, the model's hidden size is {hidden_size}")
        norm = vector.norm()
        if not torch.isfinite(norm) or norm == 0:
            raise ValueError(f"direction at layer {layer} has norm {float(norm)}; it cannot be made a unit vector")
        units[resolved] = vector / norm
    return units


def apply_operation(hidden: torch.Tensor, unit: torch.Tensor, shift: float, op: Operation,
                    steered: torch.Tensor | None = None) -> torch.Tensor:
    """``hidden [..., H]`` after ``op`` along ``unit [H]`` (float32 arithmetic, ``hidden``'s dtype back).

    ``shift`` is the added coefficient (``alpha * scale``); ``steered`` (bool, broadcastable to
    ``hidden[..., :1]``) limits the change to some tokens, the others are returned unchanged.
    """
    original = hidden.float()
    unit = unit.to(device=hidden.device, dtype=torch.float32)
    result = original
    if op in ("ablate", "ablate_add"):
        result = result - (result @ unit)[..., None] * unit
    if op in ("add", "ablate_add"):
        result = result + shift * unit
    if steered is not None:
        result = torch.where(steered, result, original)
    return result.to(hidden.dtype)


def _steered_positions(kwargs: Mapping, from_position: int | None) -> torch.Tensor | None:
    if from_position is None:
        return None
    position_ids = kwargs.get("position_ids")
    if position_ids is None:
        raise RuntimeError("response-only steering needs the position ids the model passes to its decoder blocks; "
                           "this model does not pass them (steer all positions instead)")
    return (position_ids >= from_position)[..., None]


@contextlib.contextmanager
def steer(
    model: nn.Module,
    directions: Mapping[int, torch.Tensor],
    alpha: float = 0.0,
    op: Operation = "add",
    scales: Mapping[int, float] | None = None,
    from_position: int | None = None,
) -> Iterator[dict[int, torch.Tensor]]:
    """Steer decoder blocks' outputs inside the block; yields the unit directions used, by layer.

    Args:
        model: a causal LM (peft-wrapped or not, 4-bit or not).
        directions: ``{layer: vector [H]}``; each is normalised to unit length.
        alpha: coefficient of the added unit direction, in units of ``scales[layer]`` (ignored by ``ablate``).
        op: ``add`` | ``ablate`` | ``ablate_add`` (module docstring).
        scales: ``{layer: typical residual norm}`` (:func:`traitspace.steer.scale.residual_norms`); None: 1.
        from_position: None steers every token; an int steers tokens whose position id is >= it
            (the response of a prompt of length L: ``L - 1``).
    """
    if op not in OPERATIONS:
        raise ValueError(f"unknown steering operation {op!r}; choose one of {OPERATIONS}")
    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    blocks = decoder_layers(model)
    units = unit_directions(directions, len(blocks), int(config.hidden_size))
    handles = []

    def make_hook(unit: torch.Tensor, shift: float):
        def hook(_module, _args, kwargs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            if not isinstance(hidden, torch.Tensor):
                raise TypeError(f"a decoder block returned {type(output).__name__}; expected a tensor or a tuple")
            changed = apply_operation(hidden, unit, shift, op, _steered_positions(kwargs, from_position))
            return (changed, *output[1:]) if isinstance(output, tuple) else changed

        return hook

    try:
        for layer, unit in units.items():
            scale = 1.0 if scales is None else float(scales[layer])
            handles.append(blocks[layer].register_forward_hook(make_hook(unit, float(alpha) * scale), with_kwargs=True))
        yield units
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class Intervention:
    """A steering setting to apply later, possibly per prompt length: what :func:`steer` takes, plus
    ``positions`` (``all`` or ``response``). ``Intervention.none()`` changes nothing."""

    directions: Mapping[int, torch.Tensor] = field(default_factory=dict)
    alpha: float = 0.0
    op: Operation = "add"
    scales: Mapping[int, float] | None = None
    positions: Positions = "all"

    @classmethod
    def none(cls) -> Intervention:
        return cls()

    @property
    def is_none(self) -> bool:
        return not self.directions

    @property
    def per_prompt_length(self) -> bool:
        """True when the steered tokens depend on the prompt's length (callers group prompts by it)."""
        return not self.is_none and self.positions == "response"

    def applied(self, model: nn.Module, prompt_length: int | None = None) -> contextlib.AbstractContextManager:
        """The context that applies this intervention; ``prompt_length`` is needed for ``response``."""
        if self.is_none:
            return contextlib.nullcontext({})
        from_position = None
        if self.positions == "response":
            if prompt_length is None or prompt_length < 1:
                raise ValueError("response-only steering needs the prompt's length (>= 1)")
            from_position = prompt_length - 1
        return steer(model, self.directions, self.alpha, self.op, self.scales, from_position)
