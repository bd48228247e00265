"""Projecting checkpoints: values equal direct capture . unit vector, adapters swapped on one base,
finished checkpoints not recomputed, parts from other params never mixed in."""

import pandas as pd
import pytest
import torch

from traitspace import project as project_module
from traitspace.core.hooks import capture_conversations
from traitspace.core.models import AdapterSwitcher, load_model
from traitspace.core.checkpoints import Checkpoint
from traitspace.project import norm_rescaled_drift_table, project_checkpoints

QUESTIONS = ["How should I spend a free afternoon?", "What makes a good friend?", "Is it worth learning to cook?"]


def _adapter(base_dir, target, seed):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(load_model(str(base_dir)).model,
                                LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    peft_model.save_pretrained(target)
    return target


@pytest.fixture
def setting(tiny_model_dirs, tmp_path):
    base_dir = tiny_model_dirs["qwen2"]
    checkpoints = [Checkpoint("em", 0, None), Checkpoint("em", 5, _adapter(base_dir, tmp_path / "em5", 1)),
                   Checkpoint("control", 0, None), Checkpoint("control", 5, _adapter(base_dir, tmp_path / "c5", 2))]
    generator = torch.Generator().manual_seed(0)
    units = {name: torch.nn.functional.normalize(torch.randn(64, generator=generator), dim=0) for name in ("a", "b", "c")}
    layers = {"a": 1, "b": 2, "c": 2}
    return base_dir, checkpoints, units, layers


def run(base_dir, checkpoints, units, layers, out_dir, params_hash="h1"):
    loaded = load_model(str(base_dir))
    return project_checkpoints(loaded, AdapterSwitcher(loaded), checkpoints, QUESTIONS, units, layers,
                               out_dir, params_hash=params_hash, pooling="last_prompt", batch_size=2)


def test_projection_values_match_direct_capture(setting, tmp_path):
    base_dir, checkpoints, units, layers = setting
    table = run(base_dir, checkpoints, units, layers, tmp_path / "proj")
    assert len(table) == len(checkpoints) * len(units) * len(QUESTIONS)
    loaded = load_model(str(base_dir))
    with AdapterSwitcher(loaded).use(checkpoints[1].adapter_path):
        acts = capture_conversations(loaded, [loaded.chat.conversation(q) for q in QUESTIONS],
                                     layers=[1, 2], pooling="last_prompt")
    got = table[(table.condition == "em") & (table.step == 5) & (table.trait == "b")].sort_values("prompt")
    torch.testing.assert_close(torch.tensor(got["value"].to_numpy()).double(), (acts[2] @ units["b"]).double(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(got["act_norm"].to_numpy()).double(), acts[2].norm(dim=1).double(), atol=1e-4, rtol=1e-4)
    # Both conditions share the base model at step 0; the adapters move them apart.
    base_values = table[table.step == 0].pivot_table(index=["trait", "prompt"], columns="condition", values="value")
    torch.testing.assert_close(torch.tensor(base_values["em"].to_numpy()), torch.tensor(base_values["control"].to_numpy()))
    moved = table[table.step == 5].pivot_table(index=["trait", "prompt"], columns="condition", values="value")
    assert (moved["em"] - moved["control"]).abs().max() > 1e-3
    means = project_module.load_mean_activations(tmp_path / "proj" / "parts", checkpoints)
    torch.testing.assert_close(means[("em", 5)][2], acts[2].mean(0), atol=1e-5, rtol=1e-5)


def test_finished_checkpoints_are_not_recomputed(setting, tmp_path, monkeypatch):
    base_dir, checkpoints, units, layers = setting
    first = run(base_dir, checkpoints[:2], units, layers, tmp_path / "proj")
    calls = []
    real = project_module.capture_conversations
    monkeypatch.setattr(project_module, "capture_conversations", lambda *a, **k: calls.append(1) or real(*a, **k))
    second = run(base_dir, checkpoints, units, layers, tmp_path / "proj")
    assert len(calls) == 1, "only control@5 is projected: control@0 is the base model em@0 already measured"
    pd.testing.assert_frame_equal(first, second[second.condition == "em"].reset_index(drop=True))
    calls.clear()
    run(base_dir, checkpoints, units, layers, tmp_path / "proj", params_hash="h2")
    assert len(calls) == 3, "a params change recomputes everything (the base model once)"


def test_norm_rescaled_drift(setting, tmp_path):
    base_dir, checkpoints, units, layers = setting
    table = run(base_dir, checkpoints, units, layers, tmp_path / "proj")
    drift = norm_rescaled_drift_table(table)
    assert set(drift.columns) >= {"condition", "step", "trait", "drift", "base_norm", "drift_pct_of_norm"}
    assert (drift[drift.step == 0]["drift"] == 0).all()
    row = drift[(drift.condition == "em") & (drift.step == 5) & (drift.trait == "a")].iloc[0]
    assert row["drift_pct_of_norm"] == pytest.approx(100 * row["drift"] / row["base_norm"])
