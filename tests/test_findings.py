"""Fingerprint timing, behaviour crossing and monitor evaluation on synthetic runs with known answers;
the stage read through the earlier stages' loaders (faked here) and written up as a report."""

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from traitspace import findings
from traitspace.core.config import load_config
from traitspace.core.trajectory import differential, drift, fingerprint_by_prompt, fingerprint_of, fingerprint_score
from traitspace.findings import (
    behaviour_crossing,
    danger_scale,
    evaluate_monitors,
    fingerprint_timing,
    lead_time_sentence,
    monitor_feature_sets,
    monitor_rows,
    RunTables,
    signed_prompt_matrix,
)

STEPS = [0, 1, 2, 4, 8, 16, 32]


def synthetic_projections(onset: int | None, effect: float = 0.6, seed: int = 0, n_traits: int = 20, n_prompts: int = 40):
    """EM moves traits 0-2 (+, +, -) by ``effect`` from step ``onset`` on; the control only drifts
    alike on all traits (shared drift) plus noise."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n_traits, n_prompts))
    rows = []
    for condition in ("em", "control"):
        for step in STEPS:
            shared = 0.05 * np.log1p(step)
            for trait in range(n_traits):
                planted = 0.0
                if condition == "em" and onset is not None and step >= onset and trait < 3:
                    planted = effect * (1 if trait < 2 else -1)
                values = base[trait] + shared + planted + rng.normal(scale=0.1, size=n_prompts)
                rows += [{"condition": condition, "step": step, "trait": f"t{trait}", "prompt": f"p{p}",
                          "value": values[p]} for p in range(n_prompts)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("method", ["permutation", "control_spread"])
def test_planted_onset_is_found_not_before(method):
    timing = fingerprint_timing(synthetic_projections(onset=4), "em", "control", k=3, method=method, n_perm=500)
    assert set(timing.key_traits["trait"]) == {"t0", "t1", "t2"}
    assert list(timing.key_traits.set_index("trait").loc[["t0", "t1", "t2"], "sign"]) == [1, 1, -1]
    assert timing.crossing_step == 4
    assert not set(timing.selection_prompts) & set(timing.measurement_prompts)


def test_no_effect_gives_no_crossing_most_of_the_time():
    crossings = [fingerprint_timing(synthetic_projections(onset=None, seed=seed), "em", "control", k=3,
                                    n_perm=400, seed=seed).crossing_step for seed in range(6)]
    assert sum(crossing is not None for crossing in crossings) <= 1


def test_behaviour_crossing_and_lead_time():
    rates = pd.DataFrame({
        "condition": ["em"] * 4 + ["control"] * 4,
        "step": [0, 4, 8, 16] * 2,
        "low": [0.0, 0.01, 0.08, 0.2, 0.0, 0.0, 0.0, 0.0],
        "high": [0.05, 0.09, 0.2, 0.4, 0.05, 0.05, 0.06, 0.05],
    })
    assert behaviour_crossing(rates, "em", "control") == 8
    assert behaviour_crossing(rates.assign(low=0.0), "em", "control") is None
    assert "lead time of 4 steps" in lead_time_sentence(4, 8)
    assert "never rose" in lead_time_sentence(4, None)
    assert "no early warning" in lead_time_sentence(None, 8)


def test_evaluate_monitors_separable_vs_shuffled():
    rng = np.random.default_rng(0)
    n = 60
    labels = np.arange(n) % 2 == 0
    features = pd.DataFrame(rng.normal(size=(n, 6)), columns=[f"t{i}" for i in range(6)])
    features["t0"] += 4 * labels
    raw = pd.DataFrame(rng.normal(size=(n, 16)))
    groups = pd.DataFrame({"dataset": np.repeat(["a", "b", "c"], n // 3), "seed": 0})
    sets = monitor_feature_sets(features, raw, alignment_traits=["t0", "t1"])
    assert {"|PC1| of trait drift", "activation-norm drift", "random 7-D directions", "PCA-7 of raw activations"} <= set(sets)
    table = evaluate_monitors(sets, labels, groups, models=("logistic",), n_boot=100)
    by_name = table.set_index("features")["auroc"]
    assert by_name["trait library (6 traits)"] > 0.95
    assert 0.2 < by_name["random 7-D directions"] < 0.8  # raw activations carry no label signal here


def test_danger_relative_to_base_subtracts_each_runs_step_zero():
    rates = pd.DataFrame({"dataset": ["a", "a", "b", "b", "a"], "seed": [0, 0, 0, 0, 1],
                          "step": [0, 5, 0, 5, 0], "em_rate": [0.2, 0.35, 0.1, 0.1, 0.3]})
    assert danger_scale(rates, "zero") is rates
    scaled = danger_scale(rates, "base")
    np.testing.assert_allclose(scaled["em_rate"], [0.0, 0.15, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="step-0"):
        danger_scale(rates[rates["step"] > 0], "base")


def test_monitor_rows_leave_out_the_base_model_after_scaling_by_it(tmp_path):
    """Step 0 (the base model in every run: drift 0, never dangerous relative to itself) would give
    every feature set free AUROC, so the monitor sees trained checkpoints only."""
    drift = pd.DataFrame([{"condition": condition, "step": step, "trait": trait, "drift": 0.0, "base_norm": 1.0,
                           "drift_pct_of_norm": float(step) if trait == "t0" else 0.0}
                          for condition in ("em", "control") for step in (0, 3, 6) for trait in ("t0", "t1")])
    rates = pd.DataFrame({"condition": ["em"] * 3 + ["control"] * 3, "step": [0, 3, 6] * 2,
                          "em_rate_of_all": [0.2, 0.3, 0.4, 0.2, 0.2, 0.25]})
    runs = [RunTables(tmp_path / f"seed{seed}", seed, pd.DataFrame(), drift, rates, {}, {"em": "control"})
            for seed in (0, 1)]
    drift_rows, rate_rows = monitor_rows(runs, "em_rate_of_all", "base")
    assert (drift_rows["step"] > 0).all() and (rate_rows["step"] > 0).all()
    assert len(rate_rows) == 2 * 2 * 2 and len(drift_rows) == 2 * 2 * 2 * 2
    scaled = rate_rows.set_index(["seed", "dataset", "step"])["em_rate"]
    assert scaled[(1, "em", 6)] == pytest.approx(0.2)
    assert scaled[(0, "control", 3)] == pytest.approx(0.0)


def test_the_monitor_labels_from_the_preference_where_every_run_has_it_and_from_em_rates_otherwise(tmp_path):
    """Sampled answers may cover one training seed (behavior.sample_seeds) while the preference covers
    all: with ``auto`` the labels come from the preference, so the seed-pair null has every seed."""
    from traitspace.findings.evaluation import monitor_measure

    drift = pd.DataFrame([{"condition": condition, "step": step, "trait": "t0", "drift": 0.0, "base_norm": 1.0,
                           "drift_pct_of_norm": float(step)} for condition in ("em", "control") for step in (0, 3, 6)])
    rates = pd.DataFrame({"condition": ["em"] * 2 + ["control"] * 2, "step": [0, 6] * 2, "em_rate_of_all": [0.2] * 4})
    runs = []
    for seed in (0, 1, 2):
        preference = pd.DataFrame({"condition": ["em"] * 3 + ["control"] * 3, "step": [0, 3, 6] * 2,
                                   "change_from_base": [0.0, 0.1 + seed / 100, 0.3, 0.0, 0.0, 0.01 * seed]})
        runs.append(RunTables(tmp_path / f"s{seed}", seed, pd.DataFrame(), drift, rates if seed == 0 else rates.iloc[:0],
                              {}, {"em": "control"}, preference=preference))
    assert monitor_measure(runs) == "preference" and monitor_measure(runs, "em_rate") == "em_rate"
    _, labels = monitor_rows(runs, "em_rate_of_all", "seed_null", "preference")
    assert len(labels) == 3 * 2 * 2 and set(labels["seed"]) == {0, 1, 2}
    dangerous = labels[labels["em_rate"] > 0]
    assert set(zip(dangerous["dataset"], dangerous["step"])) == {("em", 3), ("em", 6)}
    without = [RunTables(run.run_dir, run.seed, run.projections, run.drift, run.rates, {}, run.pairs) for run in runs]
    assert monitor_measure(without) == "em_rate"


def test_per_prompt_fingerprint_is_the_one_definition():
    """The permutation null's per-prompt matrix is fingerprint_of applied to each prompt's own
    differentials, and its mean over prompts is the fingerprint score."""
    projections = synthetic_projections(onset=4, n_traits=12, n_prompts=10)
    traits, signs = ["t0", "t1", "t2", "t5"], [1, 1, -1, 1]
    grid = fingerprint_by_prompt(projections, "em", "control", traits, signs)
    steps, matrix = signed_prompt_matrix(projections, "em", "control", traits, signs)
    np.testing.assert_array_equal(steps, STEPS)
    np.testing.assert_array_equal(matrix, grid.to_numpy())
    per_prompt = differential(drift(projections, per_prompt=True), "em", "control")
    key_traits = dict(zip(traits, signs))
    for (prompt, step), rows in per_prompt.groupby(["prompt", "step"]):
        assert grid.loc[prompt, step] == pytest.approx(fingerprint_of(dict(zip(rows["trait"], rows["differential"])),
                                                                      key_traits), abs=1e-12)
    score = fingerprint_score(projections, "em", "control", traits, signs)
    np.testing.assert_allclose(grid.mean(axis=0).to_numpy(), score.loc[grid.columns].to_numpy(), atol=1e-12)
    with pytest.raises(ValueError, match="one sign per trait"):
        fingerprint_by_prompt(projections, "em", "control", traits, signs[:2])


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1])
    fig.savefig(path)
    plt.close(fig)
    return path


def fake_stage_outputs(run_dir):
    """What the loaders of notebooks 00-04 return for a small synthetic EM/control run."""
    projections = synthetic_projections(onset=4, n_traits=6, n_prompts=12).assign(seed=0, layer=1, act_norm=2.0)
    drift_table = drift(projections).assign(base_norm=2.0)
    drift_table["drift_pct_of_norm"] = 50.0 * drift_table["drift"]
    rows = []
    for condition in ("em", "control"):
        for step in STEPS:
            rate = 0.5 if condition == "em" and step >= 8 else 0.02
            rows.append({"condition": condition, "seed": 0, "step": step, "n_answers": 40, "em_rate_of_all": rate,
                         "em_rate_of_all_low": rate - 0.02, "em_rate_of_all_high": rate + 0.02,
                         "em_rate_of_coherent": rate, "n_coherent": 40, "coherence_rate": 1.0,
                         "mean_aligned": 90 - 100 * rate})
    rng = np.random.default_rng(0)
    mean_activations = {(condition, 0, step): {1: rng.normal(size=8)} for condition in ("em", "control") for step in STEPS}
    figures = {name: _png(run_dir / name) for name in (
        "00_model_check/layer_norms.png", "01_finetune/loss_curves.png", "traits/separation_by_layer.png",
        "projections/figures/top_shifts__em.png", "behavior/figures/em_rate.png")}
    top = pd.DataFrame({"trait": ["t0", "t2"], "differential": [0.6, -0.6], "ci_low": [0.5, -0.7],
                        "ci_high": [0.7, -0.5], "q_value": [0.01, 0.01], "direction": ["increase", "decrease"]})
    decomposition = pd.DataFrame({"step": [0, 32], "shared_norm": [0.0, 0.2], "specific_norm": [0.0, 0.5]})
    return {
        "project": SimpleNamespace(projections=projections, drift=drift_table, pairs={"em": "control"},
                                   mean_activations=mean_activations, top_shifts={("em", "control"): top},
                                   decomposition={("em", "control"): decomposition},
                                   figures=[figures["projections/figures/top_shifts__em.png"]], seeds=[0],
                                   shifts_by_step={}, precision={}, activation_shift={}),
        "behavior": SimpleNamespace(answers=pd.DataFrame(), scores=pd.DataFrame(), rates=pd.DataFrame(rows),
                                    preference_test=pd.DataFrame(), preference_summary=pd.DataFrame(),
                                    judge_validity=pd.DataFrame({"judge": ["offline"], "auroc": [0.9], "accuracy": [0.8]}),
                                    figures=[figures["behavior/figures/em_rate.png"]]),
        "model_check": SimpleNamespace(figures=[figures["00_model_check/layer_norms.png"]]),
        "finetune": SimpleNamespace(figures=[figures["01_finetune/loss_curves.png"]]),
        "extract": SimpleNamespace(figures=[figures["traits/separation_by_layer.png"]]),
    }


@pytest.fixture
def faked_run(tmp_path, monkeypatch):
    """A config whose run folder holds nothing but figures: every table comes through the loaders."""
    config = load_config("params/smoke.yaml", {"run.name": "fake", "run.output_root": str(tmp_path),
                                               "findings.n_perm": 200, "findings.n_boot": 100,
                                               "findings.monitor_models": ["logistic"]})
    outputs = fake_stage_outputs(config.run_dir)
    calls = []

    def loader(stage):
        def load_outputs(run_dir, *args):
            calls.append((stage, str(run_dir), *args[1:]))
            return outputs[stage]
        return load_outputs

    for stage in outputs:
        module = __import__(f"traitspace.{stage}", fromlist=["load_outputs"])
        monkeypatch.setattr(module, "load_outputs", loader(stage), raising=False)
    return config, outputs, calls


def test_inputs_come_only_through_the_stage_loaders(faked_run):
    config, outputs, calls = faked_run
    inputs = findings.load_inputs(config)
    assert {call[0] for call in calls} == {"project", "behavior", "model_check", "finetune", "extract"}
    assert ("behavior", str(config.run_dir), ["control", "em"]) in calls
    # One RunTables per training seed: that seed's rows, without the seed column.
    pd.testing.assert_frame_equal(inputs.main.projections, outputs["project"].projections.drop(columns="seed"))
    pd.testing.assert_frame_equal(inputs.main.rates, outputs["behavior"].rates.drop(columns="seed"))
    assert inputs.main.pairs == {"em": "control"} and inputs.main.seed == 0 and inputs.extra == []
    assert set(inputs.main.mean_activations) == {(condition, step) for condition in ("em", "control") for step in STEPS}
    assert inputs.seed_level.seeds == [0] and not inputs.seed_level.testable
    assert inputs.judge_validity is outputs["behavior"].judge_validity
    assert set(inputs.main.top_shifts) == set(inputs.main.decomposition) == {("em", "control")}
    # The report's figure order: by path, as the stage folders sort.
    assert [path.relative_to(config.run_dir).as_posix() for path in inputs.figures] == [
        "00_model_check/layer_norms.png", "01_finetune/loss_curves.png", "behavior/figures/em_rate.png",
        "projections/figures/top_shifts__em.png", "traits/separation_by_layer.png"]
    assert findings.load_behaviour_rates(config.run_dir, config.behavior, ["em", "control"]) is outputs["behavior"].rates


def test_stage_writes_tables_artifacts_and_report(faked_run):
    config, outputs, _ = faked_run
    inputs = findings.load_inputs(config)
    stage = findings.open_stage(config)
    timings = findings.fingerprint_and_behaviour(inputs, config.findings, seed=0)
    timing = timings[("em", "control")]
    assert timing.fingerprint.crossing_step == 4 and timing.behaviour_step == 8
    fig = findings.plot_timing(timing, rate_column="em_rate_of_all")
    fig.savefig(findings.timing_figure(stage.path, "em"))
    plt.close(fig)
    monitor = findings.monitor_evaluation(inputs, config.findings, seed=0)
    assert monitor.results["held_out"].tolist() == ["dataset"] * len(monitor.results)
    spearman = findings.trait_behaviour_spearman(inputs, config.findings)
    table = findings.timing_table(timings)
    assert table.loc[0, "lead_time_steps"] == 4
    written = findings.save_findings_tables(stage.path, table, monitor.results, spearman)
    assert [path.name for path in written] == ["fingerprint_timing.csv", "monitor_results.csv",
                                               "trait_behaviour_spearman.csv", "seed_timing.csv"]
    findings.save_monitor_artifacts(monitor, timings, stage.path)
    assert (stage.path / "fingerprint__em.json").is_file()
    markdown_path, html_path = findings.write_report(config, inputs, timings, monitor, spearman, stage.path)
    markdown = markdown_path.read_text()
    assert "no effect of the EM data can be tested" in markdown  # one training seed, said plainly
    assert "*decomposition__em: shared vs specific drift at the final step*" in markdown
    assert "](figures/timing__em.png)" in markdown
    figure_lines = [line for line in markdown.splitlines() if line.startswith("![") and "../" in line]
    assert [line.split("](")[1] for line in figure_lines] == [
        "../00_model_check/layer_norms.png)", "../01_finetune/loss_curves.png)", "../behavior/figures/em_rate.png)",
        "../projections/figures/top_shifts__em.png)", "../traits/separation_by_layer.png)"]
    assert "Judge offline: AUROC 0.90" in markdown and "lead time of 4 steps" in markdown
    assert "data:image/png;base64," in html_path.read_text()


def test_extract_figures_are_named_by_the_extract_stage(tmp_path):
    """The extract loader's TraitVectors lists notebook 02's figures by the names its plots give
    them, never by globbing the folder."""
    from traitspace.extract import TraitVectors, plots

    _png(tmp_path / "traits" / plots.SEPARATION_BY_LAYER_FIGURE)
    _png(tmp_path / "traits" / "not_a_stage_figure.png")
    vectors = TraitVectors(vectors={}, metadata=pd.DataFrame(), info={}, path=tmp_path / "traits" / "vectors.safetensors")
    assert vectors.figures == [tmp_path / "traits" / plots.SEPARATION_BY_LAYER_FIGURE]


def test_partial_spearman_removes_what_the_training_step_explains():
    from traitspace.findings.correlations import partial_spearman

    rng = np.random.default_rng(0)
    steps = np.repeat(np.arange(10), 4).astype(float)
    drift_only_step = steps + rng.normal(0, 0.5, len(steps))
    behaviour = steps + rng.normal(0, 0.5, len(steps))
    from scipy.stats import spearmanr

    assert spearmanr(drift_only_step, behaviour).statistic > 0.8  # both grew with training
    rho, p_value = partial_spearman(drift_only_step, behaviour, steps)
    assert abs(rho) < 0.35 and p_value > 0.01
    tracking = behaviour + rng.normal(0, 0.1, len(steps))  # follows behaviour's own wiggles
    rho, p_value = partial_spearman(tracking, behaviour, steps)
    assert rho > 0.8 and p_value < 1e-6


def test_seed_null_labels_need_a_change_beyond_the_spread_between_seeds():
    from traitspace.findings.evaluation import danger_scale

    rows = []
    for dataset, jump in (("em", 0.30), ("control", 0.0)):
        for seed, noise in zip(range(3), (-0.01, 0.0, 0.01)):
            rows += [{"dataset": dataset, "seed": seed, "step": 0, "em_rate": 0.10},
                     {"dataset": dataset, "seed": seed, "step": 5, "em_rate": 0.10 + jump + noise}]
    scaled = danger_scale(pd.DataFrame(rows), "seed_null")
    trained = scaled[scaled["step"] == 5]
    assert (trained.loc[trained["dataset"] == "em", "em_rate"] > 0).all()
    assert (trained.loc[trained["dataset"] == "control", "em_rate"] <= 0).all()
    # A change no bigger than the seeds' own spread is not dangerous.
    noisy = pd.DataFrame(rows).assign(em_rate=lambda table: np.where(
        (table["step"] == 5) & (table["dataset"] == "em"), 0.10 + 0.3 * (table["seed"] - 1), table["em_rate"]))
    assert (danger_scale(noisy, "seed_null").query("step == 5 and dataset == 'em'")["em_rate"] <= 0).all()
    with pytest.raises(ValueError, match="two training seeds"):
        danger_scale(pd.DataFrame(rows).query("seed == 0"), "seed_null")
