"""A model's shape (layers, widths, vocabulary, parameter counts) without its weights.

The plan needs sizes, not weights: parameter counts come from instantiating the architecture on
PyTorch's ``meta`` device (transformers builds every module, no memory is allocated, no weights are
read), so any architecture transformers knows is counted exactly rather than by a hand formula.
Where the ``config.json`` comes from:

- a local model folder, ``tiny:*`` and ``embedded:*`` sources: their own ``config.json``;
- the hub ids of the real-scale presets: :data:`BUILTIN_ARCHITECTURES` below, so the plan works with
  no network (this machine has none);
- any other hub id: ``AutoConfig.from_pretrained`` (the hub cache, or the network when there is one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# config.json shape fields of the preset models, as published in each hub repository's config.json
# (written down from those files; this machine cannot reach the hub to re-read them). The tests check
# the parameter counts they give against the totals the model cards state (Qwen3-32B 32.8B,
# Qwen2.5-7B 7.61B, Llama-3.1-8B 8.03B).
_QWEN25_CODER_32B = ("qwen2", {
    "hidden_size": 5120, "num_hidden_layers": 64, "intermediate_size": 27648, "num_attention_heads": 40,
    "num_key_value_heads": 8, "vocab_size": 152064, "tie_word_embeddings": False,
})
BUILTIN_ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    "Qwen/Qwen3-32B": ("qwen3", {
        "hidden_size": 5120, "num_hidden_layers": 64, "intermediate_size": 25600, "num_attention_heads": 64,
        "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "tie_word_embeddings": False,
    }),
    "Qwen/Qwen2.5-Coder-32B-Instruct": _QWEN25_CODER_32B,
    "unsloth/Qwen2.5-Coder-32B-Instruct": _QWEN25_CODER_32B,
    "Qwen/Qwen2.5-7B-Instruct": ("qwen2", {
        "hidden_size": 3584, "num_hidden_layers": 28, "intermediate_size": 18944, "num_attention_heads": 28,
        "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False,
    }),
    # The embedded model's shape (its GGUF file converts to this config): the plan's comparison with
    # the figures measured on a GPU (traitspace.plan.calibration) needs it without a conversion.
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llama", {
        "hidden_size": 576, "num_hidden_layers": 30, "intermediate_size": 1536, "num_attention_heads": 9,
        "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True,
    }),
    "meta-llama/Llama-3.1-8B-Instruct": ("llama", {
        "hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 14336, "num_attention_heads": 32,
        "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False,
    }),
}


@dataclass(frozen=True)
class ModelShape:
    """What the plan's arithmetic needs of a model.

    ``decoder_linear_params``: weights of the decoder blocks' linear layers (what 4-bit loading
    quantizes and what LoRA ``all-linear`` adapts; the LM head is neither). ``lora_params_per_rank``:
    sum of (in + out) features over those layers, so a rank-r adapter has r times as many parameters.
    """

    name: str
    source_of_shape: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    n_params: int
    input_embedding_params: int
    decoder_linear_params: int
    lora_params_per_rank: int

    @property
    def flop_params(self) -> int:
        """N in the 2N / 6N FLOPs-per-token rule: every parameter that multiplies an activation. The
        input embedding is a lookup (no FLOPs); the LM head always multiplies, tied or not."""
        return self.n_params - self.input_embedding_params + self.vocab_size * self.hidden_size

    @property
    def kv_values_per_token(self) -> int:
        """Keys and values stored per token over all layers (times bytes per value = KV-cache bytes)."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim


def _config_for(source: str, revision: str | None = None):
    from transformers import AutoConfig

    if source in BUILTIN_ARCHITECTURES:
        model_type, fields = BUILTIN_ARCHITECTURES[source]
        return AutoConfig.for_model(model_type, **fields), "built-in table (traitspace.plan.shapes)"
    if source.startswith(("tiny:", "embedded:")) or Path(source).expanduser().is_dir():
        from ..core.models import resolve_source

        folder = resolve_source(source)
        return AutoConfig.from_pretrained(folder), f"{folder}/config.json"
    try:
        return AutoConfig.from_pretrained(source, revision=revision), "hub config.json (cache or network)"
    except OSError as error:
        raise LookupError(
            f"no config.json for {source!r}: it is not in the built-in table ({', '.join(BUILTIN_ARCHITECTURES)}), "
            f"not a local folder, and the hub could not be reached ({type(error).__name__}). Pass --model-config "
            "with a folder holding its config.json (weights are not needed)."
        ) from None


def shape_from_config(config, name: str, source_of_shape: str) -> ModelShape:
    """Count the parameters of ``config``'s architecture on the meta device (no memory, no weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    output_layer = model.get_output_embeddings()
    linear_params = lora_per_rank = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module is not output_layer:
            linear_params += module.in_features * module.out_features
            lora_per_rank += module.in_features + module.out_features
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = int(text.num_attention_heads)
    head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
    return ModelShape(
        name=name,
        source_of_shape=source_of_shape,
        hidden_size=int(text.hidden_size),
        num_layers=int(text.num_hidden_layers),
        num_heads=heads,
        num_kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        head_dim=head_dim,
        intermediate_size=int(text.intermediate_size),
        vocab_size=int(text.vocab_size),
        n_params=sum(parameter.numel() for parameter in model.parameters()),  # tied weights counted once
        input_embedding_params=model.get_input_embeddings().weight.numel(),
        decoder_linear_params=linear_params,
        lora_params_per_rank=lora_per_rank,
    )


def model_shape(source: str, revision: str | None = None, config_folder: str | None = None) -> ModelShape:
    """The shape of ``source`` (a model.source value); ``config_folder`` overrides where config.json is read."""
    from transformers import AutoConfig

    if config_folder is not None:
        return shape_from_config(AutoConfig.from_pretrained(config_folder), source, f"{config_folder}/config.json")
    config, where = _config_for(source, revision)
    return shape_from_config(config, source, where)
