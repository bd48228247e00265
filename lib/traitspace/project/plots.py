"""Notebook 03's figures, drawn from a :class:`~traitspace.project.analysis.ProjectionAnalysis`
with the shared style of :mod:`traitspace.core.plots` and saved under ``projections/figures/``."""

from __future__ import annotations

from pathlib import Path

from ..core.plots import differential_heatmap, pca_trajectory, save_figure, top_shift_bars, trajectory_lines
from .analysis import PairAnalysis, ProjectionAnalysis


def pair_heatmap(pair: PairAnalysis, top_k: int):
    """Differential drift over all steps of the 2k traits that moved most by the final step."""
    shown = list(pair.top_shifts.head(2 * top_k)["trait"])
    return differential_heatmap(pair.differential, shown,
                                title=f"{pair.em} minus {pair.control}: drift of the most-moved traits")


def pair_top_shifts(pair: PairAnalysis, top_k: int):
    """Final-step differential (mean over seeds) of the k largest increases and decreases, with the
    t interval across seeds (none with one seed)."""
    if pair.testable:
        xlabel = f"EM - control drift, 95% interval across {pair.n_seeds} seeds (* beats the seed-pair null, BH q < 0.05)"
    else:
        xlabel = "EM - control drift of one pair of runs (one seed: no interval, no test)"
    return top_shift_bars(pair.top_shifts, top_k, title=f"{pair.em} vs {pair.control} at step {pair.final_step}",
                          xlabel=xlabel)


def assistant_axis_figure(axis):
    """One line per trail (colour: condition, style: seed); the seeds' spread is the yardstick."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=axis, x="step", y="projection", hue="condition", style="seed", marker="o", ax=ax)
    ax.set(title="Assistant Axis over training (one line per training seed)", xlabel="training step",
           ylabel="mean projection on the Assistant Axis")
    fig.tight_layout()
    return fig


def pca_figure(analysis: ProjectionAnalysis):
    return pca_trajectory(analysis.pca.coordinates, analysis.pca.explained_variance_ratio)


def decomposition_figure(pair: PairAnalysis):
    long = pair.decomposition.melt(id_vars="step", value_vars=["shared_norm", "specific_norm"], var_name="component",
                                   value_name="L2 norm")
    return trajectory_lines(long, "step", "L2 norm", "component", f"{pair.em} vs {pair.control}: shared and specific drift",
                            "L2 norm over traits")


def projection_figures(analysis: ProjectionAnalysis, top_k: int) -> dict[str, object]:
    """Every figure of notebook 03 by file stem, in the notebook's order."""
    figures = {}
    for pair in analysis.pairs.values():
        figures[f"differential_heatmap__{pair.em}"] = pair_heatmap(pair, top_k)
        figures[f"top_shifts__{pair.em}"] = pair_top_shifts(pair, top_k)
    if analysis.axis is not None:
        figures["assistant_axis"] = assistant_axis_figure(analysis.axis)
    figures["pca_trajectory"] = pca_figure(analysis)
    for pair in analysis.pairs.values():
        figures[f"decomposition__{pair.em}"] = decomposition_figure(pair)
    return figures


def save_projection_figures(analysis: ProjectionAnalysis, folder: str | Path, top_k: int) -> dict[str, Path]:
    """Draw, save (PNG) and close every figure; returns {stem: path}."""
    import matplotlib.pyplot as plt

    from ..core.plots import set_style

    set_style()
    saved = {}
    for stem, fig in projection_figures(analysis, top_k).items():
        saved[stem] = save_figure(fig, Path(folder) / f"{stem}.png")
        plt.close(fig)  # the notebook shows the saved files; open figures would be drawn twice
    return saved
