"""The causal check: steer the base model along the top changed features' decoder directions and
measure the misalignment preference (and, when asked, the sampled EM rate), with a random SAE feature
as the control.

This is notebook 06's sweep (:func:`traitspace.steer.sweep.run_sweep`: ``steer()`` at one layer,
alpha in units of that layer's median token norm, each side stopped where coherence breaks down, each
setting stored and resumed) with SAE decoder directions in place of trait directions. Each top feature
is oriented the way EM moved it (its decoder direction times the sign of its EM-minus-control change),
so positive alpha pushes the base model the way EM fine-tuning did. The control is one live feature
drawn at random from those outside the top list: a real SAE direction of the same kind, not a point
on the sphere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..steer.sweep import SweepDirection


def sweep_directions(sae, top: pd.DataFrame, live: np.ndarray, n: int, seed: int) -> list[SweepDirection]:
    """The top ``n`` features of ``top`` (rank order; feature, sign), oriented, and one random live feature."""
    directions = sae.decoder_directions()
    chosen = top.head(n)
    result = [SweepDirection(f"feature {int(row.feature)}", "sae_feature", int(row.sign) * directions[int(row.feature)])
              for row in chosen.itertuples()]
    candidates = np.setdiff1d(np.flatnonzero(live), top["feature"].to_numpy())
    if not len(candidates):
        candidates = np.setdiff1d(np.arange(sae.d_sae), top["feature"].to_numpy())
    random_feature = int(np.random.default_rng(seed).choice(candidates))
    result.append(SweepDirection(f"random feature {random_feature}", "random", directions[random_feature]))
    return result


def measure_setup(config, folder, pairs: Sequence):
    """Notebook 06's :class:`~traitspace.steer.measure.MeasureSetup` with the ``sae`` section's sizes."""
    from ..steer.measure import MeasureSetup

    settings, behavior = config.sae, config.behavior
    prompts, judge = [], None
    if settings.samples_per_question > 0:
        from ..behavior.plan import build_eval_prompts, load_eval_questions
        from ..judges import make_judge

        questions = load_eval_questions(behavior.question_sets, ["plain"], behavior.question_files)
        prompts = build_eval_prompts(questions, settings.samples_per_question, None, run_seed=config.run.seed)
        judge = make_judge(behavior.judge, cache_dir=folder / "judge_cache")
    return MeasureSetup(pairs, prompts, judge, settings.max_new_tokens, behavior.temperature, behavior.top_p,
                        settings.batch_size_capture, behavior.aligned_threshold, behavior.coherent_threshold)


def preference_pairs(config) -> list:
    """The EM answer pairs of the first ``sae.preference_questions`` questions."""
    from ..behavior.preference import load_preference_pairs

    pairs = load_preference_pairs(config.behavior.preference_pairs_file, config.sae.preference_questions)
    return [pair for pair in pairs if pair.kind == "em"]


def against_random(sweep: pd.DataFrame) -> pd.DataFrame:
    """Each steered feature's paired preference change beside the random feature's at the same alpha;
    ``beyond_random`` when the two 95% intervals do not overlap (conservative)."""
    change = ["preference_change", "preference_change_low", "preference_change_high"]
    random_rows = sweep.loc[sweep["kind"] == "random", ["alpha", *change]]
    table = (sweep[(sweep["kind"] != "random") & (sweep["alpha"] != 0)]
             .merge(random_rows, on="alpha", suffixes=("", "_random")))
    beyond = ((table["preference_change_low"] > table["preference_change_high_random"])
              | (table["preference_change_high"] < table["preference_change_low_random"]))
    return table.assign(beyond_random=beyond)[["direction", "alpha", *change, "preference_change_random",
                                               "preference_change_low_random", "preference_change_high_random",
                                               "beyond_random", "coherence_rate"]]
