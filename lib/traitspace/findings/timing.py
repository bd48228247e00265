"""Fingerprint timing: when does the EM fingerprint cross its threshold, when does behaviour
rise above the control's, and the sentence that reports the lead time between them.

Key EM traits are chosen from the EM-minus-control differential on one half of the projection
prompts and the fingerprint (:func:`traitspace.core.trajectory.fingerprint_of`, per step) is
measured on the other half, so selection and measurement never share prompts (seed project,
finding 3). Its crossing threshold comes from a sign-flip permutation null over the measurement
prompts (:func:`fingerprint_null_threshold`), or from the control's own step-to-step spread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import pandas as pd

from ..core.stats import control_threshold, first_crossing
from ..core.trajectory import drift, fingerprint_by_prompt, fingerprint_score, fingerprint_split, select_key_traits

ThresholdMethod = Literal["permutation", "control_spread"]


@dataclass
class FingerprintTiming:
    key_traits: pd.DataFrame        # trait, differential (selection half), sign
    scores: pd.DataFrame            # step, fingerprint, control_signed_drift
    threshold: float
    threshold_method: str
    crossing_step: int | None
    selection_prompts: list
    measurement_prompts: list


@dataclass
class PairTiming:
    """One (EM, control) pair: the fingerprint's timing, behaviour's crossing and the sentence."""

    fingerprint: FingerprintTiming
    behaviour_step: int | None
    rates: pd.DataFrame             # the pair's rows of the behaviour rates
    sentence: str


def signed_prompt_matrix(measurement: pd.DataFrame, em: str, control: str,
                         traits: Sequence[str], signs: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The fingerprint of every measurement prompt at every step
    (:func:`traitspace.core.trajectory.fingerprint_by_prompt`) as an array.

    Returns (steps [n_steps], matrix [n_prompts, n_steps]); its mean over prompts is the fingerprint.
    """
    grid = fingerprint_by_prompt(measurement, em, control, traits, signs)
    return grid.columns.to_numpy(), grid.to_numpy()


def fingerprint_null_threshold(matrix: np.ndarray, n_perm: int = 2000, alpha: float = 0.05, seed: int = 0) -> float:
    """Sign-flip permutation threshold for the fingerprint, family-wise over steps.

    Under "no EM-specific effect", each prompt's signed differential is as likely to be negated.
    Each permutation flips whole prompts (the same sign at every step, keeping each prompt's
    trajectory intact), averages over prompts and keeps the maximum over steps; the threshold is
    the (1 - alpha) quantile of those maxima, so a crossing at any step is significant at alpha.

    matrix: [n_prompts, n_steps] from :func:`signed_prompt_matrix`.
    """
    generator = np.random.default_rng(seed)
    flips = generator.choice([-1.0, 1.0], size=(n_perm, matrix.shape[0]))
    null_series = flips @ np.nan_to_num(matrix) / matrix.shape[0]  # [n_perm, n_steps]
    return float(np.quantile(null_series.max(axis=1), 1 - alpha))


def fingerprint_timing(
    projections: pd.DataFrame,
    em: str,
    control: str,
    k: int = 10,
    method: ThresholdMethod = "permutation",
    n_perm: int = 2000,
    alpha: float = 0.05,
    spread_k: float = 2.0,
    persist: int = 1,
    seed: int = 0,
) -> FingerprintTiming:
    """Key traits on one half of the prompts, fingerprint and its crossing on the other half."""
    table = projections[["condition", "step", "trait", "prompt", "value"]]
    selection, measurement = fingerprint_split(list(table["prompt"].unique()), seed)
    key = select_key_traits(table[table["prompt"].isin(selection)], em, control, k)
    measured = table[table["prompt"].isin(measurement)]
    traits, signs = list(key["trait"]), list(key["sign"])
    score = fingerprint_score(measured, em, control, traits, signs)
    control_drift = drift(measured[measured["condition"] == control])
    control_drift = control_drift[control_drift["trait"].isin(traits)].copy()
    control_drift["signed"] = control_drift["drift"] * control_drift["trait"].map(dict(zip(traits, signs)))
    control_signed = control_drift.groupby("step")["signed"].mean()
    if method == "permutation":
        _, matrix = signed_prompt_matrix(measured, em, control, traits, signs)
        threshold = fingerprint_null_threshold(matrix, n_perm=n_perm, alpha=alpha, seed=seed)
    elif method == "control_spread":
        threshold = float(control_threshold(control_signed.to_numpy(), method="step_spread", k=spread_k))
    else:
        raise ValueError(f"unknown threshold method {method!r}; use 'permutation' or 'control_spread'")
    scores = pd.DataFrame({"step": score.index.astype(int), "fingerprint": score.to_numpy()})
    scores["control_signed_drift"] = scores["step"].map(control_signed)
    crossing = first_crossing(scores["step"].to_numpy(), scores["fingerprint"].to_numpy(), threshold, persist=persist)
    return FingerprintTiming(key, scores, threshold, method, crossing, list(selection), list(measurement))


def behaviour_crossing(em_rates: pd.DataFrame, em: str, control: str, persist: int = 1) -> int | None:
    """First step at which the EM condition's misalignment rate rises above the control's beyond
    their intervals (EM's lower bound > control's upper bound at the same step), for ``persist``
    consecutive evaluated steps. em_rates: columns condition, step, low, high."""
    em_rows = em_rates[em_rates["condition"] == em].set_index("step")
    control_rows = em_rates[em_rates["condition"] == control].set_index("step")
    steps = sorted(set(em_rows.index) & set(control_rows.index))
    if not steps:
        return None
    margin = np.array([em_rows.loc[step, "low"] - control_rows.loc[step, "high"] for step in steps])
    return first_crossing(np.array(steps), margin, 0.0, persist=persist)


def lead_time_sentence(fingerprint_step: int | None, behaviour_step: int | None) -> str:
    if behaviour_step is None and fingerprint_step is None:
        return "Neither the fingerprint nor behaviour crossed its threshold: no lead time can be reported."
    if behaviour_step is None:
        return (f"The fingerprint crossed its threshold at step {fingerprint_step}, but the EM rate never rose "
                "above the control's beyond the intervals, so no lead time can be reported.")
    if fingerprint_step is None:
        return (f"Behaviour rose above the control at step {behaviour_step}, but the fingerprint never crossed "
                "its threshold: no early warning on this run.")
    lead = behaviour_step - fingerprint_step
    relation = "before" if lead > 0 else ("at the same step as" if lead == 0 else "after")
    return (f"The fingerprint crossed at step {fingerprint_step}, {relation} behaviour (step {behaviour_step}): "
            f"a lead time of {lead} steps.")


def fingerprint_and_behaviour(inputs, settings, seed: int = 0) -> dict[tuple[str, str], PairTiming]:
    """:func:`fingerprint_timing` and :func:`behaviour_crossing` for every (EM, control) pair of the
    main run (``inputs``: :class:`~traitspace.findings.inputs.FindingsInputs`; ``settings``: the
    params' findings section)."""
    result = {}
    # The assistant axis is not a persona trait: it never enters the fingerprint.
    trait_rows = inputs.main.projections[inputs.main.projections["trait"] != "assistant_axis"]
    rate = settings.em_rate
    renamed = inputs.main.rates.rename(columns={f"{rate}_low": "low", f"{rate}_high": "high"})
    for em, control in inputs.main.pairs.items():
        timing = fingerprint_timing(trait_rows, em, control, k=settings.n_key_traits, method=settings.threshold_method,
                                    n_perm=settings.n_perm, alpha=settings.alpha, spread_k=settings.spread_k,
                                    persist=settings.persist, seed=seed)
        behaviour_step = behaviour_crossing(renamed, em, control, persist=settings.persist)
        pair_rates = inputs.main.rates[inputs.main.rates["condition"].isin([em, control])]
        result[(em, control)] = PairTiming(timing, behaviour_step, pair_rates,
                                           lead_time_sentence(timing.crossing_step, behaviour_step))
    return result


def timing_table(timings: dict[tuple[str, str], PairTiming]) -> pd.DataFrame:
    """One row per pair: key traits, threshold, both crossing steps and the lead time
    (``fingerprint_timing.csv``)."""
    rows = []
    for (em, control), timing in timings.items():
        fingerprint = timing.fingerprint
        lead = (timing.behaviour_step - fingerprint.crossing_step
                if timing.behaviour_step is not None and fingerprint.crossing_step is not None else None)
        rows.append({"em": em, "control": control, "key_traits": ", ".join(fingerprint.key_traits["trait"]),
                     "threshold": fingerprint.threshold, "threshold_method": fingerprint.threshold_method,
                     "fingerprint_crossing_step": fingerprint.crossing_step,
                     "behaviour_crossing_step": timing.behaviour_step, "lead_time_steps": lead,
                     "n_measurement_prompts": len(fingerprint.measurement_prompts)})
    return pd.DataFrame(rows)
