"""The interactive trait explorer of notebook 05 (ipywidgets): what the analysis tests, for any trait.

A trait's raw projection varies far more between prompts than between conditions, so a band over
prompts around each condition's raw mean hides a shift the prompt-paired analysis finds. The explorer
therefore draws, for the trait picked in a search box and the conditions picked:

* the raw projections (mean over prompts, one line per training seed), for orientation only;
* the drift from the base model, taken per prompt (each prompt against its own step-0 value);
* the EM-minus-control differential, paired by prompt (and by seed);
* the trait-space PCA trajectory of every checkpoint, the one chosen on the checkpoint slider ringed.

Intervals are the ones the analysis uses: with one training seed, a percentile bootstrap over prompts
(the precision of this pair of runs); with several seeds, a t interval across the per-seed means (for
the differential, the seed-pair null of :mod:`traitspace.core.seed_tests`). A table below the plot
lists, at the chosen checkpoint, the projection prompts that moved most and the judged answers behind
the behaviour measure. The computations are plain functions (:func:`trait_views`), the widgets only
draw them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from ..core.seed_tests import seed_differential_test
from ..core.stats import bootstrap_mean_ci
from ..core.trajectory import drift, mean_projection_table, trajectory_pca

LEVEL = 0.95
SUMMARY_COLUMNS = ["step", "mean", "low", "high", "n_prompts", "n_seeds", "interval"]


def with_seed(projections: pd.DataFrame) -> pd.DataFrame:
    """The projection table with a ``seed`` column (a table from before seeds is training seed 0)."""
    return projections if "seed" in projections.columns else projections.assign(seed=0)


def all_seeds(inputs) -> pd.DataFrame:
    """Every training seed's projections of notebook 05's run (its inputs hold one table per seed,
    ``inputs.projections`` being the first seed's), with a ``seed`` column. Runs from other folders
    (``findings.extra_runs``) are left out: their conditions are other trainings."""
    runs = [inputs.main, *[run for run in inputs.extra if Path(run.run_dir) == Path(inputs.main.run_dir)]]
    return pd.concat([run.projections.assign(seed=run.seed) if "seed" not in run.projections.columns
                      else run.projections for run in runs], ignore_index=True)


def _interval_over_prompts(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    mean, low, high = bootstrap_mean_ci(values, n_boot=n_boot, ci=LEVEL, seed=seed)
    return float(mean), float(low), float(high)


def _interval_over_seeds(seed_means: np.ndarray) -> tuple[float, float, float]:
    """Mean of the per-seed means with its t interval across seeds."""
    mean = float(np.mean(seed_means))
    half = float(scipy_stats.t.ppf(0.5 + LEVEL / 2, len(seed_means) - 1) * scipy_stats.sem(seed_means))
    return mean, mean - half, mean + half


def summarise(per_prompt: pd.DataFrame, value: str, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per step: the mean of ``value`` with its interval. ``per_prompt`` has columns seed, step, prompt,
    ``value``. One seed: bootstrap over prompts; several: t interval across the per-seed means."""
    rows = []
    for step, at_step in per_prompt.groupby("step", sort=True):
        seed_means = at_step.groupby("seed")[value].mean().to_numpy()
        if len(seed_means) > 1:
            mean, low, high = _interval_over_seeds(seed_means)
            interval = f"t interval across {len(seed_means)} seeds"
        else:
            mean, low, high = _interval_over_prompts(at_step[value].to_numpy(), n_boot, seed)
            interval = "bootstrap over prompts (one seed)"
        rows.append({"step": int(step), "mean": mean, "low": low, "high": high,
                     "n_prompts": int(at_step["prompt"].nunique()), "n_seeds": len(seed_means), "interval": interval})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def paired_differential(per_prompt_drift: pd.DataFrame, em: str, control: str, n_boot: int = 1000,
                        seed: int = 0) -> pd.DataFrame:
    """EM-minus-control drift per step. One seed in each condition: per-prompt differences (paired by
    prompt), bootstrapped over prompts. Several seeds: each run's mean drift, EM seeds against control
    seeds with the seed-pair null's t interval (:func:`seed_differential_test`)."""
    em_rows = per_prompt_drift[per_prompt_drift["condition"] == em]
    control_rows = per_prompt_drift[per_prompt_drift["condition"] == control]
    steps = sorted(set(em_rows["step"]) & set(control_rows["step"]))
    if em_rows["seed"].nunique() + control_rows["seed"].nunique() >= 3:
        rows = []
        for step in steps:
            em_means = em_rows[em_rows["step"] == step].groupby("seed")["drift"].mean().to_numpy()
            control_means = control_rows[control_rows["step"] == step].groupby("seed")["drift"].mean().to_numpy()
            test = seed_differential_test(em_means[:, None], control_means[:, None], level=LEVEL)
            rows.append({"step": int(step), "mean": float(test["differential"][0]), "low": float(test["ci_low"][0]),
                         "high": float(test["ci_high"][0]), "n_prompts": int(em_rows["prompt"].nunique()),
                         "n_seeds": len(em_means) + len(control_means),
                         "interval": f"t interval, {len(em_means)} EM vs {len(control_means)} control seeds"})
        return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    paired = em_rows.drop(columns=["condition", "seed"]).merge(
        control_rows.drop(columns=["condition", "seed"]), on=["step", "trait", "prompt"], suffixes=("_em", "_control"))
    paired = paired.assign(seed=0, differential=paired["drift_em"] - paired["drift_control"])
    return summarise(paired, "differential", n_boot=n_boot, seed=seed)


@dataclass
class TraitViews:
    """What the explorer draws for one trait and a set of conditions."""

    raw: pd.DataFrame                 # condition, seed, step, value (mean over prompts)
    per_prompt_drift: pd.DataFrame    # condition, seed, step, trait, prompt, drift
    drift: dict[str, pd.DataFrame]    # condition -> summarise() table
    differential: dict[tuple[str, str], pd.DataFrame]  # (em, control) -> paired_differential() table


def trait_views(projections: pd.DataFrame, trait: str, conditions, pairs: dict[str, str],
                n_boot: int = 1000, seed: int = 0) -> TraitViews:
    """The explorer's numbers for ``trait``: raw means, per-prompt drift with its intervals, and the
    paired differential of every EM/control pair whose two conditions are both chosen."""
    table = with_seed(projections)
    table = table[(table["trait"] == trait) & table["condition"].isin(list(conditions))]
    if table.empty:
        raise KeyError(f"trait_views: no projection of {trait!r} for conditions {list(conditions)}")
    per_prompt = drift(table, per_prompt=True)
    return TraitViews(
        raw=mean_projection_table(table),
        per_prompt_drift=per_prompt,
        drift={condition: summarise(rows, "drift", n_boot=n_boot, seed=seed)
               for condition, rows in per_prompt.groupby("condition", sort=True)},
        differential={(em, control): paired_differential(per_prompt, em, control, n_boot=n_boot, seed=seed)
                      for em, control in pairs.items() if em in set(conditions) and control in set(conditions)},
    )


def default_trait(projections: pd.DataFrame, pairs: dict[str, str]) -> str:
    """The trait whose mean EM-minus-control drift is largest in size at the last shared step (the
    first trait by name without a pair): the explorer opens on something that moved."""
    table = with_seed(projections)
    traits = sorted(table["trait"].unique())
    pair = next(((em, control) for em, control in pairs.items() if {em, control} <= set(table["condition"])), None)
    if pair is None:
        return traits[0]
    means = drift(table[table["condition"].isin(pair)]).groupby(["condition", "step", "trait"])["drift"].mean()
    steps = set(means[pair[0]].index.get_level_values("step")) & set(means[pair[1]].index.get_level_values("step"))
    last = max(steps)
    shift = (means[pair[0]].loc[last] - means[pair[1]].loc[last]).abs()
    return str(shift.idxmax()) if shift.notna().any() else traits[0]


def checkpoint_details(views: TraitViews, step: int, answers: pd.DataFrame | None, n: int = 3) -> pd.DataFrame:
    """At ``step``: per condition, the projection prompts that drifted most on this trait, and (with
    ``answers``, judged behaviour answers) the lowest-aligned answers behind the behaviour measure."""
    rows = []
    # Step 0 is the base model itself: no prompt has drifted there.
    at_step = views.per_prompt_drift[(views.per_prompt_drift["step"] == step) & (step != 0)]
    for condition, group in at_step.groupby("condition", sort=True):
        by_prompt = group.groupby("prompt")["drift"].mean()
        for prompt in by_prompt.abs().sort_values(ascending=False).index[:n]:
            rows.append({"condition": condition, "what": "projection prompt", "item": f"prompt {prompt}",
                         "text": "", "value": f"drift {by_prompt[prompt]:+.3g}"})
    if answers is not None and len(answers):
        # Step 0 is the base model, sampled once for every condition (condition "base").
        shown = {*views.drift, "base"} if step == 0 else set(views.drift)
        chosen = answers[answers["condition"].isin(shown) & (answers["step"] == step)]
        for condition, group in chosen.groupby("condition", sort=True):
            for _, answer in group.sort_values("aligned", na_position="last").head(n).iterrows():
                rows.append({"condition": condition, "what": "answer", "item": str(answer["question"]),
                             "text": str(answer["answer"]),
                             "value": f"aligned {answer['aligned']:.0f}, coherent {answer['coherent']:.0f}"})
    return pd.DataFrame(rows, columns=["condition", "what", "item", "text", "value"])


def scored_answers(config, conditions) -> pd.DataFrame | None:
    """Notebook 04's judged free-form answers of ``conditions`` (through its loader), or None when the
    run has none."""
    from .. import behavior
    from ..behavior.judging import merge_scores

    try:
        outputs = behavior.load_outputs(config.run_dir, config.behavior, list(conditions))
    except FileNotFoundError:
        return None
    return merge_scores(outputs.answers, outputs.scores)


def _draw(views: TraitViews, pca, trait: str, step: int, colours: dict[str, str]):
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    # Constrained layout: tight_layout raised (ValueError) on the inline backend for some redraws.
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.2), layout="constrained")
    raw_ax, drift_ax, diff_ax, pca_ax = axes.ravel()
    for (condition, trail_seed), rows in views.raw.groupby(["condition", "seed"], sort=True):
        raw_ax.plot(rows["step"], rows["value"], marker="o", ms=3, color=colours[condition],
                    label=f"{condition} (seed {trail_seed})")
    raw_ax.set(title="raw projection (mean over prompts)", xlabel="training step", ylabel="projection")
    for condition, table in views.drift.items():
        drift_ax.plot(table["step"], table["mean"], marker="o", ms=3, color=colours[condition], label=condition)
        drift_ax.fill_between(table["step"], table["low"], table["high"], color=colours[condition], alpha=0.2)
    interval = next(iter(views.drift.values()))["interval"].iloc[-1] if views.drift else ""
    drift_ax.set(title=f"drift from the base model, per prompt\n95% CI: {interval}", xlabel="training step",
                 ylabel="drift")
    for (em, control), table in views.differential.items():
        diff_ax.plot(table["step"], table["mean"], marker="o", ms=3, color=colours[em], label=f"{em} - {control}")
        diff_ax.fill_between(table["step"], table["low"], table["high"], color=colours[em], alpha=0.2)
    if views.differential:
        table = next(iter(views.differential.values()))
        paired = "per-seed mean drifts" if table["n_seeds"].max() > 2 else "drift paired by prompt"
        diff_ax.set_title(f"EM minus control, {paired}\n95% CI: {table['interval'].iloc[-1]}")
    else:
        diff_ax.set_title("EM minus control: choose an EM condition and its control")
    diff_ax.set(xlabel="training step", ylabel="differential drift")
    for ax in (drift_ax, diff_ax):
        ax.axhline(0, color="grey", lw=0.8)
    # Projections of a small model are small numbers: a shared exponent keeps tick labels apart.
    pca_ax.ticklabel_format(style="sci", scilimits=(-3, 4), useMathText=True)
    for ax in (raw_ax, drift_ax, diff_ax):
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4), useMathText=True)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.axvline(step, color="black", lw=0.8, ls=":")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    coordinates = pca.coordinates[pca.coordinates["condition"].isin(views.drift)]
    for (condition, trail_seed), rows in coordinates.groupby(["condition", "seed"], sort=True):
        rows = rows.sort_values("step")
        pca_ax.plot(rows["pc1"], rows["pc2"], marker="o", ms=3, color=colours[condition], alpha=0.8)
        here = rows[rows["step"] == step]
        pca_ax.scatter(here["pc1"], here["pc2"], s=140, facecolors="none", edgecolors="black", zorder=3)
    ratio = pca.explained_variance_ratio
    pca_ax.set(title=f"trait-space PCA of every checkpoint (ringed: step {step})",
               xlabel=f"PC1 ({ratio[0]:.0%})", ylabel=f"PC2 ({ratio[1]:.0%})" if len(ratio) > 1 else "PC2")
    fig.suptitle(trait)
    return fig


def trait_explorer(source, config=None, n_boot: int = 1000):
    """The explorer widget. ``source``: notebook 05's inputs (projections and EM/control pairs) or a
    projection table alone (the built-in pairs among its conditions); ``config`` adds notebook 04's
    answers to the table of the chosen checkpoint."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    import seaborn as sns
    from IPython.display import HTML, display

    if isinstance(source, pd.DataFrame):  # the built-in EM/control pairs among its conditions
        from ..em_data.registry import resolve_pairs

        projections = with_seed(source)
        pairs = resolve_pairs(None, set(projections["condition"]))
    else:
        projections, pairs = all_seeds(source), dict(source.main.pairs)
    traits = sorted(projections["trait"].unique())
    conditions = sorted(projections["condition"].unique())
    steps = sorted(int(step) for step in projections["step"].unique())
    answers = scored_answers(config, conditions) if config is not None else None
    colours = dict(zip(conditions, sns.color_palette("colorblind", len(conditions)).as_hex()))
    pca = trajectory_pca(mean_projection_table(projections), n_components=2)

    trait_box = widgets.Combobox(value=default_trait(projections, pairs), options=traits, ensure_option=True,
                                 placeholder=f"search {len(traits)} traits", description="trait")
    condition_box = widgets.SelectMultiple(options=conditions, value=tuple(conditions), description="conditions")
    step_slider = widgets.SelectionSlider(options=steps, value=steps[-1], description="checkpoint",
                                          continuous_update=False)
    for widget, name in ((trait_box, "trait"), (condition_box, "conditions"), (step_slider, "step")):
        widget.add_class(f"ts-explorer-{name}")
    details = widgets.Output()
    details.add_class("ts-explorer-details")

    def draw(trait, chosen, step):
        if trait not in traits or not chosen:
            print("Type a trait name from the list and choose at least one condition.")
            return
        views = trait_views(projections, trait, chosen, pairs, n_boot=n_boot)
        _draw(views, pca, trait, step, colours)
        plt.show()
        details.clear_output()
        with details:
            table = checkpoint_details(views, step, answers)
            display(HTML(f"<b>At step {step}</b>" + table.to_html(index=False, escape=True)))

    plot = widgets.interactive_output(draw, {"trait": trait_box, "chosen": condition_box, "step": step_slider})
    plot.add_class("ts-explorer-plot")
    explorer = widgets.VBox([widgets.HBox([widgets.VBox([trait_box, step_slider]), condition_box]), plot, details])
    explorer.add_class("ts-explorer")
    return explorer
