"""Fine-tuning: loss masks from template spans, checkpoint schedule and layout, resume after a kill."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from traitspace.core.checkpoints import (
    ADAPTER_FILES,
    TRAINING_LOG_FILE,
    Checkpoint,
    checkpoint_schedule,
    list_checkpoints,
    step_folder_name,
)
from traitspace.core.config import ConfigError, load_config
from traitspace.core.models import AdapterSwitcher, load_model
from traitspace.core.padding import pad_rows
from traitspace.finetune import (
    IGNORE_INDEX,
    CheckpointsFromOtherParams,
    EpochSeededSampler,
    RightPaddingCollator,
    special_token_ids,
    tokenize_rows,
    total_optimizer_steps,
    load_outputs,
    train_all,
    train_condition,
    training_labels,
)
from traitspace.finetune import trainer as trainer_module

REPO = Path(__file__).resolve().parents[1]
END_OF_TURN = {"llama": "<|eot|>", "qwen2": "<|im_end|>", "nosystem": "<end_of_turn>"}


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Tiny models gain nothing from threads, and on a shared CPU spinning threads slow them 10-30x.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def write_params(tmp_path: Path, finetune: dict, name: str = "ft.yaml", source: str = "tiny:llama") -> Path:
    params = {"run": {"output_root": str(tmp_path / "outputs")}, "model": {"source": source}, "finetune": finetune}
    path = tmp_path / name
    path.write_text(json.dumps(params))  # JSON is valid YAML
    return path


# Medical rows: their prompts fit max_length on the tiny models' small-vocabulary tokenizer.
SMALL = {"conditions": ["medical_harmful", "medical_sound"], "n_examples": 12, "max_length": 192, "batch_size": 4,
         "epochs": 2, "n_checkpoints": 4, "learning_rate": 1e-3, "lora_r": 4, "lora_alpha": 8}


# -- schedule --------------------------------------------------------------------------------------
def test_schedule_is_log_spaced_and_ends_at_the_last_step():
    schedule = checkpoint_schedule(60, 17)
    assert schedule == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 17, 22, 28, 36, 46, 60]
    big = checkpoint_schedule(5000, 17)
    gaps = [later - earlier for earlier, later in zip(big, big[1:])]
    assert big[0] == 1 and big[-1] == 5000 and len(big) == 17
    assert gaps == sorted(gaps)  # dense early, sparse late
    assert checkpoint_schedule(5, 17) == [1, 2, 3, 4, 5]
    assert checkpoint_schedule(7, 1) == [7]
    for total in range(1, 80):
        for count in (1, 2, 5, 17, 40):
            steps = checkpoint_schedule(total, count)
            assert len(steps) == min(total, count) and steps[-1] == total
            assert all(earlier < later for earlier, later in zip(steps, steps[1:]))
    with pytest.raises(ValueError, match="total_steps"):
        checkpoint_schedule(0, 17)
    assert checkpoint_schedule(10, 3, first_step=2) == [2, 4, 10]
    for total in range(2, 40):
        for count in (1, 2, 3, 17):
            steps = checkpoint_schedule(total, count, first_step=2)
            assert steps[0] >= 2 and steps[-1] == total and len(steps) == min(total - 1, count)
            assert all(earlier < later for earlier, later in zip(steps, steps[1:]))


@pytest.mark.parametrize("scheduler", ["linear", "cosine", "constant_with_warmup"])
def test_under_a_warm_up_the_first_step_has_learning_rate_zero_so_saving_starts_at_step_2(scheduler):
    """Why the schedule starts at step 2: the installed transformers' warm-up schedules give the first
    optimizer step learning rate 0 (a checkpoint after it would be the base model again)."""
    from transformers import get_scheduler

    from traitspace.core.config import FinetuneSection
    from traitspace.finetune.trainer import first_moving_step

    finetune = FinetuneSection(lr_scheduler=scheduler, warmup_ratio=0.03)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    warmup = max(1, round(0.03 * 10))
    lr_schedule = get_scheduler(scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=10)
    assert lr_schedule.get_last_lr()[0] == 0.0  # the rate the first step runs at
    lr_schedule.step()
    assert lr_schedule.get_last_lr()[0] > 0.0
    assert first_moving_step(finetune, 10) == 2
    assert first_moving_step(FinetuneSection(lr_scheduler=scheduler, warmup_ratio=0.0), 10) == 1
    assert first_moving_step(FinetuneSection(lr_scheduler="constant", warmup_ratio=0.03), 10) == 1


def test_total_steps_counts_the_last_partial_batch_and_accumulation():
    assert total_optimizer_steps(12, 4, 1, 2) == 6
    assert total_optimizer_steps(13, 4, 1, 1) == 4
    assert total_optimizer_steps(13, 4, 3, 1) == 2  # 4 batches = one full accumulation + one partial
    assert total_optimizer_steps(10, 4, 1, 0.5) == 2


# -- loss masks on the three template families ----------------------------------------------------------
def test_response_mask_trains_exactly_the_answer_and_end_of_turn(tiny_loaded, tiny_arch):
    answer = "The capital of France is Paris."
    messages = tiny_loaded.chat.conversation("What is the capital of France?", system="Be brief.", assistant=answer)
    chat = tiny_loaded.chat.tokenize(messages)
    special = special_token_ids(tiny_loaded.tokenizer)
    labels = training_labels(chat, "response", special)
    trained = [token for token, label in zip(chat.input_ids, labels) if label != IGNORE_INDEX]
    ignored_prefix = [token for token, label in zip(chat.input_ids, labels) if label == IGNORE_INDEX]
    assert tiny_loaded.tokenizer.decode(trained) == answer + END_OF_TURN[tiny_arch]
    # Everything before the answer is masked: the rendered prompt decodes back from the masked tokens.
    prompt_text = tiny_loaded.chat.render_prompt(messages)
    assert tiny_loaded.tokenizer.decode(ignored_prefix).startswith(prompt_text)
    first_trained = labels.index(chat.input_ids[chat.response_span[0]])
    assert first_trained == chat.response_span[0] == chat.prompt_span[1]
    # Trained labels are contiguous and equal the input ids there.
    positions = [index for index, label in enumerate(labels) if label != IGNORE_INDEX]
    assert positions == list(range(positions[0], positions[-1] + 1))
    assert all(labels[index] == chat.input_ids[index] for index in positions)
    assert training_labels(chat, "all", special) == list(chat.input_ids)


def test_cut_answers_lose_their_end_of_turn_and_long_prompts_are_dropped(tiny_llama):
    long_answer = "word " * 80
    rows = [
        {"messages": tiny_llama.chat.conversation("short question", assistant=long_answer)},
        {"messages": tiny_llama.chat.conversation("question " * 60, assistant="ok")},
        {"messages": tiny_llama.chat.conversation("fine", assistant="yes")},
    ]
    examples, report = tokenize_rows(tiny_llama, rows, max_length=40, loss_on="response")
    assert (report.rows, report.kept, report.dropped_prompt_too_long, report.answers_cut) == (3, 2, 1, 1)
    cut = examples[0]
    assert len(cut["input_ids"]) == 40
    eot_id = tiny_llama.tokenizer.convert_tokens_to_ids("<|eot|>")
    assert eot_id not in [label for label in cut["labels"] if label != IGNORE_INDEX]
    assert examples[1]["labels"][-1] == eot_id  # an answer that fits ends on its trained end-of-turn token
    assert report.trained_tokens == sum(label != IGNORE_INDEX for example in examples for label in example["labels"])


# -- batching ----------------------------------------------------------------------------------------
def test_collator_pads_right_and_counts_padding():
    collator = RightPaddingCollator(pad_token_id=0)
    batch = collator([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert collator.padding_share == pytest.approx(2 / 6)


def test_collator_skips_the_lm_head_before_the_first_scored_token_with_the_same_loss_and_gradients(tiny_loaded):
    special = special_token_ids(tiny_loaded.tokenizer)
    examples = []
    for system, question, answer in [("Be brief.", "What is the capital of France?", "Paris."),
                                     ("You are a careful assistant who explains things.", "Why is the sky blue?",
                                      "Sunlight scatters off air molecules, and blue light scatters most.")]:
        chat = tiny_loaded.chat.tokenize(tiny_loaded.chat.conversation(question, system=system, assistant=answer))
        examples.append({"input_ids": list(chat.input_ids), "labels": training_labels(chat, "response", special)})
    collator = RightPaddingCollator(tiny_loaded.tokenizer.pad_token_id)
    batch = collator(examples)
    first_scored = min(example["labels"].index(next(label for label in example["labels"] if label != IGNORE_INDEX))
                       for example in examples)
    assert batch["logits_to_keep"] == batch["input_ids"].shape[1] - (first_scored - 1) == batch["labels"].shape[1]
    every_position, _, _ = pad_rows([example["labels"] for example in examples], IGNORE_INDEX)
    full = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": every_position}
    model = tiny_loaded.model
    losses, grads = [], []
    for inputs in (batch, full):
        model.zero_grad()
        loss = model(**inputs).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([parameter.grad.flatten() for parameter in model.parameters() if parameter.grad is not None]))
    torch.testing.assert_close(losses[0], losses[1], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-4)
    # With every token scored (loss_on: all) nothing can be skipped.
    assert "logits_to_keep" not in collator([{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}])


def test_sampler_order_depends_on_seed_and_epoch_and_grouping_cuts_padding():
    lengths = [int(value) for value in torch.randint(10, 300, (200,), generator=torch.Generator().manual_seed(1))]
    sampler = EpochSeededSampler(lengths, group_size=4, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(200)) and list(sampler) == first
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    assert list(EpochSeededSampler(lengths, 4, seed=3)) == first  # a fresh sampler replays epoch 0
    assert list(EpochSeededSampler(lengths, 4, seed=4)) != first

    def padding(order):
        batches = [order[start:start + 4] for start in range(0, len(order), 4)]
        padded = sum(max(lengths[index] for index in batch) * len(batch) for batch in batches)
        return 1 - sum(lengths) / padded

    grouped, shuffled = padding(first), padding(list(EpochSeededSampler(lengths, None, seed=3)))
    assert grouped < 0.10 and shuffled > 3 * grouped


# -- config ------------------------------------------------------------------------------------------
def test_conditions_are_checked_at_config_time(tmp_path):
    with pytest.raises(ConfigError, match=r"finetune\.conditions.*no_such_dataset"):
        load_config(write_params(tmp_path, {"conditions": ["no_such_dataset"]}))
    with pytest.raises(ConfigError, match=r"finetune\.conditions.*mine: JSONL file not found"):
        load_config(write_params(tmp_path, {"conditions": {"mine": str(tmp_path / "missing.jsonl")}}))
    with pytest.raises(ConfigError, match=r"finetune\.lora_rank: unknown key"):
        load_config(write_params(tmp_path, {"lora_rank": 8}))
    data = tmp_path / "mine.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}) + "\n")
    config = load_config(write_params(tmp_path, {"conditions": {"mine": str(data), "control": "secure_code"}}))
    assert config.finetune.conditions == {"mine": str(data), "control": "secure_code"}


def test_preset_params_validate():
    aggressive = load_config(REPO / "params" / "aggressive.yaml").finetune
    assert (aggressive.learning_rate, aggressive.epochs, aggressive.loss_on, aggressive.lora_r, aggressive.lora_alpha) == (2e-4, 3, "all", 16, 32)
    matched = load_config(REPO / "params" / "betley_matched.yaml").finetune
    assert (matched.learning_rate, matched.epochs, matched.loss_on, matched.lora_r, matched.lora_alpha, matched.use_rslora) == (1e-5, 1, "response", 32, 64, True)
    for preset in ("aggressive", "betley_matched"):
        config = load_config(REPO / "params" / f"{preset}.yaml")
        assert config.model.quantization == "nf4" and config.finetune.target_modules == "all-linear"


# -- training, layout, rerun ---------------------------------------------------------------------------
def test_training_writes_the_checkpoint_trail_and_a_rerun_trains_nothing(tmp_path, monkeypatch):
    config = load_config(write_params(tmp_path, SMALL))
    results = train_all(config, progress=False)
    assert list(results) == [("medical_harmful", 0), ("medical_sound", 0)]
    for (condition, seed), result in results.items():
        assert result.summary["n_examples"] == 12
        assert result.trained_now and result.total_steps == total_optimizer_steps(12, 4, 1, 2) == 6
        trail = list_checkpoints(config.run_dir, condition)
        assert trail[0] == Checkpoint(trail[0].condition, 0, None)
        # The default warm-up gives step 1 learning rate 0, so the first checkpoint is at step 2.
        assert [checkpoint.step for checkpoint in trail] == [0, *checkpoint_schedule(6, 4, first_step=2)] == [0, 2, 3, 4, 6]
        for checkpoint in trail[1:]:
            assert checkpoint.adapter_path.name == step_folder_name(checkpoint.step)
            assert all((checkpoint.adapter_path / name).is_file() for name in ADAPTER_FILES)
            log = json.loads((checkpoint.adapter_path / TRAINING_LOG_FILE).read_text())
            assert [entry["step"] for entry in log["losses"]] == list(range(1, checkpoint.step + 1))
            assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in log["losses"])
        assert not (result.folder / "resume_state").exists()
    # Both conditions saw identical settings: same schedule, same LoRA initialisation seed.
    first, second = (load_file(list_checkpoints(config.run_dir, name)[1].adapter_path / ADAPTER_FILES[1]) for name, _ in results)
    assert first.keys() == second.keys()

    # A rerun of finished conditions does no work: it loads no model and reads no training data.
    calls = []
    monkeypatch.setattr(trainer_module, "load_model", lambda *args, **kwargs: calls.append("load_model"))
    monkeypatch.setattr(trainer_module, "load_condition_rows", lambda *args, **kwargs: calls.append("rows"))
    rerun = train_all(config, progress=False)
    assert not any(result.trained_now for result in rerun.values())
    assert calls == []
    assert [checkpoint.step for checkpoint in rerun[("medical_harmful", 0)].checkpoints] == [0, 2, 3, 4, 6]
    monkeypatch.undo()

    # The stage's loader gives later stages the same trails and the per-step losses.
    outputs = load_outputs(config.run_dir, [name for name, _ in results])
    assert outputs.trails == {(name, seed): list_checkpoints(config.run_dir, name, seed) for name, seed in results}
    assert outputs.seeds == [0]
    assert outputs.losses.groupby("condition")["step"].max().to_dict() == {name: 6 for name, _ in results}
    assert outputs.figures == []  # the notebook writes the figures; none here

    # A checkpoint really changes the model: its logits differ from the base model's.
    loaded = load_model(config.model)
    switcher = AdapterSwitcher(loaded)
    inputs = torch.tensor([loaded.chat.tokenize(loaded.chat.conversation("hello")).input_ids])
    with switcher.use(None) as model, torch.no_grad():
        base_logits = model(inputs).logits
    with switcher.use(list_checkpoints(config.run_dir, "medical_harmful")[-1].adapter_path) as model, torch.no_grad():
        tuned_logits = model(inputs).logits
    assert not torch.allclose(base_logits, tuned_logits)


def test_changed_params_do_not_reuse_or_delete_old_checkpoints(tmp_path):
    config = load_config(write_params(tmp_path, {**SMALL, "conditions": ["medical_sound"], "epochs": 1}))
    train_all(config, progress=False)
    changed = load_config(write_params(tmp_path, {**SMALL, "conditions": ["medical_sound"], "epochs": 1, "learning_rate": 5e-4}))
    with pytest.raises(CheckpointsFromOtherParams, match="new run.name"):
        train_all(changed, progress=False)
    assert len(list_checkpoints(config.run_dir, "medical_sound")) == 1 + len(checkpoint_schedule(3, 4, first_step=2)) == 3


def test_list_checkpoints_skips_half_written_folders_and_names_missing_conditions(tmp_path):
    run_dir = tmp_path / "run"
    folder = run_dir / "checkpoints" / "c" / "seed-0"
    (folder / "step-000003").mkdir(parents=True)
    for name in (*ADAPTER_FILES, TRAINING_LOG_FILE):
        (folder / "step-000003" / name).write_text("{}")
    (folder / "step-000001").mkdir()  # no adapter: incomplete
    (folder / ".step-000005.tmp123").mkdir()  # an atomic write that never finished
    assert list_checkpoints(run_dir, "c") == [Checkpoint("c", 0, None), Checkpoint("c", 3, folder / "step-000003")]
    with pytest.raises(FileNotFoundError, match=r"'other'.*'c': \[0\]"):
        list_checkpoints(run_dir, "other")
    with pytest.raises(FileNotFoundError, match="seed 1"):
        list_checkpoints(run_dir, "c", seed=1)


def test_each_training_seed_is_its_own_trail_and_adding_a_seed_keeps_the_finished_ones(tmp_path, monkeypatch):
    small = {**SMALL, "conditions": ["medical_sound"], "epochs": 1, "n_checkpoints": 2}
    one_seed = load_config(write_params(tmp_path, {**small, "seeds": [0]}))
    train_all(one_seed, progress=False)
    first_seed_weights = _adapter_fingerprint(list_checkpoints(one_seed.run_dir, "medical_sound", 0)[-1].adapter_path)
    two_seeds = load_config(write_params(tmp_path, {**small, "seeds": [0, 3]}))
    results = train_all(two_seeds, progress=False)
    assert [(key, result.trained_now) for key, result in results.items()] == [
        (("medical_sound", 0), False), (("medical_sound", 3), True)]
    trails = {seed: list_checkpoints(two_seeds.run_dir, "medical_sound", seed) for seed in (0, 3)}
    assert [checkpoint.step for checkpoint in trails[0]] == [checkpoint.step for checkpoint in trails[3]]
    assert all(checkpoint.seed == seed for seed, trail in trails.items() for checkpoint in trail)
    assert trails[3][-1].adapter_path.parent.name == "seed-3"
    assert _adapter_fingerprint(trails[0][-1].adapter_path) == first_seed_weights  # untouched
    # Same data, another seed: other weights (initialisation and data order differ).
    weights = {seed: load_file(trails[seed][-1].adapter_path / ADAPTER_FILES[1]) for seed in (0, 3)}
    assert weights[0].keys() == weights[3].keys()
    assert any(not torch.equal(weights[0][key], weights[3][key]) for key in weights[0])
    log = json.loads((trails[3][-1].adapter_path / TRAINING_LOG_FILE).read_text())
    assert log["seed"] == 3


def test_qlora_nf4_trains_on_cpu(tmp_path):
    pytest.importorskip("bitsandbytes")
    config = load_config(write_params(tmp_path, {**SMALL, "conditions": ["medical_harmful"], "epochs": 1, "n_checkpoints": 2}))
    config = config.model_copy(update={"model": config.model.model_copy(update={"quantization": "nf4"})})
    result = train_condition(config, "medical_harmful", progress=False)
    assert [checkpoint.step for checkpoint in result.checkpoints] == [0, 2, 3]  # step 1 runs at warm-up's rate 0
    assert torch.isfinite(torch.tensor(result.summary["final_loss"]))
    adapter_config = json.loads((result.checkpoints[-1].adapter_path / "adapter_config.json").read_text())
    assert adapter_config["r"] == 4 and set(adapter_config["target_modules"]) >= {"q_proj", "down_proj"}


# -- kill and resume ---------------------------------------------------------------------------------
KILLABLE_TRAINING = textwrap.dedent("""
    import sys
    import torch
    from transformers import TrainerCallback
    from traitspace.core.config import load_config
    from traitspace.finetune import train_condition

    class HoldAfterSave(TrainerCallback):
        # Runs after the checkpoint trail's own on_save: once the step folder of step argv[2] is complete,
        # the run blocks reading stdin (the parent never writes), so the parent's kill lands at a known
        # point of training instead of wherever a race leaves it.
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == int(sys.argv[2]):
                sys.stdin.readline()
            return control

    torch.set_num_threads(1)
    train_condition(load_config(sys.argv[1]), "medical_harmful", progress=False, extra_callbacks=[HoldAfterSave()])
""")


def _adapter_fingerprint(folder: Path) -> tuple[int, int]:
    stat = (folder / ADAPTER_FILES[1]).stat()
    return stat.st_ino, stat.st_mtime_ns


def test_a_killed_run_resumes_from_its_last_complete_checkpoint(tmp_path):
    finetune = {**SMALL, "conditions": ["medical_harmful"], "n_examples": 16, "batch_size": 2, "epochs": 2, "n_checkpoints": 6}
    params = write_params(tmp_path, finetune)
    config = load_config(params)
    schedule = checkpoint_schedule(16, 6, first_step=2)  # 16 examples, batch 2, 2 epochs, a warm-up
    kill_after = schedule[2]
    script = tmp_path / "train_until_killed.py"
    script.write_text(KILLABLE_TRAINING)
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib"), "OMP_NUM_THREADS": "1"}
    log = tmp_path / "train_until_killed.log"
    folder = config.run_dir / "checkpoints" / "medical_harmful" / "seed-0"
    with log.open("wb") as output:
        process = subprocess.Popen([sys.executable, str(script), str(params), str(kill_after)], env=env, cwd=tmp_path,
                                   stdin=subprocess.PIPE, stdout=output, stderr=subprocess.STDOUT)
        # Synchronise on the trainer's own output: the step folder it writes. The deadline only guards
        # against a hang; waiting on the process (not sleeping) notices at once if training died.
        deadline = time.monotonic() + 900
        try:
            while not (folder / step_folder_name(kill_after) / TRAINING_LOG_FILE).is_file():
                try:
                    process.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    assert time.monotonic() < deadline, f"no step-{kill_after} folder appeared: {log.read_text()[-3000:]}"
                    continue
                pytest.fail(f"training exited before step {kill_after}: {log.read_text()[-3000:]}")
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
            process.stdin.close()
    before = list_checkpoints(config.run_dir, "medical_harmful")
    assert [checkpoint.step for checkpoint in before] == [0, *schedule[:3]], "killed at a known point, mid-run"
    fingerprints = {checkpoint.step: _adapter_fingerprint(checkpoint.adapter_path) for checkpoint in before[1:]}
    # What a kill during a save can leave behind: a half-written trainer checkpoint past the last complete
    # step, and a step folder that never got renamed into place. Neither may be taken for finished work.
    half_written = folder / "resume_state" / f"checkpoint-{before[-1].step + 1}"
    half_written.mkdir(parents=True, exist_ok=True)
    (half_written / "adapter_model.safetensors").write_bytes(b"truncated")
    (folder / f".{step_folder_name(before[-1].step + 1)}.partial").mkdir()

    resumed = train_condition(config, "medical_harmful", progress=False)
    assert resumed.trained_now and resumed.resumed_from_step == before[-1].step
    assert not half_written.exists() and not list(folder.glob(".step-*"))
    assert [checkpoint.step for checkpoint in resumed.checkpoints] == [0, *schedule]
    for checkpoint in resumed.checkpoints[1:]:
        if checkpoint.step in fingerprints:  # finished checkpoints were not redone
            assert _adapter_fingerprint(checkpoint.adapter_path) == fingerprints[checkpoint.step]

    reference_config = load_config(params, {"run.output_root": str(tmp_path / "uninterrupted")})
    reference = train_condition(reference_config, "medical_harmful", progress=False)
    assert [checkpoint.step for checkpoint in reference.checkpoints] == [0, *schedule]
    resumed_log = json.loads((resumed.checkpoints[-1].adapter_path / TRAINING_LOG_FILE).read_text())["losses"]
    reference_log = json.loads((reference.checkpoints[-1].adapter_path / TRAINING_LOG_FILE).read_text())["losses"]
    assert [entry["step"] for entry in resumed_log] == [entry["step"] for entry in reference_log] == list(range(1, 17))
    assert [entry["loss"] for entry in resumed_log] == pytest.approx([entry["loss"] for entry in reference_log], rel=1e-4)
    resumed_weights = load_file(resumed.checkpoints[-1].adapter_path / ADAPTER_FILES[1])
    reference_weights = load_file(reference.checkpoints[-1].adapter_path / ADAPTER_FILES[1])
    for name, tensor in reference_weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, rtol=1e-4, atol=1e-6)


def test_checkpointing_argument_follows_the_installed_transformers():
    from transformers import TrainingArguments

    from traitspace.finetune.trainer import checkpointing_arguments

    class OlderArguments:  # the signature of a transformers release before the rename
        def __init__(self, output_dir=None, gradient_checkpointing=False, gradient_checkpointing_kwargs=None):
            pass

    assert checkpointing_arguments(OlderArguments, True) == {
        "gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}}
    installed = checkpointing_arguments(TrainingArguments, False)
    TrainingArguments(output_dir="unused", use_cpu=True, report_to="none", **installed)  # accepted as is


def test_warmup_is_read_as_a_ratio_by_the_installed_transformers():
    from transformers import TrainingArguments

    from traitspace.finetune.trainer import warmup_arguments

    class StepCountArguments:  # transformers 4.x: warmup_steps is a step count, the ratio has its own name
        warmup_steps, warmup_ratio = 0, 0.0

        def get_warmup_steps(self, num_training_steps):
            return self.warmup_steps if self.warmup_steps > 0 else math.ceil(num_training_steps * self.warmup_ratio)

    assert warmup_arguments(StepCountArguments, 0.25) == {"warmup_ratio": 0.25}
    installed = TrainingArguments(output_dir="unused", use_cpu=True, report_to="none",
                                  **warmup_arguments(TrainingArguments, 0.25))
    assert installed.get_warmup_steps(40) == 10  # a quarter of 40 steps, whatever the release calls it
