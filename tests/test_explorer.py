"""The trait explorer draws what the analysis tests: per-prompt drift and the prompt-paired
EM-minus-control differential with the analysis' interval (across seeds once there are several)."""

import numpy as np
import pandas as pd
import pytest

from traitspace.core.seed_tests import seed_differential_test
from traitspace.findings.explorer import checkpoint_details, default_trait, trait_views, with_seed

STEPS = [0, 2, 4]


def projections(shift=0.06, prompt_sd=0.7, n_prompts=40, seeds=(None,), seed_sd=0.0, rng_seed=0):
    """Prompts far apart (sd ``prompt_sd``); the EM run moves every prompt by ``shift`` per step unit
    on trait "kind", the control not at all; each training seed adds its own offset after step 0."""
    rng = np.random.default_rng(rng_seed)
    prompt_level = rng.normal(0, prompt_sd, n_prompts)
    rows = []
    for seed in seeds:
        for condition in ("insecure_code", "secure_code"):
            offset = rng.normal(0, seed_sd) if seed_sd else 0.0
            for step in STEPS:
                for trait in ("kind", "calm"):
                    moved = shift * step / STEPS[-1] if (condition == "insecure_code" and trait == "kind") else 0.0
                    noise = rng.normal(0, 0.002, n_prompts)
                    for prompt in range(n_prompts):
                        row = {"condition": condition, "step": step, "trait": trait, "layer": 1, "prompt": prompt,
                               "value": prompt_level[prompt] + moved + (offset if step else 0.0) + noise[prompt]}
                        if seed is not None:
                            row["seed"] = seed
                        rows.append(row)
    return pd.DataFrame(rows)


PAIRS = {"insecure_code": "secure_code"}


def test_paired_differential_finds_the_shift_that_prompt_spread_hides():
    table = projections()
    assert "seed" not in table.columns and set(with_seed(table)["seed"]) == {0}  # no column: seed 0
    views = trait_views(table, "kind", ["insecure_code", "secure_code"], PAIRS, n_boot=500)
    final = views.differential[("insecure_code", "secure_code")].set_index("step").loc[STEPS[-1]]
    assert final["mean"] == pytest.approx(0.06, abs=0.003)
    assert 0 < final["low"] < final["mean"] < final["high"] and final["high"] - final["low"] < 0.01
    assert final["interval"] == "bootstrap over prompts (one seed)" and final["n_prompts"] == 40
    # What the old explorer drew: the raw values' spread over prompts covers the shift many times over.
    raw_final = table[(table["trait"] == "kind") & (table["step"] == STEPS[-1])]
    assert raw_final.groupby("condition")["value"].std().min() > 0.3
    control = views.drift["secure_code"].set_index("step").loc[STEPS[-1]]
    assert control["low"] < 0 < control["high"]  # the control does not move
    assert set(views.raw.columns) >= {"condition", "seed", "step", "value"}


def test_with_several_seeds_the_interval_is_across_seeds():
    table = projections(seeds=(0, 1, 2), seed_sd=0.05, rng_seed=3)
    views = trait_views(table, "kind", ["insecure_code", "secure_code"], PAIRS)
    final = views.differential[("insecure_code", "secure_code")].set_index("step").loc[STEPS[-1]]
    at_final = table[(table["trait"] == "kind")]
    base = at_final[at_final["step"] == 0].set_index(["condition", "seed", "prompt"])["value"]
    last = at_final[at_final["step"] == STEPS[-1]].set_index(["condition", "seed", "prompt"])["value"]
    seed_means = (last - base).groupby(["condition", "seed"]).mean()
    expected = seed_differential_test(seed_means["insecure_code"].to_numpy()[:, None],
                                      seed_means["secure_code"].to_numpy()[:, None])
    assert final["mean"] == pytest.approx(expected["differential"][0])
    assert (final["low"], final["high"]) == pytest.approx((expected["ci_low"][0], expected["ci_high"][0]))
    assert final["interval"] == "t interval, 3 EM vs 3 control seeds"
    drift_final = views.drift["insecure_code"].set_index("step").loc[STEPS[-1]]
    assert drift_final["n_seeds"] == 3 and drift_final["interval"] == "t interval across 3 seeds"
    assert drift_final["mean"] == pytest.approx(seed_means["insecure_code"].mean())


def test_default_trait_and_checkpoint_details():
    table = projections()
    assert default_trait(table, PAIRS) == "kind"
    assert default_trait(table, {}) == "calm"  # no pair: the first by name
    views = trait_views(table, "kind", ["insecure_code"], PAIRS)
    assert views.differential == {}  # a pair is drawn only when both of its conditions are chosen
    answers = pd.DataFrame({"condition": ["insecure_code", "insecure_code", "base", "secure_code"],
                            "step": [4, 4, 0, 4], "question": ["q1", "q2", "q0", "q3"],
                            "answer": ["bad", "fine", "hello", "other"], "aligned": [5.0, 90.0, 80.0, 10.0],
                            "coherent": [70.0, 80.0, 90.0, 60.0]})
    details = checkpoint_details(views, 4, answers, n=1)
    assert list(details["what"]) == ["projection prompt", "answer"]
    assert details.iloc[1]["text"] == "bad"  # the lowest-aligned answer of the chosen condition only
    at_base = checkpoint_details(views, 0, answers)  # step 0: the shared base model, which has not drifted
    assert list(at_base["condition"]) == ["base"] and list(at_base["what"]) == ["answer"]
    with pytest.raises(KeyError, match="nosuch"):
        trait_views(table, "nosuch", ["insecure_code"], PAIRS)


def test_all_seeds_gathers_the_runs_seed_tables_of_the_findings_inputs(tmp_path):
    from traitspace.findings.explorer import all_seeds
    from traitspace.findings.inputs import FindingsInputs, RunTables

    table = projections(seeds=(0, 1), seed_sd=0.05)

    def run(folder, seed):
        return RunTables(folder, seed, table[table["seed"] == seed].drop(columns="seed"), pd.DataFrame(),
                         pd.DataFrame(), {}, PAIRS)

    other_dataset = run(tmp_path / "other", 0)  # findings.extra_runs: another training, left out
    inputs = FindingsInputs(run(tmp_path / "main", 0), [run(tmp_path / "main", 1), other_dataset], [], None)
    gathered = all_seeds(inputs)
    assert sorted(gathered["seed"].unique()) == [0, 1] and len(gathered) == len(table)
