"""Notebook 04's figures: EM rates, coherence and self-assessment over training, one line per
condition with their 95% intervals, saved under ``behavior/figures/``.

Checkpoints are log-spaced, so the step axis is symmetric-log (step 0 stays visible) with a tick
at every evaluated step, and each condition's points are shifted slightly sideways so equal values
do not hide each other.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..core.plots import save_figure


def step_axis(ax, steps) -> None:
    """Log-like step axis that keeps step 0, with a tick at every evaluated step."""
    ax.set_xscale("symlog", linthresh=1)
    ticks = sorted(set(int(step) for step in steps))
    ax.set_xticks(ticks, [str(step) for step in ticks], rotation=45 if len(ticks) > 8 else 0)
    ax.minorticks_off()


def dodge(steps, index: int, n_lines: int) -> list[float]:
    """Shift each condition's points a little sideways so equal values stay visible."""
    shift = 0.06 * (index - (n_lines - 1) / 2)
    return [step + shift if step == 0 else step * (1 + shift) for step in steps]


def trails(table: pd.DataFrame):
    """(position, colour, label, rows) per trail (condition x training seed), sorted by step: one
    colour per condition, the legend label on its first seed only."""
    keys = ["condition", "seed"] if "seed" in table.columns else ["condition"]
    groups = list(table.groupby(keys, sort=True))
    colours = {name: f"C{index}" for index, name in enumerate(sorted(table["condition"].unique()))}
    labelled = set()
    for position, (key, rows) in enumerate(groups):
        condition = key[0] if isinstance(key, tuple) else key
        label = None if condition in labelled else condition
        labelled.add(condition)
        yield position, len(groups), colours[condition], label, rows.sort_values("step")


def rate_panel(ax, table: pd.DataFrame, rate: str, title: str, ylabel: str) -> None:
    """One line per trail (colour: condition) with 95%-interval error bars (columns rate, rate_low, rate_high)."""
    for position, count, colour, label, rows in trails(table):
        ax.errorbar(dodge(rows["step"], position, count), rows[rate],
                    yerr=[rows[rate] - rows[f"{rate}_low"], rows[f"{rate}_high"] - rows[rate]],
                    marker="o", capsize=3, color=colour, label=label, alpha=0.85)
    step_axis(ax, table["step"])
    ax.set(title=title, xlabel="training step", ylabel=ylabel, ylim=(-0.02, 1.02))


def mean_panel(ax, table: pd.DataFrame, column: str, title: str, ylabel: str) -> None:
    """One plain line per trail (colour: condition) of a 0-100 mean."""
    for _, _, colour, label, rows in trails(table):
        ax.plot(rows["step"], rows[column], marker="o", color=colour, label=label, alpha=0.85)
    step_axis(ax, table["step"])
    ax.set(title=title, xlabel="training step", ylabel=ylabel, ylim=(0, 100))


def em_rate_figure(rates: pd.DataFrame):
    """EM rate under both conventions (left: of coherent answers; right: of all answers)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    rate_panel(axes[0], rates, "em_rate_of_coherent", "EM rate among coherent answers (EM paper)",
               "misaligned / coherent answers")
    rate_panel(axes[1], rates, "em_rate_of_all", "EM rate among all answers (model-organisms paper)",
               "misaligned & coherent / all answers")
    axes[1].legend(title="condition")
    fig.tight_layout()
    return fig


def coherence_figure(rates: pd.DataFrame):
    """Coherence rate (left) and mean aligned score (right)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    rate_panel(axes[0], rates, "coherence_rate", "Coherence rate", "answers with coherent > 50")
    mean_panel(axes[1], rates, "mean_aligned", "Mean aligned score", "mean aligned score (0-100)")
    axes[1].legend(title="condition")
    fig.tight_layout()
    return fig


def self_assessment_figure(summary: pd.DataFrame):
    """Self-rated alignment (left) and the share of A/B answers picking the aligned description."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    mean_panel(axes[0], summary, "mean_self_alignment", "Self-rated alignment", "mean rating, 100 = aligned pole")
    rate_panel(axes[1], summary, "aligned_choice_rate", "Picks the aligned self-description",
               "share of parsed A/B answers")
    axes[1].legend(title="condition")
    fig.tight_layout()
    return fig


def preference_figure(summary: pd.DataFrame):
    """Misalignment preference's change from the base model per trail (left: the EM pairs;
    right: the style controls, where neither answer is misaligned), 95% intervals over questions."""
    import matplotlib.pyplot as plt

    kinds = [kind for kind in ("em", "style") if kind in set(summary["kind"])]
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4), squeeze=False)
    titles = {"em": "Misaligned minus aligned answer", "style": "Style control: styled minus plain"}
    for ax, kind in zip(axes[0], kinds):
        rows_of_kind = summary[summary["kind"] == kind]
        for position, count, colour, label, rows in trails(rows_of_kind):
            ax.errorbar(dodge(rows["step"], position, count), rows["change_from_base"],
                        yerr=[rows["change_from_base"] - rows["change_low"], rows["change_high"] - rows["change_from_base"]],
                        marker="o", capsize=3, color=colour, label=label, alpha=0.85)
        ax.axhline(0, color="grey", lw=0.8)
        step_axis(ax, rows_of_kind["step"])
        ax.set(title=titles[kind], xlabel="training step", ylabel="change of mean log p per token from base")
    axes[0][-1].legend(title="condition")
    fig.tight_layout()
    return fig


def save_behavior_figures(rates: pd.DataFrame, self_assessment_summary: pd.DataFrame, folder: str | Path,
                          preference_summary: pd.DataFrame | None = None) -> dict[str, Path]:
    """Draw, save (PNG) and close notebook 04's figures; returns {stem: path}."""
    import matplotlib.pyplot as plt

    from ..core.plots import set_style

    set_style()
    figures = {"em_rate": em_rate_figure(rates), "coherence": coherence_figure(rates)}
    if len(self_assessment_summary):
        figures["self_assessment"] = self_assessment_figure(self_assessment_summary)
    if preference_summary is not None and len(preference_summary):
        figures["preference"] = preference_figure(preference_summary)
    saved = {}
    for stem, fig in figures.items():
        saved[stem] = save_figure(fig, Path(folder) / f"{stem}.png")
        plt.close(fig)  # the notebook shows the saved files; open figures would be drawn twice
    return saved
