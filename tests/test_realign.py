"""Re-alignment (notebook 08): the adapter is trained, not frozen; the trail resumes after a kill like
the fine-tuning trail; the recovery maths on synthetic numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from traitspace.core.checkpoints import ADAPTER_FILES, TRAINING_LOG_FILE, Checkpoint
from traitspace.core.config import load_config
from traitspace.core.models import load_model
from traitspace.finetune import train_condition
from traitspace.realign import (
    AdapterNotTrainable,
    RealignTrail,
    benign_datasets,
    dense_schedule,
    load_trainable_adapter,
    recovery_fraction,
    recovery_table,
    steps_summary,
    steps_to_recovery,
    train_realign_trail,
)
from traitspace.realign.plan import _first_prompt, benign_rows

# Medical rows: their prompts fit max_length on the tiny models' small-vocabulary tokenizer.
FINETUNE = {"conditions": ["medical_harmful", "medical_sound"], "n_examples": 8, "max_length": 192, "batch_size": 4,
            "epochs": 1, "n_checkpoints": 2, "learning_rate": 1e-3, "lora_r": 4, "lora_alpha": 8}
REALIGN = {"benign_sets": ["in_domain"], "n_examples": 12, "batch_size": 2, "save_every": 2, "learning_rate": 1e-3}


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def write_params(tmp_path: Path, realign: dict, root: str = "outputs") -> Path:
    params = {"run": {"output_root": str(tmp_path / root)}, "model": {"source": "tiny:llama"},
              "finetune": FINETUNE, "realign": realign}
    path = tmp_path / f"{root}.yaml"
    path.write_text(json.dumps(params))  # JSON is valid YAML
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A fine-tuned EM checkpoint of the tiny model (the thing re-alignment continues)."""
    tmp_path = tmp_path_factory.mktemp("realign_source")
    config = load_config(write_params(tmp_path, REALIGN))
    result = train_condition(config, "medical_harmful", progress=False)
    return tmp_path, result.checkpoints[-1]


def trail_of(checkpoint: Checkpoint) -> RealignTrail:
    return RealignTrail("medical_harmful", "em", "in_domain", "medical_sound", checkpoint)


def adapter_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / ADAPTER_FILES[1])


def file_identity(folder: Path) -> tuple[int, int]:
    stat = (folder / ADAPTER_FILES[1]).stat()
    return stat.st_ino, stat.st_mtime_ns


# -- the silent failure -----------------------------------------------------------------------------
def test_an_adapter_loaded_for_inference_has_nothing_to_train_and_is_refused(source):
    from peft import PeftModel

    _, checkpoint = source
    frozen = PeftModel.from_pretrained(load_model("tiny:llama").model, str(checkpoint.adapter_path))  # peft's default
    assert not any(parameter.requires_grad for parameter in frozen.parameters()), \
        "is_trainable=False leaves no trainable weight: an optimizer over it would change nothing"
    with pytest.raises(AdapterNotTrainable, match="is_trainable=False"):
        load_trainable_adapter(load_model("tiny:llama"), checkpoint.adapter_path, trainable=False)
    trainable = load_trainable_adapter(load_model("tiny:llama"), checkpoint.adapter_path)
    names = [name for name, parameter in trainable.named_parameters() if parameter.requires_grad]
    assert names and all("lora_" in name for name in names)  # the LoRA weights, and only they


def test_realignment_trains_the_loaded_adapter_and_moves_it(source):
    from transformers import TrainerCallback

    tmp_path, checkpoint = source
    before = adapter_weights(checkpoint.adapter_path)
    started_from = {}

    class WeightsAtStart(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            started_from.update({name.replace(".default", ""): parameter.detach().clone()
                                 for name, parameter in model.named_parameters() if parameter.requires_grad})
            return control

    config = load_config(write_params(tmp_path, REALIGN))
    result = train_realign_trail(config, trail_of(checkpoint), ("medical_harmful", "medical_sound"), progress=False,
                                 extra_callbacks=[WeightsAtStart()])
    assert result.trained_now and result.total_steps == 6
    assert [point.step for point in result.checkpoints] == [0, 2, 4, 6]
    assert result.checkpoints[0].adapter_path == checkpoint.adapter_path  # step 0 is the source checkpoint
    assert result.folder == config.run_dir / "realign" / "checkpoints" / "medical_harmful" / "medical_sound" / "seed-0"
    # Training started from the source's weights (its lora_B matrices, zero in a fresh adapter, included),
    # and every one of them was trainable.
    assert started_from.keys() == before.keys()
    assert all(torch.equal(started_from[name], before[name]) for name in before)
    assert any(float(before[name].abs().max()) > 0 for name in before if "lora_B" in name)
    after = adapter_weights(result.checkpoints[-1].adapter_path)
    assert before.keys() == after.keys()
    assert all(not torch.equal(before[name], after[name]) for name in before), "re-alignment left weights untouched"
    log = json.loads((result.checkpoints[-1].adapter_path / TRAINING_LOG_FILE).read_text())
    assert [entry["step"] for entry in log["losses"]] == list(range(1, 7))
    # A rerun of the finished trail trains nothing.
    again = train_realign_trail(config, trail_of(checkpoint), ("medical_harmful", "medical_sound"), progress=False)
    assert not again.trained_now and again.checkpoints == result.checkpoints


class Killed(RuntimeError):
    pass


def test_a_killed_realignment_trail_resumes_to_the_same_adapter(source):
    from transformers import TrainerCallback

    tmp_path, checkpoint = source

    class KillAfterSave(TrainerCallback):
        # Runs after the trail's own on_save: step 2's folder is complete when the run dies.
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise Killed("killed after step 2")
            return control

    config = load_config(write_params(tmp_path, REALIGN, root="killed"))
    trail = trail_of(checkpoint)
    pair = ("medical_harmful", "medical_sound")
    with pytest.raises(Killed):
        train_realign_trail(config, trail, pair, progress=False, extra_callbacks=[KillAfterSave()])
    folder = trail.folder(config.run_dir)
    assert sorted(path.name for path in folder.glob("step-*")) == ["step-000002"]
    finished = file_identity(folder / "step-000002")

    resumed = train_realign_trail(config, trail, pair, progress=False)
    assert resumed.trained_now and resumed.resumed_from_step == 2
    assert [point.step for point in resumed.checkpoints] == [0, 2, 4, 6]
    assert file_identity(folder / "step-000002") == finished  # not redone
    assert not (folder / "resume_state").exists()

    reference = train_realign_trail(load_config(write_params(tmp_path, REALIGN, root="uninterrupted")), trail, pair,
                                    progress=False)
    resumed_log = json.loads((resumed.checkpoints[-1].adapter_path / TRAINING_LOG_FILE).read_text())["losses"]
    reference_log = json.loads((reference.checkpoints[-1].adapter_path / TRAINING_LOG_FILE).read_text())["losses"]
    assert [entry["step"] for entry in resumed_log] == list(range(1, 7))
    assert [entry["loss"] for entry in resumed_log] == pytest.approx([entry["loss"] for entry in reference_log], rel=1e-4)
    resumed_weights = adapter_weights(resumed.checkpoints[-1].adapter_path)
    for name, tensor in adapter_weights(reference.checkpoints[-1].adapter_path).items():
        torch.testing.assert_close(resumed_weights[name], tensor, rtol=1e-4, atol=1e-6)


# -- the plan ------------------------------------------------------------------------------------------
def test_benign_sets_and_rows(tmp_path):
    config = load_config(write_params(tmp_path, {**REALIGN, "benign_sets": ["in_domain", "out_of_domain"]}))
    assert benign_datasets("medical_harmful", config.realign) == {"in_domain": "medical_sound",
                                                                  "out_of_domain": "financial_prudent"}
    assert benign_datasets("financial_risky", config.realign)["out_of_domain"] == "medical_sound"
    with pytest.raises(ValueError, match="realign.pairs"):
        benign_datasets("medical_sound", config.realign)
    only_medical = config.realign.model_copy(update={"out_of_domain": ["medical_sound"]})
    with pytest.raises(ValueError, match="realign.out_of_domain"):
        benign_datasets("medical_harmful", only_medical)
    # In-domain rows are held out: no prompt the pair's fine-tuning trained on.
    from traitspace.finetune import load_condition_rows

    trail = trail_of(Checkpoint("medical_harmful", 2, None))
    rows = benign_rows(config, trail, ("medical_harmful", "medical_sound"))
    seen = {_first_prompt(row) for row in load_condition_rows(config.finetune, "medical_harmful")}
    assert len(rows) == 12 and not seen & {_first_prompt(row) for row in rows}
    assert dense_schedule(35, 5) == [5, 10, 15, 20, 25, 30, 35] and dense_schedule(7, 5) == [5, 7]


# -- recovery maths ---------------------------------------------------------------------------------------
def test_recovery_fraction_on_synthetic_numbers():
    assert recovery_fraction([2.0], [0.5])[0] == pytest.approx(0.75)  # one seed: no interval
    assert np.isnan(recovery_fraction([2.0], [0.5])[1])
    # Seed-mean shift 2 -> 0.5: recovery 0.75; seeds that agree exactly leave no spread to widen it.
    value, low, high = recovery_fraction([1.9, 2.0, 2.1], [0.475, 0.5, 0.525])
    assert value == pytest.approx(0.75) and low == pytest.approx(0.75, abs=1e-6) and high == pytest.approx(0.75, abs=1e-6)
    value, low, high = recovery_fraction([1.8, 2.0, 2.2], [0.6, 0.2, 0.1])
    assert value == pytest.approx((1.2 + 1.8 + 2.1) / 6) and -np.inf < low < value < high < np.inf
    assert recovery_fraction([-2.0, -2.0], [-2.0, -2.0])[0] == 0.0            # not moved
    assert recovery_fraction([-2.0, -2.0], [1.0, 1.0])[0] == pytest.approx(1.5)  # past the base model
    assert recovery_fraction([1.0, 1.0], [2.0, 2.0])[0] == pytest.approx(-1.0)   # moved further away


def test_recovery_interval_is_honest_with_few_seeds():
    """Fieller's interval covers the true recovery ~95% of the time with 3 seeds (a bootstrap over 3
    seeds would not), two noisy seeds give a wide interval, a shift indistinguishable from 0 an unbounded one."""
    generator = np.random.default_rng(0)
    true_recovery, covered, trials = 0.6, 0, 2000
    for _ in range(trials):
        before = 2.0 + generator.normal(0, 0.5, 3)
        after = before * (1 - true_recovery) + generator.normal(0, 0.3, 3)
        _, low, high = recovery_fraction(before, after)
        covered += low <= true_recovery <= high
    assert 0.93 <= covered / trials <= 0.97
    value, low, high = recovery_fraction([2.0, 2.4], [0.6, 1.4])
    assert low < value - 1 and high > value + 1  # t on 1 degree of freedom
    _, low, high = recovery_fraction([0.1, -0.1, 0.05], [0.0, 0.0, 0.0])
    assert low == -np.inf and high == np.inf


def test_recovery_table_classifies_and_steps_to_recovery():
    rows = []
    for seed, noise in enumerate([0.0, 0.05, -0.05]):
        for step in (0, 5, 10):
            rows.append({"trait": "returns", "seed": seed, "realign_step": step, "shift": 2.0 * (1 - step / 10) + 2 * noise * (step == 10)})
            rows.append({"trait": "persists", "seed": seed, "realign_step": step, "shift": -1.0 + noise * step / 10})
            rows.append({"trait": "halfway", "seed": seed, "realign_step": step,
                         "shift": 1.0 - [0, 0.2, 0.5][step // 5] + [0.4, -0.4, 0.0][seed] * (step > 0)})
    shifts = pd.DataFrame(rows)
    table = recovery_table(shifts, ["trait"], recovered_above=0.5).set_index("trait")
    assert table.loc["returns", "status"] == "returns" and table.loc["returns", "recovery"] == pytest.approx(1.0)
    assert table.loc["persists", "status"] == "persists" and abs(table.loc["persists", "recovery"]) < 0.01
    assert table.loc["halfway", "status"] == "undetermined"
    assert (table["n_seeds"] == 3).all() and (table["after_step"] == 10).all()
    steps = steps_to_recovery(shifts, ["trait"], fraction=0.5).set_index(["trait", "seed"])
    assert steps.loc[("returns", 0), "steps_to_recovery"] == 5
    assert np.isnan(steps.loc[("persists", 0), "steps_to_recovery"])
    summary = steps_summary(steps.reset_index(), ["trait"]).set_index("trait")
    assert summary.loc["returns", "steps"] == 5 and summary.loc["returns", "n_recovered"] == 3
    assert summary.loc["persists", "n_recovered"] == 0 and np.isnan(summary.loc["persists", "steps"])


# -- the combined trail's bookkeeping ----------------------------------------------------------------------
def test_points_label_the_shared_base_and_source_for_every_trail(tmp_path):
    from traitspace.realign import RealignResult
    from traitspace.realign.measure import combined_points, em_minus_control, spread_to_points, unique_checkpoints

    results = []
    for role, condition in (("em", "medical_harmful"), ("control", "medical_sound")):
        source = Checkpoint(condition, 12, tmp_path / condition, 0)
        trail = RealignTrail("medical_harmful", role, "in_domain", "medical_sound", source)
        steps = [Checkpoint(trail.label, step, tmp_path / trail.label / str(step), 0) for step in (2, 4)]
        results.append(RealignResult(trail, tmp_path, [Checkpoint(trail.label, 0, source.adapter_path, 0), *steps],
                                     True, 0, 4, 0.0))
    points = combined_points(results)
    assert [(point.phase, point.step, point.realign_step) for point in points[:4]][1:] == [
        ("finetune", 12, 0), ("realign", 14, 2), ("realign", 16, 4)]
    assert np.isnan(points[0].realign_step) and points[0].step == 0
    measured = unique_checkpoints(points)
    assert len(measured) == 1 + 2 + 4  # the base model once, each source once, each re-alignment step
    # A table as a measurement stage stores it: the base part under "base", the rest by checkpoint.
    table = pd.DataFrame([{"condition": "base" if c.step == 0 else c.condition, "seed": 0, "step": c.step,
                           "value": float(c.step) + (100 if c.condition.startswith("medical_sound") else 0)} for c in measured])
    spread = spread_to_points(table, points)
    assert len(spread) == len(points)
    em_trail = spread[spread["role"] == "em"].set_index("step")["value"]
    assert em_trail.to_dict() == {0: 0.0, 12: 12.0, 14: 14.0, 16: 16.0}
    assert set(spread.loc[spread["role"] == "control", "condition"]) == {"medical_sound/medical_sound"}
    difference = em_minus_control(spread.assign(trait="t"), ["pair", "benign", "trait"], "value").set_index("realign_step")
    assert difference["shift"].to_dict() == {0: -100.0, 2: -100.0, 4: -100.0}
