"""A run's headline numbers, and a check of a user's run against the reference run's.

``python -m traitspace check-reference outputs/<run>`` reads the run through the stage loaders,
computes the numbers docs/reference_results.md reports (per EM/control pair: traits whose
EM-minus-control drift beats the seed-pair null, the misalignment preference's EM-minus-control
change with its interval across seeds, the judged EM rate per condition; the base model's
preference) and compares them with ``docs/reference_results.json`` within the tolerances stored
there. A user can then tell "no EM at this scale" (numbers match a reference that shows little) from
"my install is broken" (numbers off by more than the seed-to-seed spread allows).

``--write`` stores a run's numbers with tolerances derived from its own seed spread: each value may
move by max(an absolute floor, 2 x its standard error across seeds), since a rerun with the same seeds
on another CPU differs only by floating-point order, and a rerun with other seeds by about that much.
The base model's preference (no training, no sampling) gets the floor alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REFERENCE_FILE = Path(__file__).resolve().parents[3] / "docs" / "reference_results.json"
FLOORS = {"preference_differential": 0.01, "em_rate": 0.05, "base_preference": 0.01}


@dataclass
class Check:
    name: str
    observed: float
    expected: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.observed) and abs(self.observed - self.expected) <= self.tolerance)

    def line(self) -> str:
        verdict = "ok  " if self.ok else "OFF "
        return (f"{verdict} {self.name}: observed {self.observed:.4g}, reference {self.expected:.4g} "
                f"(tolerance +-{self.tolerance:.3g})")


def run_summary(run_dir: str | Path, behavior_section) -> dict:
    """The headline numbers of a finished run (notebooks 03 and 04), with their seed-level spreads."""
    from .. import behavior, project

    projection = project.load_outputs(run_dir)
    conditions = sorted(projection.projections["condition"].unique())
    behaviour = behavior.load_outputs(run_dir, behavior_section, conditions)
    summary: dict = {"seeds": projection.seeds, "pairs": {}}
    rates = behaviour.rates
    final_rates = rates[rates["step"] == rates.groupby("condition")["step"].transform("max")]
    preference = behaviour.preference_summary
    if len(preference):
        base = preference[(preference["step"] == 0) & (preference["kind"] == "em")]
        summary["base_preference"] = {"value": float(base["preference"].iloc[0]),
                                      "se": float((base["preference_high"] - base["preference_low"]).iloc[0] / 3.92)}
    for (em, control), shifts in projection.top_shifts.items():
        pair: dict = {"traits_beating_null": int(shifts["significant"].sum()), "n_traits": len(shifts),
                      "step": int(shifts["step"].iloc[0])}
        test = behaviour.preference_test
        if test is not None and len(test):
            rows = test[(test["em"] == em) & (test["control"] == control)].sort_values("step")
            if len(rows):
                final = rows.iloc[-1]
                # Standard error of a difference of two seed means: the same-data pair sd is sqrt(2) sigma.
                se = float(final["seed_pair_sd"] / np.sqrt(2)
                           * np.sqrt(1 / final["n_em_seeds"] + 1 / final["n_control_seeds"]))
                pair["preference_differential"] = {"value": float(final["differential"]), "se": se,
                                                   "p_value": float(final["p_value"]), "step": int(final["step"])}
        for condition in (em, control):
            values = final_rates.loc[final_rates["condition"] == condition, "em_rate_of_all"].to_numpy(dtype=float)
            se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
            pair[f"em_rate__{condition}"] = {"value": float(values.mean()), "se": se}
        summary["pairs"][f"{em}__vs__{control}"] = pair
    return summary


def with_tolerances(summary: dict) -> dict:
    """``summary`` with a tolerance next to every checked value (see the module docstring)."""
    def tolerance(entry: dict, floor: float) -> float:
        se = entry.get("se", float("nan"))
        return float(max(floor, 2 * se)) if np.isfinite(se) else floor

    result = json.loads(json.dumps(summary))
    if "base_preference" in result:
        # The base model's preference involves no training and no sampling: the same model and pairs give
        # the same number up to floating-point order, so only the floor applies (its "se" is the spread
        # over questions, which says how precise the measure is, not how far a rerun may move).
        result["base_preference"]["tolerance"] = FLOORS["base_preference"]
    for pair in result["pairs"].values():
        for key, entry in pair.items():
            if isinstance(entry, dict):
                floor = FLOORS["preference_differential"] if key.startswith("preference") else FLOORS["em_rate"]
                entry["tolerance"] = tolerance(entry, floor)
        # A count of BH discoveries is unstable near the threshold: allow half of it, at least 5.
        pair["traits_beating_null_tolerance"] = max(5, pair["traits_beating_null"] // 2)
    return result


def compare(summary: dict, expected: dict) -> list[Check]:
    """Every reference number against the run's; a pair or value the run lacks counts as off (nan)."""
    checks = []
    if "base_preference" in expected:
        observed = summary.get("base_preference", {}).get("value", float("nan"))
        checks.append(Check("base model's misalignment preference", observed, expected["base_preference"]["value"],
                            expected["base_preference"]["tolerance"]))
    for name, pair in expected["pairs"].items():
        mine = summary["pairs"].get(name, {})
        checks.append(Check(f"{name}: traits beating the seed-pair null", float(mine.get("traits_beating_null", np.nan)),
                            pair["traits_beating_null"], pair["traits_beating_null_tolerance"]))
        for key, entry in pair.items():
            if isinstance(entry, dict) and "tolerance" in entry:
                observed = mine.get(key, {}).get("value", float("nan"))
                checks.append(Check(f"{name}: {key}", observed, entry["value"], entry["tolerance"]))
    return checks


def check_reference(run_dir: str | Path, params_path: str | Path, expected_path: str | Path = REFERENCE_FILE,
                    write: bool = False) -> tuple[list[Check], dict]:
    """Compare a run with the reference numbers (or, with ``write``, store the run's as the reference)."""
    from ..core.config import load_config

    config = load_config(params_path)
    summary = run_summary(run_dir, config.behavior)
    if write:
        from ..core.artifacts import atomic_write_json

        atomic_write_json(expected_path, {"params": str(params_path), **with_tolerances(summary)})
        return [], summary
    if not Path(expected_path).is_file():
        raise FileNotFoundError(f"no reference numbers at {expected_path}: run params/reference.yaml on a reference "
                                "machine and store them with `python -m traitspace check-reference outputs/reference --write`")
    expected = json.loads(Path(expected_path).read_text())
    return compare(summary, expected), summary
