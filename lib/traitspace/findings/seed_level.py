"""The findings' lead: what the EM data did, tested across training seeds.

Reads the seed-level tables notebooks 03 and 04 wrote (:class:`~.inputs.SeedLevel`) and turns
them into the sentences and tables the report and notebook 05 open with: how many traits'
EM-minus-control drift beats the seed-pair null, the activation-space shift, and the judge-free
misalignment preference's EM-minus-control change. With one seed it says plainly that nothing can
be tested.
"""

from __future__ import annotations

import pandas as pd

SHIFT_COLUMNS = ["trait", "differential", "ci_low", "ci_high", "seed_pair_sd", "q_value", "direction"]


def seed_level_sentences(seed_level) -> list[str]:
    """One sentence per finding, each with its n (seeds) and interval."""
    if seed_level is None:
        return ["no seed-level tables (notebooks 03 and 04 predate training seeds): rerun them"]
    n_seeds = len(seed_level.seeds)
    if not seed_level.testable:
        return [f"One training seed ({seed_level.seeds}): no effect of the EM data can be tested, because the spread "
                "between seeds of the same data is unknown; every difference below is between two single runs. "
                "Train with finetune.seeds: [0, 1, 2] (or more)."]
    sentences = []
    for (em, control), shifts in sorted(seed_level.shifts.items()):
        significant = shifts[shifts["significant"]]
        step = int(shifts["step"].iloc[0])
        named = ", ".join(f"{row.trait} {row.differential:+.3g} [{row.ci_low:+.3g}, {row.ci_high:+.3g}]"
                          for row in significant.head(5).itertuples())
        sentences.append(
            f"{em} vs {control}, step {step}, {n_seeds} training seeds per condition: {len(significant)} of "
            f"{len(shifts)} traits' EM-minus-control drift beats the seed-pair null (t-test across seeds, BH q < 0.05)"
            + (f"; largest: {named}" if named else "") + ".")
        shift = seed_level.activation_shift.get((em, control))
        if shift is not None and len(shift):
            for row in shift.itertuples():
                sentences.append(
                    f"{em} vs {control}, layer {int(row.layer)}: the EM-minus-control shift of mean activations has norm "
                    f"{row.norm:.3g}, against {row.seed_pair_norm:.3g} between two seeds of the same data; the trait "
                    f"basis explains {row.explained_share:.0%} of it (a random direction: {row.chance_share:.0%}).")
    test = seed_level.preference_test
    if test is not None and len(test):
        for (em, control), rows in test.groupby(["em", "control"]):
            final = rows.sort_values("step").iloc[-1]
            verdict = "beats" if final["significant"] else "does not beat"
            sentences.append(
                f"Misalignment preference, {em} vs {control} at step {int(final['step'])}: the EM runs' change from the "
                f"base model minus the controls' = {final['differential']:+.4f} [{final['ci_low']:+.4f}, "
                f"{final['ci_high']:+.4f}] (n = {int(final['n_em_seeds'])} + {int(final['n_control_seeds'])} seeds); "
                f"it {verdict} the seed-pair null (p = {final['p_value']:.3g}).")
    return sentences


def seed_level_tables(seed_level, top_k: int = 10) -> dict[str, pd.DataFrame]:
    """Caption -> table: the top seed-level trait shifts per pair and the preference test."""
    tables = {}
    if seed_level is None:
        return tables
    for (em, control), shifts in sorted(seed_level.shifts.items()):
        shown = [column for column in SHIFT_COLUMNS if column in shifts]
        tables[f"{em} vs {control}: EM-minus-control drift at the final step, mean over seeds, 95% interval across "
               f"seeds, BH q against the seed-pair null"] = shifts.head(top_k)[shown]
    if seed_level.preference_test is not None and len(seed_level.preference_test):
        tables["Misalignment preference: EM-minus-control change from the base model, across seeds"] = (
            seed_level.preference_test[["em", "control", "step", "differential", "ci_low", "ci_high", "p_value",
                                        "significant", "n_em_seeds", "n_control_seeds"]])
    return tables
