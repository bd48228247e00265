"""Notebook 09's figures, drawn from the stage's tables and saved as files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.plots import save_figure, set_style


def plot_quality(quality: pd.DataFrame):
    """Variance explained and dead-feature share per set of activations (base held-out mix, base and
    each checkpoint on the evaluation answers)."""
    import matplotlib.pyplot as plt

    set_style()
    labels = quality["activations"].to_list()
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.32 * len(labels) + 1.6), sharey=True)
    for ax, column, title in zip(axes, ("variance_explained", "dead_share"),
                                 ("fraction of variance explained", "dead-feature share (no firing on these tokens)")):
        ax.barh(labels, quality[column].to_numpy(dtype=float), color=["C2" if "base" in label else "C0" for label in labels])
        ax.set(title=title, xlim=(0, 1))
        ax.invert_yaxis()
    fig.tight_layout()
    return fig


def plot_top_features(tested: pd.DataFrame, title: str):
    """EM-minus-control change of the top features with its t interval across seeds."""
    import matplotlib.pyplot as plt

    set_style()
    rows = tested.iloc[::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.34 * len(rows) + 1.4))
    values = rows["differential"].to_numpy(dtype=float)
    errors = np.vstack([values - rows["ci_low"].to_numpy(dtype=float), rows["ci_high"].to_numpy(dtype=float) - values])
    ax.barh([f"feature {int(f)}" for f in rows["feature"]], values, color=np.where(values >= 0, "C3", "C0"),
            xerr=np.where(np.isfinite(errors), errors, 0), capsize=2)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set(title=title, xlabel="EM minus control change from base (95% t interval across seeds)")
    fig.tight_layout()
    return fig


def plot_cosines(cosines: pd.DataFrame, features, references, chance: float):
    """Cosines of the top features' decoder directions with the closest trait vectors and the EM direction."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    set_style()
    table = (cosines[cosines["feature"].isin(features) & cosines["reference"].isin(references)]
             .pivot(index="feature", columns="reference", values="cosine").reindex(index=features, columns=references))
    fig, ax = plt.subplots(figsize=(0.55 * len(references) + 2.5, 0.4 * len(features) + 1.8))
    sns.heatmap(table, center=0, cmap="vlag", annot=len(references) <= 14, fmt=".2f", ax=ax,
                cbar_kws={"label": "cosine"})
    ax.set(title=f"decoder direction vs trait vectors (|cos| > {chance:.2f} beats 95% of random directions)",
           xlabel="", ylabel="feature")
    fig.tight_layout()
    return fig


def plot_monitor(results: pd.DataFrame):
    """Held-out-dataset AUROC of each feature set (logistic), SAE baseline highlighted."""
    import matplotlib.pyplot as plt

    set_style()
    rows = results[(results["held_out"] == "dataset") & (results["model"] == "logistic")].iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.36 * len(rows) + 1.5))
    values = rows["auroc"].to_numpy(dtype=float)
    errors = np.vstack([values - rows["auroc_low"].to_numpy(dtype=float), rows["auroc_high"].to_numpy(dtype=float) - values])
    ax.barh(rows["features"], np.nan_to_num(values), xerr=np.where(np.isfinite(errors), errors, 0), capsize=2,
            color=np.where(rows["source"].str.startswith("SAE"), "C3", "C0"))
    ax.axvline(0.5, color="black", linewidth=0.8, linestyle=":")
    ax.set(xlim=(0, 1), xlabel="AUROC, held-out dataset (logistic; 95% interval resampling runs)",
           title="Monitor: trait sets (notebook 05) and the SAE baseline, same folds")
    fig.tight_layout()
    return fig


def save_sae_figures(folder: Path, tables: dict[str, pd.DataFrame], chance: float, coherence_threshold: float) -> dict[str, Path]:
    """Every figure the tables allow, saved under ``folder``; name -> path."""
    import matplotlib.pyplot as plt

    from ..steer.plots import plot_sweep

    figures = {}

    def keep(name, fig):
        figures[name] = save_figure(fig, Path(folder) / f"{name}.png")
        plt.close(fig)

    if len(tables["quality"]):
        keep("quality", plot_quality(tables["quality"]))
    for measure in ("mean_activation", "frequency"):
        top = tables[f"top_{measure}"]
        if len(top):
            first = top[top["em"] == top["em"].iloc[0]]
            keep(f"top_{measure}", plot_top_features(first, f"{first['em'].iloc[0]}: top features by {measure} change"))
    cosines = tables["cosines"]
    top = tables["top_mean_activation"]
    if len(cosines) and len(top):
        features = [int(f) for f in top["feature"].drop_duplicates()]
        traits = (cosines[(cosines["reference"] != "em_direction") & cosines["feature"].isin(features)]
                  .assign(size=lambda t: t["cosine"].abs()).sort_values("size", ascending=False)["reference"]
                  .drop_duplicates().head(10).to_list())
        references = traits + (["em_direction"] if (cosines["reference"] == "em_direction").any() else [])
        keep("cosines", plot_cosines(cosines, features, references, chance))
    if len(tables["sweep"]):
        keep("sweep", plot_sweep(tables["sweep"], coherence_threshold))
    if len(tables["monitor_results"]) and tables["monitor_results"]["auroc"].notna().any():
        keep("monitor", plot_monitor(tables["monitor_results"]))
    return figures
