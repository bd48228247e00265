"""Notebook 06's figures, drawn from the stage's tables and saved as files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.plots import save_figure, set_style

MEASURES = {
    "preference_change": ("preference change from alpha 0", "preference_change_low", "preference_change_high"),
    "em_rate_of_coherent": ("EM rate (of coherent)", "em_rate_of_coherent_low", "em_rate_of_coherent_high"),
    "coherence_rate": ("coherence rate", "coherence_rate_low", "coherence_rate_high"),
}


def _errorbar(ax, rows: pd.DataFrame, measure: str, **style) -> None:
    label, low, high = MEASURES[measure]
    rows = rows.sort_values("alpha")
    values = rows[measure].to_numpy(dtype=float)
    errors = np.vstack([values - rows[low].to_numpy(dtype=float), rows[high].to_numpy(dtype=float) - values])
    # A percentile bootstrap interval of a ratio (a rate over clustered answers) can exclude its own point
    # estimate on a handful of answers; matplotlib refuses negative error lengths, so such a side is drawn
    # at zero length (the tables keep the interval as computed).
    errors = np.clip(np.where(np.isfinite(errors), errors, 0), 0, None)
    ax.errorbar(rows["alpha"], values, yerr=errors, capsize=2, **style)


def plot_sweep(sweep: pd.DataFrame, coherence_threshold: float = float("nan")):
    """One column per steered direction, one row per measure that was measured; the random control
    (grey, dashed) in every panel; x marks an alpha where coherence fell below the threshold."""
    import matplotlib.pyplot as plt

    set_style()
    measures = [name for name in MEASURES if sweep[name].notna().any()]
    directions = [name for name in dict.fromkeys(sweep["direction"]) if (sweep["direction"] == name).any()
                  and sweep.loc[sweep["direction"] == name, "kind"].iloc[0] != "random"]
    control = sweep[sweep["kind"] == "random"]
    fig, axes = plt.subplots(len(measures), max(len(directions), 1), squeeze=False, sharex=True,
                             figsize=(3.2 * max(len(directions), 1) + 0.8, 2.6 * len(measures) + 0.6))
    for column, name in enumerate(directions):
        rows = sweep[sweep["direction"] == name]
        for row, measure in enumerate(measures):
            ax = axes[row, column]
            if len(control):
                _errorbar(ax, control, measure, color="0.55", linestyle="--", marker=".", label="random control")
            _errorbar(ax, rows, measure, color="C3" if rows["kind"].iloc[0] == "em_direction" else "C0", marker="o",
                      label=name)
            stopped = rows[rows["status"] == "stopped_here"]
            ax.scatter(stopped["alpha"], stopped[measure], marker="x", s=80, color="black", zorder=5,
                       label="coherence below threshold" if len(stopped) else None)
            if measure == "coherence_rate" and np.isfinite(coherence_threshold):
                ax.axhline(coherence_threshold, color="black", linewidth=0.8, linestyle=":")
            ax.axvline(0, color="0.8", linewidth=0.8)
            ax.set(title=name if row == 0 else "", ylabel=MEASURES[measure][0] if column == 0 else "",
                   xlabel="alpha (x typical residual norm)" if row == len(measures) - 1 else "")
            if row == 0 and column == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_ablation(ablation: pd.DataFrame):
    """Change of the misalignment preference from the unablated EM checkpoint, with 95% intervals."""
    import matplotlib.pyplot as plt

    set_style()
    rows = ablation[ablation["setting"] != "EM checkpoint"].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7, 1 + 0.4 * max(len(rows), 1)))
    values = rows["preference_change"].to_numpy(dtype=float)
    errors = np.vstack([values - rows["preference_change_low"].to_numpy(dtype=float),
                        rows["preference_change_high"].to_numpy(dtype=float) - values])
    colors = ["0.55" if name == "random" else ("C2" if level == "none" else "C3")
              for name, level in zip(rows["ablated"], rows["level"])]
    ax.barh(range(len(rows)), values, xerr=np.where(np.isfinite(errors), errors, 0), color=colors, alpha=0.85, capsize=3)
    ax.set_yticks(range(len(rows)), rows["setting"])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.xaxis.set_major_locator(plt.MaxNLocator(5))
    ax.set(xlabel="preference change from the unablated EM checkpoint (95% interval over questions)",
           title="Ablation on the EM checkpoint")
    fig.tight_layout()
    return fig


def plot_cosines(cosines: pd.DataFrame, top: int = 15):
    """The EM direction's largest signed cosines with trait vectors, the random null's 95% band shaded."""
    import matplotlib.pyplot as plt

    set_style()
    shown = cosines.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(6.5, 1 + 0.3 * len(shown)))
    ax.barh(range(len(shown)), shown["cosine"], color=["C3" if flag else "0.6" for flag in shown["beyond_null"]])
    band = float(cosines["null_abs_q95"].iloc[0]) if len(cosines) else 0.0
    ax.axvspan(-band, band, color="0.85", zorder=0, label="95% of random directions")
    ax.set_yticks(range(len(shown)), shown["name"])
    ax.set(xlabel="cosine with the EM direction", title="EM direction vs trait vectors")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_matrix(matrix: pd.DataFrame):
    """Cross-condition weight ablation: preference change for each adapter (rows) without each direction."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    set_style()
    grid = matrix.pivot(index="adapter_condition", columns="direction_from", values="preference_change")
    limit = float(np.nanmax(np.abs(grid.to_numpy()))) if grid.size else 1.0
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * grid.shape[1], 1.2 + 0.8 * grid.shape[0]))
    sns.heatmap(grid, annot=True, fmt=".3f", cmap="RdBu_r", center=0, vmin=-limit or -1, vmax=limit or 1, ax=ax,
                cbar_kws={"label": "preference change"})
    ax.set(xlabel="direction read on (ablated from the weights)", ylabel="adapter of", title="Weight ablation")
    fig.tight_layout()
    return fig


def save_steering_figures(folder: str | Path, sweep: pd.DataFrame, cosines: pd.DataFrame, ablation: pd.DataFrame,
                          matrix: pd.DataFrame, coherence_threshold: float) -> dict[str, Path]:
    """Every figure whose table has rows, as ``<folder>/<name>.png``."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    made = {}
    drawers = {"sweep": (sweep, lambda: plot_sweep(sweep, coherence_threshold)),
               "em_direction_cosines": (cosines, lambda: plot_cosines(cosines)),
               "ablation": (ablation, lambda: plot_ablation(ablation)),
               "ablation_matrix": (matrix, lambda: plot_matrix(matrix))}
    for name, (table, draw) in drawers.items():
        if table is None or not len(table):
            continue
        fig = draw()
        made[name] = save_figure(fig, folder / f"{name}.png")
        plt.close(fig)
    return made
