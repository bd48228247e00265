"""Tests for traitspace.core.trajectory on synthetic projection tables with planted shifts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from traitspace.core import trajectory

EM = "insecure_code"
CONTROL = "secure_code"
STEPS = (0, 100, 200, 300)
TRAITS = ("evil", "helpful", *(f"null_{i:02d}" for i in range(10)))


def synthetic_projections(planted: dict[str, float], n_prompts: int = 30, noise: float = 0.3,
                          seed: int = 0) -> pd.DataFrame:
    """Tidy projection table where only ``planted`` traits of the EM run move.

    Each prompt has its own large base projection per trait (shared by both runs and all
    steps, as the same prompts are reused); step 0 is the same base model for both runs; every
    later checkpoint adds independent noise; planted traits of the EM run gain
    shift * step / last_step.
    """
    rng = np.random.default_rng(seed)
    prompts = [f"prompt_{i:03d}" for i in range(n_prompts)]
    prompt_base = rng.normal(0.0, 3.0, size=(n_prompts, len(TRAITS)))
    planted_vector = np.array([planted.get(trait, 0.0) for trait in TRAITS])
    rows = []
    for condition in (EM, CONTROL):
        for step in STEPS:
            values = prompt_base.copy()
            if step > 0:
                values = values + rng.normal(0.0, noise, size=values.shape)
                if condition == EM:
                    values = values + planted_vector * step / STEPS[-1]
            for p, prompt in enumerate(prompts):
                for t, trait in enumerate(TRAITS):
                    rows.append((condition, step, trait, prompt, values[p, t]))
    return pd.DataFrame(rows, columns=list(trajectory.PROJECTION_COLUMNS))


def test_mean_projection_table_averages_over_prompts():
    df = pd.DataFrame({
        "condition": [EM] * 3, "step": [0, 0, 0], "trait": ["evil"] * 3,
        "prompt": ["a", "b", "c"], "value": [1.0, 2.0, 6.0],
    })
    table = trajectory.mean_projection_table(df)
    assert len(table) == 1
    assert table.loc[0, "value"] == pytest.approx(3.0)
    assert table.loc[0, "n_prompts"] == 3
    with pytest.raises(KeyError, match="prompt"):
        trajectory.mean_projection_table(df.drop(columns="prompt"))


def test_drift_subtracts_step_zero_and_per_prompt_agrees_with_mean():
    df = synthetic_projections({"evil": 0.8})
    mean_drift = trajectory.drift(df)
    assert set(mean_drift.columns) == {"condition", "step", "trait", "drift"}
    assert np.all(mean_drift.loc[mean_drift["step"] == 0, "drift"] == 0.0)
    per_prompt = trajectory.drift(df, per_prompt=True)
    assert "prompt" in per_prompt.columns
    averaged = per_prompt.groupby(["condition", "step", "trait"])["drift"].mean().reset_index()
    merged = mean_drift.merge(averaged, on=["condition", "step", "trait"])
    np.testing.assert_allclose(merged["drift_x"], merged["drift_y"], atol=1e-12)
    # Planted trait: EM mean drift at the last step is near +0.8, control near 0.
    final = mean_drift[(mean_drift["step"] == 300) & (mean_drift["trait"] == "evil")]
    by_condition = final.set_index("condition")["drift"]
    assert by_condition[EM] == pytest.approx(0.8, abs=0.3)
    assert by_condition[CONTROL] == pytest.approx(0.0, abs=0.3)


def test_drift_without_step_zero_names_the_condition():
    df = synthetic_projections({})
    broken = df[~((df["condition"] == CONTROL) & (df["step"] == 0))]
    with pytest.raises(KeyError, match=CONTROL):
        trajectory.drift(broken)


def test_norm_rescaled_drift_is_percentage_of_base_norm():
    assert trajectory.norm_rescaled_drift(2.0, 50.0) == pytest.approx(4.0)
    np.testing.assert_allclose(trajectory.norm_rescaled_drift(np.array([1.0, -3.0]), 10.0),
                               [10.0, -30.0])
    with pytest.raises(ValueError):
        trajectory.norm_rescaled_drift(1.0, 0.0)


def test_differential_subtracts_control_drift():
    drift_df = pd.DataFrame({
        "condition": [EM, EM, CONTROL, CONTROL],
        "step": [0, 100, 0, 100],
        "trait": ["evil"] * 4,
        "drift": [0.0, 0.9, 0.0, 0.2],
    })
    diff = trajectory.differential(drift_df, EM, CONTROL)
    assert list(diff["differential"]) == pytest.approx([0.0, 0.7])
    with pytest.raises(KeyError, match="no_such_run"):
        trajectory.differential(drift_df, "no_such_run", CONTROL)


def test_top_shifts_finds_planted_trait():
    df = synthetic_projections({"evil": 0.8}, seed=11)
    table = trajectory.top_shifts(df, EM, CONTROL, k=3, n_boot=400, n_perm=1000, seed=0)
    assert len(table) == len(TRAITS)
    top = table.iloc[0]
    assert top["trait"] == "evil"
    assert top["step"] == 300
    assert top["rank"] == 1 and top["top_k"] and top["direction"] == "increase"
    assert top["significant"] and top["q_value"] < 0.05
    assert top["ci_low"] <= 0.8 <= top["ci_high"]
    null_rows = table[table["trait"] != "evil"]
    assert null_rows["significant"].sum() <= 1
    assert table["top_k"].sum() == 3
    assert list(table["rank"]) == list(range(1, len(TRAITS) + 1))
    # Sorted by absolute differential.
    assert np.all(np.diff(table["differential"].abs().to_numpy()) <= 0)


def test_top_shifts_warns_when_permutations_cannot_reach_bh_level():
    df = synthetic_projections({"evil": 0.8}, seed=11)
    with pytest.warns(UserWarning, match="n_perm"):
        table = trajectory.top_shifts(df, EM, CONTROL, n_boot=100, n_perm=100)
    assert not table["significant"].any()  # the floor 2/101 is above 0.05/12


def test_top_shifts_reports_decrease_and_earlier_step():
    df = synthetic_projections({"helpful": -1.2}, seed=12)
    table = trajectory.top_shifts(df, EM, CONTROL, step=200, n_boot=300, n_perm=1000)
    top = table.iloc[0]
    assert top["trait"] == "helpful" and top["direction"] == "decrease" and top["step"] == 200
    assert top["ci_low"] <= -0.8 <= top["ci_high"]  # planted -1.2 * 200/300


def test_top_shifts_with_no_effect_finds_nothing():
    df = synthetic_projections({}, seed=13)
    table = trajectory.top_shifts(df, EM, CONTROL, n_boot=200, n_perm=1000)
    assert table["significant"].sum() <= 1


def test_decompose_shared_only_shift():
    rng = np.random.default_rng(4)
    n_steps, n_traits = 5, 20
    shared_direction = rng.normal(size=n_traits)
    growth = np.linspace(0.0, 1.0, n_steps)[:, None]
    drift_control = growth * shared_direction
    drift_em = drift_control + growth * rng.normal(0.0, 0.05, size=(n_steps, n_traits))
    table = trajectory.decompose(drift_em, drift_control)
    assert list(table["step"]) == list(range(n_steps))
    assert math.isnan(table.loc[0, "cosine"])
    assert math.isnan(table.loc[0, "specific_to_shared"])
    later = table.iloc[1:]
    assert np.all(later["cosine"] > 0.99)
    assert np.all(later["specific_to_shared"] < 0.1)
    assert np.all(later["shared_to_specific"] > 10)


def test_decompose_em_only_shift_is_specific():
    n_steps, n_traits = 4, 10
    drift_em = np.zeros((n_steps, n_traits))
    drift_em[:, 0] = [0.0, 0.3, 0.6, 0.9]
    drift_control = np.zeros((n_steps, n_traits))
    drift_control[1:, 1] = 0.01  # tiny unrelated wobble in the control
    table = trajectory.decompose(drift_em, drift_control, steps=[0, 10, 20, 30])
    assert list(table["step"]) == [0, 10, 20, 30]
    final = table.iloc[-1]
    # shared = specific in norm when control ~ 0: both (em)/2.
    assert final["specific_norm"] == pytest.approx(0.45, abs=0.01)
    assert final["specific_to_shared"] == pytest.approx(1.0, abs=0.05)
    assert abs(final["cosine"]) < 0.05
    # Opposite movement: all specific, no shared.
    opposite = trajectory.decompose(drift_em, -drift_em)
    assert opposite.loc[3, "shared_norm"] == 0.0
    assert math.isinf(opposite.loc[3, "specific_to_shared"])
    assert opposite.loc[3, "cosine"] == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        trajectory.decompose(drift_em, drift_control[:, :3])


def test_trajectory_pca_dominant_direction():
    rng = np.random.default_rng(7)
    n_traits = 15
    direction = rng.normal(size=n_traits)
    rows = []
    for condition, speed in ((EM, 1.0), (CONTROL, 0.4)):
        for step in STEPS:
            values = speed * step / 100 * direction + rng.normal(0.0, 0.05, size=n_traits)
            for t, value in enumerate(values):
                rows.append((condition, step, f"trait_{t:02d}", value))
    mean_table = pd.DataFrame(rows, columns=["condition", "step", "trait", "value"])
    result = trajectory.trajectory_pca(mean_table, n_components=3)
    assert result.explained_variance_ratio.shape == (3,)
    assert result.explained_variance_ratio[0] > 0.9
    assert list(result.coordinates.columns) == ["condition", "step", "pc1", "pc2", "pc3"]
    assert len(result.coordinates) == 2 * len(STEPS)
    loading = result.components["pc1"].to_numpy()
    cosine = abs(loading @ direction) / np.linalg.norm(direction)
    assert cosine > 0.99
    # Order along PC1 follows training progress within the EM run.
    em_coords = result.coordinates[result.coordinates["condition"] == EM].sort_values("step")
    pc1 = em_coords["pc1"].to_numpy() * np.sign(loading @ direction)
    assert np.all(np.diff(pc1) > 0)


def test_fingerprint_split_is_deterministic_disjoint_and_complete():
    prompts = [f"p{i}" for i in range(11)]
    selection, measurement = trajectory.fingerprint_split(prompts, seed=3)
    assert (selection, measurement) == trajectory.fingerprint_split(prompts[::-1], seed=3)
    assert len(selection) == 6 and len(measurement) == 5
    assert set(selection).isdisjoint(measurement)
    assert set(selection) | set(measurement) == set(prompts)
    assert trajectory.fingerprint_split(prompts, seed=4) != (selection, measurement)


def test_fingerprint_selects_planted_traits_and_scores_on_held_out_half():
    df = synthetic_projections({"evil": 0.8, "helpful": -0.6}, n_prompts=40, seed=21)
    selection, measurement = trajectory.fingerprint_split(df["prompt"].unique(), seed=0)
    key = trajectory.select_key_traits(df[df["prompt"].isin(selection)], EM, CONTROL, k=2)
    assert list(key.columns) == ["trait", "differential", "sign"]
    assert dict(zip(key["trait"], key["sign"])) == {"evil": 1, "helpful": -1}
    score = trajectory.fingerprint_score(df[df["prompt"].isin(measurement)], EM, CONTROL,
                                         key["trait"], key["sign"])
    assert list(score.index) == list(STEPS)
    assert score[0] == 0.0
    assert score[300] == pytest.approx(0.7, abs=0.2)  # mean of 0.8 and 0.6
    assert score[100] < score[300]
    with pytest.raises(ValueError):
        trajectory.fingerprint_score(df, EM, CONTROL, ["evil"], [1, -1])
    with pytest.raises(KeyError, match="no_such_trait"):
        trajectory.fingerprint_score(df, EM, CONTROL, ["no_such_trait"], [1])
