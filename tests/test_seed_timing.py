"""Matched lead-time tests across training seeds: no lead is reported where traits and behaviour
change together, and an early trait change is seen as one."""

import numpy as np
import pandas as pd

from traitspace.core.checkpoints import checkpoint_schedule
from traitspace.findings.seed_timing import seed_level_timing

STEPS = [0, *checkpoint_schedule(24, 15)]  # the real, log-spaced step grid of a 24-step run
TRAITS = [f"t{index}" for index in range(12)]


def synthetic_runs(trait_onset: int, behaviour_onset: int, seeds=range(4), effect=3.0, noise=0.2, rng_seed=0):
    """Per-run mean drift and behaviour: EM runs jump by ``effect`` on traits t0-t2 from
    ``trait_onset`` on and in behaviour from ``behaviour_onset`` on; every run has its own noise."""
    rng = np.random.default_rng(rng_seed)
    drift_rows, behaviour_rows = [], []
    for condition in ("em", "control"):
        for seed in seeds:
            for step in STEPS:
                for index, trait in enumerate(TRAITS):
                    planted = effect if condition == "em" and index < 3 and step >= trait_onset and step > 0 else 0.0
                    value = 0.0 if step == 0 else planted + rng.normal(0, noise)
                    drift_rows.append((condition, seed, step, trait, value))
                planted = effect if condition == "em" and step >= behaviour_onset and step > 0 else 0.0
                behaviour_rows.append((condition, seed, step, 0.0 if step == 0 else planted + rng.normal(0, noise)))
    drift = pd.DataFrame(drift_rows, columns=["condition", "seed", "step", "trait", "drift"])
    behaviour = pd.DataFrame(behaviour_rows, columns=["condition", "seed", "step", "value"])
    return drift, behaviour


def test_traits_and_behaviour_changing_at_the_same_step_report_no_lead():
    onset = STEPS[8]
    for rng_seed in range(3):
        drift, behaviour = synthetic_runs(onset, onset, rng_seed=rng_seed)
        timing = seed_level_timing(drift, behaviour, "em", "control", k=3)
        assert timing.testable and set(timing.per_seed["verdict"]) == {"same step"}
        assert (timing.per_seed["lead_steps"] == 0).all()
        assert (timing.per_seed["fingerprint_step"] == onset).all()
        assert "traits first: " not in timing.sentence


def test_an_early_trait_change_is_a_lead_and_a_late_one_is_behaviour_first():
    drift, behaviour = synthetic_runs(STEPS[4], STEPS[10])
    timing = seed_level_timing(drift, behaviour, "em", "control", k=3)
    assert set(timing.per_seed["verdict"]) == {"traits first"}
    assert (timing.per_seed["lead_steps"] == STEPS[10] - STEPS[4]).all()
    assert set(timing.per_seed["key_traits"].str.split(", ").map(frozenset)) == {frozenset({"t0", "t1", "t2"})}
    drift, behaviour = synthetic_runs(STEPS[10], STEPS[4])
    late = seed_level_timing(drift, behaviour, "em", "control", k=3)
    assert set(late.per_seed["verdict"]) == {"behaviour first"} and "behaviour first: 4" in late.sentence


def test_no_effect_gives_no_crossing_and_too_few_seeds_give_no_test():
    drift, behaviour = synthetic_runs(10**6, 10**6, rng_seed=5)
    timing = seed_level_timing(drift, behaviour, "em", "control", k=3)
    assert timing.per_seed["fingerprint_step"].isna().sum() >= 3  # family-wise over steps: rare false crossings
    assert timing.per_seed["behaviour_step"].isna().sum() >= 3
    drift, behaviour = synthetic_runs(STEPS[4], STEPS[4], seeds=range(2))
    two = seed_level_timing(drift, behaviour, "em", "control", k=3)
    assert not two.testable and "no lead time can be tested" in two.sentence


def test_behaviour_measured_at_one_trained_step_gives_no_order():
    drift, behaviour = synthetic_runs(STEPS[4], STEPS[4])
    final_only = behaviour[behaviour["step"].isin([0, STEPS[-1]])]
    timing = seed_level_timing(drift, final_only, "em", "control", k=3)
    assert not timing.testable and "at least two" in timing.sentence
