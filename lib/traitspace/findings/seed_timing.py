"""Lead time with matched tests: do the EM fingerprint and behaviour cross, and in which order,
when both are tested the same way against the spread between training seeds?

For each held-out training seed ``s`` (leave-one-seed-out):

1. **Key traits** are the ``k`` traits with the largest EM-minus-control drift at the final step,
   averaged over the *other* seeds, signed so that the EM direction is positive. Seed ``s`` never
   chooses the traits it is timed on.
2. Every run (condition, seed) gets a per-step **fingerprint** F = mean over key traits of sign x
   drift, and a per-step **behaviour** value B (the change of the judge-free misalignment preference
   from the base model, or an EM rate).
3. For seed ``s``, at each step, the EM-minus-control difference of F (and of B) is compared with
   the **seed-pair null**: a same-data pair of seeds differs with sd sqrt(2 s2), s2 the pooled
   within-condition variance across all seeds at that step. One-sided t on 2 (n_seeds - 1) degrees
   of freedom (the fingerprint is signed towards EM; behaviour counts EM being more misaligned),
   Holm over steps, so a crossing at any step holds family-wise at ``alpha``; both series use the
   same test, the same alpha and the same steps (those where behaviour was measured).
4. The crossing is the first Holm-significant step; the lead is behaviour's crossing minus the
   fingerprint's. "Behaviour first", "same step" and "no crossing" are reported as plainly as
   "traits first", per held-out seed and over seeds.

With fewer than 3 seeds per condition no seed can be held out while a null remains: nothing is
timed, and the sentence says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

MIN_SEEDS = 3


@dataclass
class SeedTiming:
    """One (EM, control) pair's matched timing."""

    em: str
    control: str
    behaviour_measure: str
    per_seed: pd.DataFrame   # held_out_seed, key_traits, fingerprint_step, behaviour_step, lead_steps, verdict
    series: pd.DataFrame     # held_out_seed, signal (fingerprint | behaviour), step, difference, null_sd, t, p, p_holm, crossed
    steps: list[int]         # the matched grid: trained steps where both are measured
    sentence: str

    @property
    def testable(self) -> bool:
        return not self.per_seed.empty


def _per_run_signal(values: pd.DataFrame) -> pd.DataFrame:
    """condition, seed, step, value -> a (condition, seed) x step grid."""
    return values.pivot_table(index=["condition", "seed"], columns="step", values="value", aggfunc="mean")


def matched_test(grid: pd.DataFrame, em: str, control: str, held_out: int, steps: list[int], alpha: float
                 ) -> pd.DataFrame:
    """EM-minus-control difference of one seed's runs against the seed-pair null at each step, Holm
    over the steps (one-sided: EM above control). ``grid``: (condition, seed) x step."""
    em_runs, control_runs = grid.loc[em][steps], grid.loc[control][steps]
    n_em, n_control = em_runs.notna().sum(), control_runs.notna().sum()
    dof = (n_em + n_control - 2).to_numpy(dtype=float)
    pooled = (((em_runs - em_runs.mean()) ** 2).sum() + ((control_runs - control_runs.mean()) ** 2).sum()).to_numpy() / dof
    null_sd = np.sqrt(2 * pooled)
    difference = (em_runs.loc[held_out] - control_runs.loc[held_out]).to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_values = difference / null_sd
    p_values = scipy_stats.t.sf(t_values, dof)
    testable = np.isfinite(p_values)
    p_holm = np.full(len(steps), np.nan)
    crossed = np.zeros(len(steps), dtype=bool)
    if testable.any():
        crossed[testable], p_holm[testable], _, _ = multipletests(p_values[testable], alpha=alpha, method="holm")
    return pd.DataFrame({"step": steps, "difference": difference, "null_sd": null_sd, "t": t_values,
                         "p": p_values, "p_holm": p_holm, "crossed": crossed})


def first_crossed(series: pd.DataFrame) -> int | None:
    crossed = series.loc[series["crossed"], "step"]
    return int(crossed.min()) if len(crossed) else None


def verdict(fingerprint_step: int | None, behaviour_step: int | None) -> str:
    if fingerprint_step is None and behaviour_step is None:
        return "neither crossed"
    if behaviour_step is None:
        return "traits crossed, behaviour did not"
    if fingerprint_step is None:
        return "behaviour crossed, traits did not"
    lead = behaviour_step - fingerprint_step
    return "traits first" if lead > 0 else ("same step" if lead == 0 else "behaviour first")


def seed_level_timing(mean_drift: pd.DataFrame, behaviour: pd.DataFrame, em: str, control: str, k: int = 10,
                      alpha: float = 0.05, behaviour_measure: str = "behaviour") -> SeedTiming:
    """Matched, leave-one-seed-out timing of one pair (see the module docstring).

    mean_drift: condition, seed, step, trait, drift (one mean per run). behaviour: condition, seed,
    step, value (the behaviour measure per run and step, larger = more misaligned).
    """
    seeds = sorted(set(mean_drift.loc[mean_drift["condition"] == em, "seed"])
                   & set(mean_drift.loc[mean_drift["condition"] == control, "seed"])
                   & set(behaviour.loc[behaviour["condition"] == em, "seed"])
                   & set(behaviour.loc[behaviour["condition"] == control, "seed"]))
    pair_behaviour = behaviour[behaviour["condition"].isin([em, control]) & behaviour["seed"].isin(seeds)]
    steps = sorted(set(pair_behaviour.loc[pair_behaviour["step"] > 0, "step"]) & set(mean_drift["step"]))
    empty = pd.DataFrame()
    if len(seeds) < MIN_SEEDS or len(steps) < 2:
        why = (f"{len(seeds)} training seed(s) with both measures per condition: holding one out leaves no seed-pair "
               f"null (at least {MIN_SEEDS} are needed)" if len(seeds) < MIN_SEEDS
               else f"behaviour was measured at {len(steps)} trained step(s) that were also projected, and an order "
               "needs at least two (measure the preference at every checkpoint: behavior.preference_grid: all)")
        return SeedTiming(em, control, behaviour_measure, empty, empty, steps,
                          f"{em} vs {control}: no lead time can be tested: {why}.")
    pair_drift = mean_drift[mean_drift["condition"].isin([em, control]) & mean_drift["seed"].isin(seeds)]
    final_step = int(pair_drift["step"].max())
    final = pair_drift[pair_drift["step"] == final_step].pivot_table(index=["condition", "seed"], columns="trait",
                                                                     values="drift")
    behaviour_grid = _per_run_signal(pair_behaviour)
    rows, series = [], []
    for held_out in seeds:
        others = [seed for seed in seeds if seed != held_out]
        differential = (final.loc[em].loc[others] - final.loc[control].loc[others]).mean()
        key = differential.reindex(differential.abs().sort_values(ascending=False, kind="stable").index).head(k)
        signs = np.sign(key).replace(0, 1)
        signed = pair_drift[pair_drift["trait"].isin(key.index)].assign(
            value=lambda table: table["drift"] * table["trait"].map(signs))
        fingerprint_grid = _per_run_signal(signed.groupby(["condition", "seed", "step"], as_index=False)["value"].mean())
        fingerprint = matched_test(fingerprint_grid, em, control, held_out, steps, alpha)
        behaviour_series = matched_test(behaviour_grid, em, control, held_out, steps, alpha)
        fingerprint_step, behaviour_step = first_crossed(fingerprint), first_crossed(behaviour_series)
        lead = (behaviour_step - fingerprint_step) if fingerprint_step is not None and behaviour_step is not None else None
        rows.append({"held_out_seed": held_out, "key_traits": ", ".join(key.index), "fingerprint_step": fingerprint_step,
                     "behaviour_step": behaviour_step, "lead_steps": lead,
                     "verdict": verdict(fingerprint_step, behaviour_step)})
        series += [fingerprint.assign(held_out_seed=held_out, signal="fingerprint"),
                   behaviour_series.assign(held_out_seed=held_out, signal=behaviour_measure)]
    per_seed = pd.DataFrame(rows)
    return SeedTiming(em, control, behaviour_measure, per_seed, pd.concat(series, ignore_index=True), steps,
                      timing_sentence(em, control, per_seed, behaviour_measure, steps, alpha))


def timing_sentence(em: str, control: str, per_seed: pd.DataFrame, behaviour_measure: str, steps: list[int],
                    alpha: float) -> str:
    """What the held-out seeds say, with the lead's interval across seeds when it can be given."""
    counts = per_seed["verdict"].value_counts()
    tally = "; ".join(f"{name}: {count}" for name, count in counts.items())
    leads = per_seed["lead_steps"].dropna().to_numpy(dtype=float)
    text = (f"{em} vs {control}, fingerprint vs {behaviour_measure} on the same {len(steps)} trained steps "
            f"{steps}, each against its seed-pair null (one-sided t, Holm over steps, alpha {alpha}), key traits "
            f"chosen on the other seeds; {len(per_seed)} held-out seeds: {tally}.")
    if len(leads) >= 2:
        mean = leads.mean()
        half = scipy_stats.t.ppf(0.975, len(leads) - 1) * leads.std(ddof=1) / np.sqrt(len(leads))
        text += (f" Lead (behaviour step minus fingerprint step) over the {len(leads)} seeds where both crossed: "
                 f"mean {mean:+.1f} steps, 95% interval [{mean - half:+.1f}, {mean + half:+.1f}] (range "
                 f"{leads.min():+.0f} to {leads.max():+.0f}).")
    elif len(leads) == 1:
        text += f" Both crossed for one held-out seed only (lead {leads[0]:+.0f} steps): no interval."
    else:
        text += " No held-out seed had both crossings: no lead time can be reported."
    return text


def behaviour_values(seed_level, measure: str = "auto") -> tuple[pd.DataFrame, str]:
    """The per-run behaviour series for timing: ``preference`` (change of the misalignment preference
    from the base model, where it was measured at more than one trained step per run), ``em_rate``
    (the judged EM rate of all answers), or ``auto`` (the preference when usable, else the EM rate).
    Returns (condition, seed, step, value) and the measure's name."""
    summary = seed_level.preference_summary
    preference = pd.DataFrame()
    if summary is not None and len(summary) and "change_from_base" in summary.columns:
        chosen = summary[summary["kind"] == "em"]
        preference = chosen[["condition", "seed", "step"]].assign(value=chosen["change_from_base"].to_numpy())
    usable = len(preference) and preference[preference["step"] > 0].groupby(["condition", "seed"])["step"].nunique().min() > 1
    if measure == "preference" or (measure == "auto" and usable):
        return preference, "misalignment preference"
    rates = seed_level.rates
    return rates[["condition", "seed", "step"]].assign(value=rates["em_rate_of_all"].to_numpy()), "EM rate of all answers"


def seed_timings(inputs, settings) -> dict[tuple[str, str], SeedTiming]:
    """:func:`seed_level_timing` of every (EM, control) pair of the main run (``inputs``:
    :class:`~.inputs.FindingsInputs`; ``settings``: the findings section)."""
    seed_level = inputs.seed_level
    if seed_level is None or seed_level.drift.empty:
        return {}
    behaviour, name = behaviour_values(seed_level, settings.behaviour_measure)
    drift = seed_level.drift[seed_level.drift["trait"] != "assistant_axis"]  # not a persona trait
    return {(em, control): seed_level_timing(drift, behaviour, em, control, k=settings.n_key_traits,
                                             alpha=settings.alpha, behaviour_measure=name)
            for em, control in inputs.main.pairs.items()}


def seed_timing_table(timings: dict[tuple[str, str], SeedTiming]) -> pd.DataFrame:
    """One row per pair and held-out seed (``seed_timing.csv``)."""
    frames = [timing.per_seed.assign(em=em, control=control, behaviour_measure=timing.behaviour_measure)
              for (em, control), timing in timings.items() if timing.testable]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
