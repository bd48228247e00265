"""The report's limitations section, written from what this run measured rather than boilerplate:
missing crossings, the base model's own EM rate, sample sizes, the judge's measured validity,
undefined monitor metrics and the number of projection prompts.
"""

from __future__ import annotations

from .evaluation import MonitorEvaluation


def limitations(inputs, timings, monitor: MonitorEvaluation) -> list[str]:
    """Limitations written from what was measured, not boilerplate (``inputs``:
    :class:`~.inputs.FindingsInputs`; ``timings``: :func:`~.timing.fingerprint_and_behaviour`)."""
    notes = []
    rates = inputs.main.rates
    for (em, control), timing in timings.items():
        peak = rates[rates["condition"] == em]["em_rate_of_all"].max()
        control_peak = rates[rates["condition"] == control]["em_rate_of_all"].max()
        if timing.behaviour_step is None:
            notes.append(f"The EM rate of {em} (peak {peak:.1%} of all answers) never exceeded {control}'s "
                         f"(peak {control_peak:.1%}) beyond the Wilson intervals, so no lead time is reported.")
        if timing.fingerprint.crossing_step is None:
            notes.append(f"The {em} fingerprint never crossed its {timing.fingerprint.threshold_method} threshold "
                         f"({timing.fingerprint.threshold:.3g}).")
    base_rates = rates[rates["step"] == 0]["em_rate_of_all"]
    if len(base_rates) and base_rates.iloc[0] > 0.05:
        notes.append(f"The base model's own answers were judged misaligned at {base_rates.iloc[0]:.1%} (of all answers): "
                     "part of every EM rate here is the small model's rambling or the judge's false positives, so "
                     "differences from the control and from step 0 carry the signal, not the level.")
    n_answers = rates["n_answers"]
    notes.append(f"Behaviour rests on {int(n_answers.min())}-{int(n_answers.max())} free-form answers per checkpoint; "
                 "rates below a few percent cannot be told apart at this sample size.")
    validity = inputs.judge_validity
    if validity is None or validity.empty:
        notes.append("The judge's validity was not measured in this run (behavior.validate_judge off or not available).")
    else:
        for row in validity.to_dict("records"):
            name = row.get("judge", "judge")
            notes.append(f"Judge {name}: AUROC {row.get('auroc', float('nan')):.2f} and accuracy "
                         f"{row.get('accuracy', float('nan')):.2f} on the held-out labelled answers; EM rates are only "
                         "as valid as this judge.")
    undefined = monitor.results[monitor.results["undefined"] != ""]
    if len(undefined):
        notes.append(f"{len(undefined)} of {len(monitor.results)} monitor evaluations have undefined metrics "
                     f"({undefined['undefined'].iloc[0]}): {monitor.description}")
    n_prompts = inputs.main.projections["prompt"].nunique()
    notes.append(f"Trait projections use {n_prompts} projection prompts; the fingerprint is measured on half of them.")
    return notes
