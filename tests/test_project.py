"""Projecting checkpoints: values equal direct capture . unit vector, adapters swapped on one base,
finished checkpoints not recomputed, parts from other params never mixed in; the per-checkpoint
parts cache; notebook 03's analysis tables and figures, read back through ``load_outputs``."""

import json
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from traitspace import project as project_module
from traitspace.project import stage as project_stage
from traitspace.core.hooks import capture_conversations
from traitspace.core.models import AdapterSwitcher, load_model
from traitspace.core.checkpoints import BASE_CONDITION, Checkpoint
from traitspace.core.parts import CheckpointParts
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
    torch.testing.assert_close(means[("em", 0, 5)][2], acts[2].mean(0), atol=1e-5, rtol=1e-5)


def test_finished_checkpoints_are_not_recomputed(setting, tmp_path, monkeypatch):
    base_dir, checkpoints, units, layers = setting
    first = run(base_dir, checkpoints[:2], units, layers, tmp_path / "proj")
    calls = []
    real = project_stage.capture_shared_prefixes  # prompt pooling: the shared system prompt runs once
    monkeypatch.setattr(project_stage, "capture_shared_prefixes", lambda *a, **k: calls.append(1) or real(*a, **k))
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


def test_checkpoint_parts_cache_by_fingerprint_and_share_the_base(tmp_path):
    parts = CheckpointParts(tmp_path / "parts")
    base_em, base_control, trained = Checkpoint("em", 0, None), Checkpoint("control", 0, None), Checkpoint("em", 3, None)
    assert not parts.is_fresh(base_em, "f1")
    table = pd.DataFrame({"condition": ["em", "em"], "step": [0, 0], "value": [1.0, 2.0]})
    parts.write(base_em, table, "f1", extra={"seconds": 1.5}, attachments={"note.txt": lambda path: path.write_text("x")})
    # Step 0 is the base model of every condition: one file, relabelled for whoever reads it.
    assert parts.path(base_control) == parts.path(base_em) == tmp_path / "parts" / BASE_CONDITION / "step-000000.parquet"
    assert parts.is_fresh(base_control, "f1") and not parts.is_fresh(base_control, "f2")
    assert list(parts.read(base_control)["condition"]) == ["control", "control"]
    assert parts.attachment_path(base_control, "note.txt").read_text() == "x"
    info = parts.info(base_em)
    assert {key: info[key] for key in ("fingerprint", "rows", "seconds")} == {"fingerprint": "f1", "rows": 2, "seconds": 1.5}
    assert info["bytes"] == parts.path(base_em).stat().st_size and len(info["sha256"]) == 64
    parts.write(trained, table.assign(step=3), "f1")
    assert parts.path(trained) == tmp_path / "parts" / "em" / "seed-0" / "step-000003.parquet"
    other_seed = Checkpoint("em", 3, None, seed=2)
    assert parts.path(other_seed) == tmp_path / "parts" / "em" / "seed-2" / "step-000003.parquet"
    assert parts.path(Checkpoint("em", 0, None, seed=2)) == parts.path(base_em)  # the base model, once
    assert sorted(parts.read_all()["step"]) == [0, 0, 3, 3]
    # A sidecar that is missing (part interrupted before it) or unreadable means stale.
    parts.sidecar_path(trained).write_text("{not json")
    assert not parts.is_fresh(trained, "f1") and parts.info(trained) == {}
    assert CheckpointParts(tmp_path / "nothing").read_all().empty
    # A part damaged after it was written (truncated, or bytes flipped) is stale: measured again, alone.
    parts.write(trained, table.assign(step=3), "f1")
    assert parts.is_fresh(trained, "f1") and parts.is_fresh(base_em, "f1")
    data = bytearray(parts.path(trained).read_bytes())
    data[len(data) // 2] ^= 0xFF
    parts.path(trained).write_bytes(bytes(data))
    assert not parts.is_fresh(trained, "f1") and parts.is_fresh(base_em, "f1")
    parts.path(base_em).write_bytes(parts.path(base_em).read_bytes()[:-10])
    assert not parts.is_fresh(base_em, "f1")


def test_analysis_files_and_figures_read_back_through_load_outputs(setting, tmp_path):
    base_dir, checkpoints, units, layers = setting
    folder = tmp_path / "run" / "projections"
    table = run(base_dir, checkpoints, units, layers, folder)
    table.to_parquet(folder / "projections.parquet", index=False)
    norm_rescaled_drift_table(table).to_parquet(folder / "drift.parquet", index=False)
    (folder / "manifest.json").write_text(json.dumps({"pairs": {"em": "control"}}))
    settings = SimpleNamespace(top_k=2, n_boot=100, n_perm=100)
    analysis = project_module.analyse_projections(table, {"em": "control"}, settings, seed=0)
    pair = analysis.pairs[("em", "control")]
    assert pair.final_step == 5 and set(pair.top_shifts["trait"]) == {"a", "b", "c"}
    assert list(pair.decomposition["step"]) == [0, 5] and analysis.axis is None  # no Assistant Axis here
    # One seed per condition: estimates, no test (the seed-to-seed spread is unknown).
    assert not pair.testable and pair.top_shifts["p_value"].isna().all() and "no effect" in pair.shift_sentence()
    assert set(pair.precision["seed"]) == {0} and "precision only" in pair.precision_sentence()
    project_module.write_analysis(analysis, folder)
    figures = project_module.save_projection_figures(analysis, folder / "figures", top_k=2)
    assert set(figures) == {"differential_heatmap__em", "top_shifts__em", "pca_trajectory", "decomposition__em"}

    outputs = project_module.load_outputs(tmp_path / "run")
    pd.testing.assert_frame_equal(outputs.projections, table)
    assert outputs.pairs == {"em": "control"}
    pd.testing.assert_frame_equal(outputs.top_shifts[("em", "control")], pair.top_shifts, check_dtype=False)
    pd.testing.assert_frame_equal(outputs.decomposition[("em", "control")], pair.decomposition, check_dtype=False)
    assert set(outputs.mean_activations) == {("em", 0, 0), ("em", 0, 5), ("control", 0, 0), ("control", 0, 5)}
    pd.testing.assert_frame_equal(outputs.precision[("em", "control")], pair.precision, check_dtype=False)
    pd.testing.assert_frame_equal(outputs.pca_test[("em", "control")], pair.pca_test, check_dtype=False)
    assert "not testable" in pair.pca_sentence()
    assert outputs.seeds == [0]
    assert sorted(path.stem for path in outputs.figures) == sorted(figures)
    with pytest.raises(FileNotFoundError, match="notebook 03"):
        project_module.load_outputs(tmp_path / "empty")


def test_checkpoint_parts_measure_once_and_key_the_table_by_condition_seed_and_step(tmp_path):
    parts = CheckpointParts(tmp_path / "parts")
    checkpoint = Checkpoint("em", 3, None, seed=1)
    calls = []

    def measure():
        calls.append(1)
        return pd.DataFrame({"value": [0.5, 0.25]})

    first = parts.measured(checkpoint, "f1", measure)
    again = parts.measured(checkpoint, "f1", measure)
    assert len(calls) == 1 and list(first.columns) == ["condition", "seed", "step", "value"]
    pd.testing.assert_frame_equal(first, again)
    assert set(first["condition"]) == {"em"} and set(first["seed"]) == {1} and set(first["step"]) == {3}
    parts.measured(checkpoint, "f2", measure)  # other settings: measured again
    assert len(calls) == 2
