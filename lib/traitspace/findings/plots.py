"""Notebook 05's figures (the notebook saves them under ``findings/figures/``): the fingerprint
against behaviour over training, the monitors' held-out AUROC, and the trait-behaviour
correlations. Each function returns a matplotlib figure.
"""

from __future__ import annotations

import pandas as pd

from .timing import PairTiming


def plot_timing(timing: PairTiming, rate_column: str):
    """Top: the fingerprint, the control's own signed drift and the threshold; bottom: the EM rate
    of both conditions with Wilson intervals; dotted lines at the two crossings."""
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 6), sharex=True)
    scores = timing.fingerprint.scores
    top.plot(scores["step"], scores["fingerprint"], marker="o", color="C3", label="fingerprint (EM − control)")
    top.plot(scores["step"], scores["control_signed_drift"], marker=".", color="C7", label="control's own signed drift")
    top.axhline(timing.fingerprint.threshold, color="C3", ls="--", lw=1, label="threshold")
    if timing.fingerprint.crossing_step is not None:
        top.axvline(timing.fingerprint.crossing_step, color="C3", ls=":", lw=1)
    top.set(ylabel="signed drift over key traits", title="Fingerprint and behaviour over training")
    top.legend(fontsize=8)
    for index, (condition, rows) in enumerate(timing.rates.groupby("condition", sort=True)):
        rows = rows.sort_values("step")
        bottom.plot(rows["step"], rows[rate_column], marker="o", color=f"C{index}", label=condition)
        bottom.fill_between(rows["step"], rows[f"{rate_column}_low"], rows[f"{rate_column}_high"], alpha=0.15,
                            color=f"C{index}")
    if timing.behaviour_step is not None:
        bottom.axvline(timing.behaviour_step, color="C0", ls=":", lw=1)
    bottom.set(xlabel="training step", ylabel=f"{rate_column} (Wilson 95%)")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_monitor(results: pd.DataFrame):
    """Held-out AUROC with its interval per feature set and model, bars coloured by held-out scheme."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    shown = results.dropna(subset=["auroc"])
    fig, ax = plt.subplots(figsize=(8, 1 + 0.35 * len(shown)))
    held_out = shown["held_out"] if "held_out" in shown else pd.Series("", index=shown.index)
    labels = [f"{features} · {model}" + (f" · held out: {scheme}" if scheme else "")
              for features, model, scheme in zip(shown["features"], shown["model"], held_out)]
    palette = dict(zip(held_out.unique(), sns.color_palette()))
    ax.barh(labels, shown["auroc"], color=held_out.map(palette).tolist())
    ax.errorbar(shown["auroc"], range(len(shown)), xerr=[shown["auroc"] - shown["auroc_low"],
                                                          shown["auroc_high"] - shown["auroc"]],
                fmt="none", ecolor="black", capsize=2, lw=1)
    ax.axvline(0.5, color="grey", ls="--", lw=1)
    ax.set(xlim=(0, 1), xlabel="held-out AUROC (95% bootstrap)", title="Dangerous-checkpoint monitors")
    fig.tight_layout()
    return fig


def plot_spearman(spearman: pd.DataFrame, k: int = 15):
    """Heatmap of rho for the ``k`` traits most correlated with the first behaviour score."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    grid = spearman.pivot_table(index="trait", columns="behaviour", values="rho")
    first = grid.columns[0]
    chosen = grid[first].abs().sort_values(ascending=False).head(k).index
    fig, ax = plt.subplots(figsize=(6, 1 + 0.3 * len(chosen)))
    sns.heatmap(grid.loc[chosen], cmap="RdBu_r", center=0, vmin=-1, vmax=1, annot=True, fmt=".2f", ax=ax,
                cbar_kws={"label": "Spearman rho"})
    ax.set(title="Trait drift vs behaviour across checkpoints", xlabel="", ylabel="")
    fig.tight_layout()
    return fig
