"""Fingerprint timing, behaviour crossing and monitor evaluation on synthetic runs with known answers."""

import numpy as np
import pandas as pd
import pytest

from traitspace.findings import (
    behaviour_crossing,
    danger_scale,
    evaluate_monitors,
    fingerprint_timing,
    lead_time_sentence,
    monitor_feature_sets,
    monitor_rows,
    RunTables,
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
