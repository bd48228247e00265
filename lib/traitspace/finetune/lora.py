"""The LoRA adapter every condition trains: its peft config, and attaching it (QLoRA when the model
was loaded in 4-bit NF4, ``model.quantization: nf4``)."""

from __future__ import annotations

import warnings

from ..core.config import FinetuneSection
from ..core.models import LoadedModel


def lora_config(finetune: FinetuneSection):
    """The peft ``LoraConfig`` of ``finetune`` (identical for every condition)."""
    from peft import LoraConfig

    return LoraConfig(
        r=finetune.lora_r,
        lora_alpha=finetune.lora_alpha,
        lora_dropout=finetune.lora_dropout,
        target_modules=finetune.target_modules,
        use_rslora=finetune.use_rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )


def attach_lora(loaded: LoadedModel, finetune: FinetuneSection, seed: int = 0):
    """Wrap the loaded model in a fresh, trainable LoRA adapter (initialised from the training ``seed``)."""
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import set_seed

    model = loaded.model
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_quantized", False):
        # QLoRA: layer norms to float32, input gradients on, optional gradient checkpointing.
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=finetune.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    model.config.use_cache = False  # the KV cache is useless in training and clashes with checkpointing
    set_seed(seed)
    with warnings.catch_warnings():
        # peft still asks transformers for a renamed attribute; the deprecation notice is noise here.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, lora_config(finetune))
