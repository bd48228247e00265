"""Seed-level inference: planted effects are found only where the EM data puts them.

Synthetic projection tables stand in for runs: every (condition, seed) is one run with its own
random run-level offsets (what two seeds of the same data really look like) plus prompt noise.
"""

import numpy as np
import pandas as pd
import pytest

from traitspace.core import trajectory
from traitspace.core.seed_tests import (
    activation_shift,
    seed_differential_test,
    seed_level_shifts,
    seed_pair_differences,
)
from traitspace.project.analysis import pca_seed_test, projection_pca

TRAITS = [f"trait_{index:02d}" for index in range(40)]
STEPS = [0, 5, 10]


def synthetic_projections(seeds=(0, 1, 2), em_shift=None, shared_shift=None, run_sd=0.3, prompt_sd=0.5,
                          n_prompts=30, rng_seed=0) -> pd.DataFrame:
    """condition, seed, step, trait, prompt, value: the base model at step 0, then every run drifts
    by its own random run-level offset per trait (sd ``run_sd``) plus ``shared_shift`` (all runs) and
    ``em_shift`` (EM runs only), growing linearly with the step."""
    rng = np.random.default_rng(rng_seed)
    base = rng.normal(0, 1, size=(n_prompts, len(TRAITS)))
    prompt_noise = rng.normal(0, prompt_sd, size=(n_prompts, len(TRAITS)))
    rows = []
    for condition in ("em", "control"):
        for seed in seeds:
            offset = rng.normal(0, run_sd, size=len(TRAITS))
            planted = np.zeros(len(TRAITS))
            for shift in (shared_shift, em_shift if condition == "em" else None):
                for trait, size in (shift or {}).items():
                    planted[TRAITS.index(trait)] += size
            for step in STEPS:
                fraction = step / STEPS[-1]
                values = base + fraction * (offset + planted) + (step > 0) * 0.1 * prompt_noise * rng.normal(
                    size=prompt_noise.shape)
                for prompt in range(n_prompts):
                    for index, trait in enumerate(TRAITS):
                        rows.append((condition, seed, step, trait, prompt, values[prompt, index]))
    return pd.DataFrame(rows, columns=["condition", "seed", "step", "trait", "prompt", "value"])


def significant_traits(table: pd.DataFrame) -> set[str]:
    shifts = seed_level_shifts(trajectory.drift(table), "em", "control")
    return set(shifts.loc[shifts["significant"], "trait"])


def test_a_shift_planted_in_the_em_runs_only_is_found_at_the_seed_level():
    table = synthetic_projections(seeds=range(4), em_shift={"trait_03": 3.0, "trait_07": -3.0})
    assert significant_traits(table) == {"trait_03", "trait_07"}
    shifts = seed_level_shifts(trajectory.drift(table), "em", "control")
    row = shifts.set_index("trait").loc["trait_03"]
    assert row["ci_low"] < 3.0 < row["ci_high"] and row["n_em_seeds"] == 4 and row["step"] == 10


def test_a_shift_planted_in_every_run_is_not_an_em_effect():
    table = synthetic_projections(seeds=range(4), shared_shift={"trait_03": 3.0, "trait_07": -3.0})
    assert significant_traits(table) == set()
    # ...although both conditions drift a lot on those traits.
    drift = trajectory.drift(table)
    assert drift[(drift["trait"] == "trait_03") & (drift["step"] == 10)]["drift"].min() > 2


def test_run_level_offsets_between_seeds_make_no_em_effect_although_prompt_tests_see_one():
    """The failure mode the old prompt-level tests could not catch: two runs differ on every trait
    by their own seed offsets; paired prompts make those differences look certain."""
    table = synthetic_projections(seeds=range(3), run_sd=0.5, rng_seed=3)
    assert len(significant_traits(table)) <= 1  # at most a chance hit among 40 traits at FDR 0.05
    one_seed = table[table["seed"] == 0].drop(columns="seed")
    prompt_level = trajectory.top_shifts(one_seed, "em", "control", n_boot=200, n_perm=2000, seed=0)
    assert prompt_level["significant"].sum() > 20


def test_false_positive_rate_over_many_null_datasets_stays_near_alpha():
    hits = [len(significant_traits(synthetic_projections(seeds=range(3), rng_seed=seed, n_prompts=4)))
            for seed in range(20)]
    # BH at q = 0.05 over 40 null traits: most datasets have no discovery at all.
    assert sum(count > 0 for count in hits) <= 4


def test_one_seed_gives_no_test():
    table = synthetic_projections(seeds=[0], em_shift={"trait_03": 3.0})
    shifts = seed_level_shifts(trajectory.drift(table), "em", "control")
    assert shifts["p_value"].isna().all() and not shifts["significant"].any()
    assert shifts.iloc[0]["trait"] == "trait_03"  # the estimate is still there, untested


def test_the_interval_is_the_pooled_two_sample_t_interval():
    em = np.array([[1.0], [2.0], [3.0]])
    control = np.array([[0.0], [0.5], [1.0]])
    tested = seed_differential_test(em, control)
    pooled = (2.0 + 0.5) / 4  # sums of squares 2.0 and 0.5 over 3 + 3 - 2 degrees of freedom
    from scipy import stats

    half = stats.t.ppf(0.975, 4) * np.sqrt(pooled * (2 / 3))
    assert tested["differential"][0] == pytest.approx(1.5)
    assert tested["ci_high"][0] - tested["differential"][0] == pytest.approx(half)
    assert tested["seed_pair_sd"][0] == pytest.approx(np.sqrt(2 * pooled))
    # The seed-pair null's draws: mean squared same-condition difference = 2 x that condition's variance.
    pairs = seed_pair_differences(pd.DataFrame(em, index=[0, 1, 2], columns=["x"]))
    assert (pairs["difference"] ** 2).mean() == pytest.approx(2 * np.var(em, ddof=1))


def test_activation_shift_along_trait_directions_is_explained_by_the_trait_basis():
    rng = np.random.default_rng(0)
    hidden = 32
    basis = {f"t{index}": vector / np.linalg.norm(vector) for index, vector in enumerate(rng.normal(size=(4, hidden)))}
    planted = 2.0 * basis["t1"] - 1.0 * basis["t3"]
    means = {}
    for seed in range(3):
        for condition in ("em", "control"):
            noise = rng.normal(0, 0.01, hidden)
            means[(condition, seed, 10)] = {6: noise + (planted if condition == "em" else 0)}
    shift = activation_shift(means, "em", "control", step=10, layer=6, basis=basis)
    assert shift.explained_share > 0.99 and shift.chance_share == pytest.approx(4 / 32)
    assert shift.coefficients["t1"] == pytest.approx(2.0, abs=0.05)
    assert shift.coefficients["t3"] == pytest.approx(-1.0, abs=0.05)
    assert shift.norm == pytest.approx(np.linalg.norm(planted), rel=0.05) and shift.seed_pair_norm < 0.1
    # A shift orthogonal to the basis is not explained by it.
    orthogonal = rng.normal(size=hidden)
    matrix = np.stack(list(basis.values()), axis=1)
    orthogonal -= matrix @ np.linalg.lstsq(matrix, orthogonal, rcond=None)[0]
    means = {(condition, 0, 10): {6: orthogonal if condition == "em" else np.zeros(hidden)} for condition in ("em", "control")}
    assert activation_shift(means, "em", "control", 10, 6, basis).explained_share < 1e-6


def _pca_test(table: pd.DataFrame) -> pd.DataFrame:
    return pca_seed_test(projection_pca(table).coordinates, "em", "control")


def test_a_pca_component_separates_em_from_control_only_when_the_em_data_moves_the_profile():
    # Planted in EM runs only: the first component carries it and beats the seed-pair null at the last step.
    planted = {trait: 3.0 for trait in TRAITS[:10]}
    em_only = _pca_test(synthetic_projections(seeds=range(4), em_shift=planted))
    final = em_only[em_only["step"] == 10].set_index("component")
    assert final.loc["pc1", "significant"] and abs(final.loc["pc1", "differential"]) > 3
    # The same shift in every run: the leading components still hold most variance (all checkpoints move
    # along it), yet no component separates EM from control.
    shared = synthetic_projections(seeds=range(4), shared_shift=planted)
    assert projection_pca(shared).explained_variance_ratio[0] > 0.5
    assert not _pca_test(shared)["significant"].any()
