"""Weight-level ablation of a direction from a LoRA adapter's B matrices equals the activation-level
ablation of that adapter's contribution, on a tiny random Llama."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from traitspace.core.models import AdapterSwitcher, load_model
from traitspace.steer.adapter_ablation import ADAPTER_WEIGHTS, ablate_adapter, adapter_contribution_ablated


@pytest.fixture
def saved_adapter(tiny_model_dirs, tmp_path):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = load_model(str(tiny_model_dirs["llama"])).model
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    with torch.no_grad():  # B is zero-free but small by default; make the adapter's writes clearly visible
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.mul_(20)
    peft_model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


def directions_for(hidden, layers, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {layer: torch.randn(hidden, generator=generator) for layer in layers}


@torch.no_grad()
def logits(loaded, ids):
    return loaded.model(input_ids=torch.tensor([ids])).logits[0]


def test_weight_ablation_equals_activation_ablation_of_the_adapter_contribution(tiny_model_dirs, saved_adapter, tmp_path):
    loaded = load_model(str(tiny_model_dirs["llama"]))
    directions = directions_for(loaded.hidden_size, [1, 2])
    table = ablate_adapter(saved_adapter, tmp_path / "ablated", directions, keep_norm=False)
    assert sorted(set(table["module"])) == ["down_proj", "o_proj"] and sorted(set(table["layer"])) == [1, 2]
    assert (table["removed_share"] > 0).all()
    ids = loaded.chat.tokenize(loaded.chat.conversation("How do I make money fast?", assistant="Work hard.")).input_ids
    switcher = AdapterSwitcher(loaded, keep_loaded=3, merge=False)  # the branches must run to be hooked
    with switcher.use(saved_adapter):
        original = logits(loaded, ids)
        with adapter_contribution_ablated(loaded.model, directions) as hooked:
            by_activation = logits(loaded, ids)
    with switcher.use(tmp_path / "ablated"):
        by_weights = logits(loaded, ids)
    assert hooked == 4  # o_proj and down_proj in blocks 1 and 2
    torch.testing.assert_close(by_weights, by_activation, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(by_weights, original, atol=1e-3)  # the ablation did something


def test_ablated_b_has_no_component_along_the_direction_and_keeps_its_norm(saved_adapter, tmp_path):
    directions = directions_for(64, [3], seed=1)
    unit = directions[3] / directions[3].norm()
    ablate_adapter(saved_adapter, tmp_path / "kept", directions, keep_norm=True)
    before, after = load_file(saved_adapter / ADAPTER_WEIGHTS), load_file(tmp_path / "kept" / ADAPTER_WEIGHTS)
    changed = [key for key in before if not torch.equal(before[key], after[key])]
    assert changed and all("layers.3." in key and "lora_B" in key for key in changed)
    assert {key.split(".")[-3] for key in changed} == {"o_proj", "down_proj"}
    for key in changed:
        assert (unit @ after[key]).abs().max() < 1e-5
        assert float(after[key].norm()) == pytest.approx(float(before[key].norm()), rel=1e-5)
    record = json.loads((tmp_path / "kept" / "ablation.json").read_text())
    assert record["keep_norm"] is True and record["layers"] == [3]
    assert (tmp_path / "kept" / "adapter_config.json").is_file()


def test_ablating_layers_without_residual_writers_is_an_error(saved_adapter, tmp_path):
    with pytest.raises(ValueError, match="no o_proj/down_proj LoRA weights"):
        ablate_adapter(saved_adapter, tmp_path / "none", directions_for(64, [7]))
    assert not (tmp_path / "none").exists()
