"""check-reference: a run's headline numbers against stored reference numbers and tolerances."""

import math

from traitspace.findings.reference import compare, with_tolerances

SUMMARY = {
    "seeds": [0, 1, 2],
    "base_preference": {"value": -0.24, "se": 0.004},
    "pairs": {"medical_harmful__vs__medical_sound": {
        "traits_beating_null": 20, "n_traits": 247, "step": 80,
        "preference_differential": {"value": 0.15, "se": 0.02, "p_value": 0.01, "step": 80},
        "em_rate__medical_harmful": {"value": 0.30, "se": 0.04},
        "em_rate__medical_sound": {"value": 0.10, "se": float("nan")},
    }},
}


def test_tolerances_follow_the_seed_spread_with_floors():
    expected = with_tolerances(SUMMARY)
    pair = expected["pairs"]["medical_harmful__vs__medical_sound"]
    assert pair["preference_differential"]["tolerance"] == 0.04          # 2 x se
    assert pair["em_rate__medical_harmful"]["tolerance"] == 0.08
    assert pair["em_rate__medical_sound"]["tolerance"] == 0.05           # no spread known: the floor
    assert pair["traits_beating_null_tolerance"] == 10
    assert expected["base_preference"]["tolerance"] == 0.01


def test_a_matching_run_passes_and_a_broken_one_is_named():
    expected = with_tolerances(SUMMARY)
    assert all(check.ok for check in compare(SUMMARY, expected))
    broken = {"seeds": [0], "base_preference": {"value": -0.30}, "pairs": {"medical_harmful__vs__medical_sound": {
        "traits_beating_null": 0, "preference_differential": {"value": 0.0},
        "em_rate__medical_harmful": {"value": 0.31}}}}
    failed = {check.name for check in compare(broken, expected) if not check.ok}
    assert failed == {"base model's misalignment preference",
                      "medical_harmful__vs__medical_sound: traits beating the seed-pair null",
                      "medical_harmful__vs__medical_sound: preference_differential",
                      "medical_harmful__vs__medical_sound: em_rate__medical_sound"}  # missing counts as off
    missing = [check for check in compare(broken, expected) if check.name.endswith("em_rate__medical_sound")][0]
    assert math.isnan(missing.observed)
