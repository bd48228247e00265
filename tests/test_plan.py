"""Real-scale presets, ``extends``, the device map across GPUs, and ``python -m traitspace plan``:
the estimate's arithmetic against hand computations, what fits where, and the printed plan."""

from __future__ import annotations

import math

import pytest
import torch

from traitspace.__main__ import main
from traitspace.core.config import ConfigError, ModelSection, load_config
from traitspace.core.models import from_pretrained_kwargs
from traitspace.plan.estimate import (CUDA_OVERHEAD_GIB, GIB, Assumptions, gpus_needed,
                                      sampling_estimate, training_estimate, StageEstimate)
from traitspace.plan.gpus import GpuSpec, gpu_spec
from traitspace.plan.shapes import ModelShape, model_shape, shape_from_config
from traitspace.plan.workload import Sampling, Training

PRESETS = {
    "qwen3_32b_qlora": ("Qwen/Qwen3-32B", "nf4", 16, False, "all"),
    "betley_32b": ("Qwen/Qwen2.5-Coder-32B-Instruct", "none", 32, True, "response"),
    "qwen25_7b": ("Qwen/Qwen2.5-7B-Instruct", "none", 32, True, "response"),
    "llama31_8b": ("meta-llama/Llama-3.1-8B-Instruct", "none", 32, True, "response"),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_real_scale_presets_load_through_the_schema(name):
    config = load_config(f"params/{name}.yaml")
    source, quantization, rank, rslora, loss_on = PRESETS[name]
    assert config.run_name == name  # never inherited from the file it extends
    assert (config.model.source, config.model.quantization, config.finetune.lora_r, config.finetune.use_rslora,
            config.finetune.loss_on) == (source, quantization, rank, rslora, loss_on)
    assert config.finetune.n_checkpoints == 17 and config.extract.traits == "all"
    assert len(config.finetune.seeds) == 3


def test_extends_merges_sections_and_names_problems(tmp_path):
    (tmp_path / "base.yaml").write_text("run: {name: base, seed: 3}\nfinetune: {lora_r: 8, epochs: 2}\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nfinetune: {lora_r: 4}\n")
    config = load_config(tmp_path / "child.yaml")
    assert (config.run_name, config.run.seed, config.finetune.lora_r, config.finetune.epochs) == ("child", 3, 4, 2)
    (tmp_path / "orphan.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(ConfigError, match="extends: params file not found: missing.yaml"):
        load_config(tmp_path / "orphan.yaml")
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(tmp_path / "loop.yaml")


def test_several_gpus_spread_the_model_and_one_gpu_does_not():
    bf16, cuda = torch.bfloat16, torch.device("cuda")
    assert from_pretrained_kwargs(ModelSection(device="auto"), cuda, bf16, gpu_count=4)["device_map"] == "auto"
    assert from_pretrained_kwargs(ModelSection(device="cuda"), cuda, bf16, gpu_count=2)["device_map"] == "auto"
    assert "device_map" not in from_pretrained_kwargs(ModelSection(device="auto"), cuda, bf16, gpu_count=1)
    assert "device_map" not in from_pretrained_kwargs(ModelSection(device="cuda:1"), torch.device("cuda:1"), bf16, gpu_count=4)
    assert "device_map" not in from_pretrained_kwargs(ModelSection(), torch.device("cpu"), torch.float32, gpu_count=0)
    nf4 = ModelSection(device="auto", quantization="nf4")
    assert from_pretrained_kwargs(nf4, cuda, bf16, gpu_count=1)["device_map"] == {"": "cuda"}
    assert from_pretrained_kwargs(nf4, cuda, bf16, gpu_count=2)["device_map"] == "auto"


def test_shape_counts_a_tiny_architecture_like_a_hand_computation():
    from transformers import LlamaConfig

    h, layers, inter, heads, kv, vocab = 64, 2, 128, 4, 2, 100
    config = LlamaConfig(hidden_size=h, num_hidden_layers=layers, intermediate_size=inter, num_attention_heads=heads,
                         num_key_value_heads=kv, vocab_size=vocab, tie_word_embeddings=False)
    shape = shape_from_config(config, "tiny", "test")
    kv_dim = kv * h // heads
    linear = h * h + 2 * h * kv_dim + h * h + 3 * h * inter  # q, k, v, o, gate, up, down
    assert shape.decoder_linear_params == layers * linear
    assert shape.n_params == layers * (linear + 2 * h) + 2 * vocab * h + h  # + 2 norms per block, final norm
    assert shape.lora_params_per_rank == layers * ((h + h) + 2 * (h + kv_dim) + (h + h) + 2 * (h + inter) + (inter + h))
    assert shape.flop_params == shape.n_params and shape.kv_values_per_token == 2 * layers * kv * (h // heads)


def test_preset_shapes_give_the_published_parameter_counts():
    # Totals stated on the model cards: Qwen3-32B 32.8B, Qwen2.5-7B-Instruct 7.61B, Llama-3.1-8B 8.03B.
    for source, billions in [("Qwen/Qwen3-32B", 32.8), ("Qwen/Qwen2.5-7B-Instruct", 7.61),
                             ("meta-llama/Llama-3.1-8B-Instruct", 8.03)]:
        assert model_shape(source).n_params / 1e9 == pytest.approx(billions, abs=0.05), source


SHAPE = ModelShape(name="hand", source_of_shape="test", hidden_size=100, num_layers=2, num_heads=4, num_kv_heads=2,
                   head_dim=25, intermediate_size=300, vocab_size=1000, n_params=1_000_000,
                   input_embedding_params=100_000, decoder_linear_params=800_000, lora_params_per_rank=5_000)
GPU = GpuSpec("test", bf16_tflops=100.0, memory_gib=10.0, bandwidth_tb_s=1.0)


def test_training_estimate_equals_a_hand_computation():
    work = Training(trails=2, rows_per_trail=10, tokens_per_row=50, epochs=3, batch_size=4, grad_accum=1,
                    max_length=64, longest_row=60, checkpoints_per_trail=5)
    memory, time = training_estimate(SHAPE, GPU, work, lora_r=8, four_bit=True, gradient_checkpointing=True,
                                     optimizer="adamw_torch", assumptions=Assumptions(mfu_train_4bit=0.5))
    terms = {term.label: term.value for term in memory}
    assert terms["weights"] == pytest.approx((800_000 * (4.127 / 8) + 200_000 * 2) / GIB)
    assert terms["LoRA + grads + optimizer"] == pytest.approx(8 * 5_000 * 16 / GIB)
    assert terms["activations"] == pytest.approx((34 * 60 * 4 * 100 + 2 * 60 * 4 * 100 * 2) / GIB)
    assert terms["logits"] == pytest.approx(4 * 60 * 1000 * 10 / GIB)
    assert terms["CUDA context + slack"] == CUDA_OVERHEAD_GIB
    n = 1_000_000 - 100_000 + 1000 * 100  # the LM head multiplies; the input embedding is a lookup
    assert time[0].value == pytest.approx(6 * n * (2 * 10 * 3 * 50) / (100e12 * 0.5))
    assert "6 x" in time[0].arithmetic and "MFU 0.5" in time[0].arithmetic
    bf16, _ = training_estimate(SHAPE, GPU, work, lora_r=8, four_bit=False, gradient_checkpointing=False,
                                optimizer="paged_adamw_8bit", assumptions=Assumptions())
    terms = {term.label: term.value for term in bf16}
    assert terms["weights"] == pytest.approx(2_000_000 / GIB)
    assert terms["LoRA + grads + optimizer"] == pytest.approx(8 * 5_000 * 10 / GIB)
    assert terms["activations"] == pytest.approx(2 * 34 * 60 * 4 * 100 / GIB)


def test_decoding_is_bounded_by_reading_the_weights_each_step():
    work = Sampling("answers", sequences=10, prompt_tokens=20, new_tokens=8, batch_size=4)
    memory, time = sampling_estimate(SHAPE, GPU, work, four_bit=False, assumptions=Assumptions(mfu_forward=0.5))
    n = 1_000_000
    assert time[0].value == pytest.approx(2 * n * 10 * 20 / (100e12 * 0.5))
    kv_bytes_per_token = 2 * 2 * 2 * 25 * 2
    step = (2_000_000 + kv_bytes_per_token * 4 * (20 + 8 / 2)) / 1e12  # memory-bound at this size
    assert work.decode_steps == 3 * 8 and time[1].value == pytest.approx(24 * step)
    assert {term.label: term.value for term in memory}["KV cache"] == pytest.approx(kv_bytes_per_token * 4 * 28 / GIB)


def test_gpus_needed_spreads_only_the_weights():
    from traitspace.plan.estimate import Term

    estimate = StageEstimate("01", "x", memory=[Term("weights", 30.0, ""), Term("other", 4.0, "")])
    assert gpus_needed(estimate, GPU) == math.ceil(30 / (10 - 4)) == 5
    assert gpus_needed(StageEstimate("01", "x", memory=[Term("weights", 1.0, ""), Term("other", 11.0, "")]), GPU) is None


def _worst_training(config, shape, gpu):
    """Training memory at the preset's batch with every row at max_length (the worst batch)."""
    settings = config.finetune
    work = Training(trails=1, rows_per_trail=1, tokens_per_row=settings.max_length, epochs=1,
                    batch_size=settings.batch_size, grad_accum=1, max_length=settings.max_length,
                    longest_row=settings.max_length, checkpoints_per_trail=1)
    memory, _ = training_estimate(shape, gpu, work, lora_r=settings.lora_r, four_bit=config.model.quantization == "nf4",
                                  gradient_checkpointing=settings.gradient_checkpointing, optimizer=settings.optimizer,
                                  assumptions=Assumptions())
    return StageEstimate("01", "fine-tune", memory=memory)


def test_32b_in_4bit_fits_one_80gb_gpu_with_room_and_in_bf16_only_narrowly():
    qlora = load_config("params/qwen3_32b_qlora.yaml")
    estimate = _worst_training(qlora, model_shape(qlora.model.source), gpu_spec("H100-80GB"))
    assert estimate.memory_gib < 40 and gpus_needed(estimate, gpu_spec("H100-80GB")) == 1
    assert gpus_needed(estimate, gpu_spec("A100-40GB")) == 1

    bf16 = load_config("params/betley_32b.yaml")
    estimate = _worst_training(bf16, model_shape(bf16.model.source), gpu_spec("H100-80GB"))
    weights = next(term.value for term in estimate.memory if term.label == "weights")
    assert weights > 60  # 32.8B x 2 bytes
    assert 70 < estimate.memory_gib < gpu_spec("H100-80GB").memory_gib  # fits, under 10 GiB to spare
    assert gpus_needed(estimate, gpu_spec("L40S")) == 2 and gpus_needed(estimate, gpu_spec("H200")) == 1


def test_plan_command_prints_every_stage_with_its_arithmetic(capsys):
    assert main(["plan", "params/smoke.yaml", "--gpu", "h200"]) == 0
    out = capsys.readouterr().out
    for stage in ("00 model check", "01 fine-tune", "02 extract traits", "03 project", "04 behaviour",
                  "05 findings", "06 steering"):
        assert f"\n{stage}: peak" in out
    assert "on H200: 989 TFLOP/s" in out and "MFU 0.35" in out and "memory  weights" in out
    assert "x 2 B" in out and "6 x" in out and "2 x" in out and "TB/s" in out
    assert "for comparison, measured on GPUs" in out
    from traitspace.runner import discover_notebooks

    for notebook in discover_notebooks():  # a notebook without a workload model says so
        assert f"\n{notebook.stem[:2]} " in out
    assert main(["plan", "params/smoke.yaml", "--gpu", "TPU"]) == 2
    assert "unknown GPU 'TPU'" in capsys.readouterr().err


def test_an_unknown_hub_id_can_take_its_config_from_a_folder(tiny_model_dirs):
    shape = model_shape("someone/not-in-the-table", config_folder=str(tiny_model_dirs["llama"]))
    assert shape.num_layers == 4 and shape.hidden_size == 64


def test_a_hub_id_without_a_config_says_how_to_give_one(monkeypatch):
    import transformers

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", offline)
    with pytest.raises(LookupError, match="someone/unknown.*--model-config"):
        model_shape("someone/unknown")


def test_the_plan_samples_only_the_sampled_seeds_trails():
    from traitspace.core.config import load_config
    from traitspace.plan.workload import plan_work

    def sampled_notes(**overrides):
        config = load_config("params/smoke.yaml", overrides)
        [behaviour] = [work for work in plan_work(config) if work.stage == "04"]
        return " ".join(behaviour.notes)

    # smoke: 2 conditions x 3 seeds, 1 checkpoint sampled per trail, + the base model
    assert "7 checkpoints sampled" in sampled_notes()
    assert "3 checkpoints sampled" in sampled_notes(**{"behavior.sample_seeds": [1]})
