"""Notebook 02's figures: held-out separation by layer and per trait (both held-out measures, and
the control contrasts), held-out projections of the best and worst traits, the trait-by-trait
cosine map, and the traits' cosines with the Assistant Axis.

Each function saves its figure under a fixed name in the stage folder when one is given (so the
stage owns its files) and returns it for display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.plots import save_figure
from .report import trait_metadata
from .vectors import (AXIS_COSINES_FIGURE, COSINE_FIGURE, HELDOUT_PROJECTIONS_FIGURE, SEPARATION_BY_LAYER_FIGURE,
                      SEPARATION_PER_TRAIT_FIGURE, TraitVectors)


def _save(fig, folder: str | Path | None, name: str):
    if folder is not None:
        save_figure(fig, Path(folder) / name)
    return fig


def plot_separation_by_layer(separation: pd.DataFrame, shared_layer: int, folder: str | Path | None = None):
    """Left: AUROC on held-out questions by layer (mean over traits, the Assistant Axis, and the mean
    over control contrasts when there are any). Right: mean Cohen's d by layer. The dashed line marks
    the layer the vectors use."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    traits = separation[separation["kind"].isin(["persona", "alignment"])]
    by_layer = traits.groupby("layer")[["auroc", "cohens_d"]].mean().reset_index()
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    sns.lineplot(data=by_layer, x="layer", y="auroc", marker="o", ax=axes[0], label="traits, mean AUROC")
    sns.lineplot(data=separation[separation["kind"] == "axis"], x="layer", y="auroc", marker="s", ax=axes[0],
                 label="Assistant Axis AUROC")
    controls = separation[separation["kind"] == "control"]
    if len(controls):
        sns.lineplot(data=controls.groupby("layer", as_index=False)["auroc"].mean(), x="layer", y="auroc",
                     marker="^", ax=axes[0], color="grey", label="controls, mean AUROC")
    axes[0].axvline(shared_layer, ls="--", color="grey")
    axes[0].set(title="Held-out separation by layer", ylabel="AUROC (0.5 = chance)", ylim=(0.4, 1.02))
    sns.lineplot(data=by_layer, x="layer", y="cohens_d", marker="o", ax=axes[1], color="C2")
    axes[1].axvline(shared_layer, ls="--", color="grey")
    axes[1].set(title="Held-out Cohen's d by layer (mean over traits)", ylabel="Cohen's d")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return _save(fig, folder, SEPARATION_BY_LAYER_FIGURE)


def plot_separation_per_trait(vectors: TraitVectors, threshold: float, folder: str | Path | None = None):
    """Left: histograms of the traits' AUROC on held-out questions and on held-out instructions
    (dashed: the threshold; dotted: the best control contrast's AUROC on each). Right: Cohen's d on
    held-out instructions (on held-out questions when there is a single pair) by trait family."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    traits = trait_metadata(vectors)
    long = pd.concat([traits.assign(heldout=label, auroc=traits[f"auroc_heldout_{key}"])
                      for key, label in (("questions", "held-out questions"), ("instructions", "held-out instructions"))])
    long = long.dropna(subset=["auroc"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    sns.histplot(data=long, x="auroc", hue="heldout", bins=20, binrange=(0, 1), element="step", ax=axes[0])
    axes[0].axvline(threshold, ls="--", color="grey")
    for index, key in enumerate(("questions", "instructions")):
        best = vectors.controls[f"auroc_heldout_{key}"].astype(float).max()
        if not np.isnan(best):
            axes[0].axvline(best, ls=":", color=f"C{index}")
    axes[0].set(title="AUROC per trait (dotted: best control)", xlabel="AUROC")
    key = "instructions" if traits["cohens_d_heldout_instructions"].notna().any() else "questions"
    by_category = traits.assign(category=traits["category"].fillna(traits["kind"]))  # alignment, or a folder's traits
    by_category = by_category.dropna(subset=[f"cohens_d_heldout_{key}"])
    if len(by_category):
        sns.boxplot(data=by_category, x="category", y=f"cohens_d_heldout_{key}", ax=axes[1], color="C0")
        axes[1].tick_params(axis="x", rotation=30)
    else:  # one held-out conversation a side: no spread, so no Cohen's d to draw
        axes[1].text(0.5, 0.5, "no Cohen's d: fewer than 2 held-out conversations a side", ha="center",
                     transform=axes[1].transAxes)
    axes[1].set(title=f"Cohen's d on held-out {key} by trait family", xlabel="", ylabel="Cohen's d")
    fig.tight_layout()
    return _save(fig, folder, SEPARATION_PER_TRAIT_FIGURE)


def plot_heldout_projections(projections: pd.DataFrame, vectors: TraitVectors, folder: str | Path | None = None):
    """Each held-out conversation projected on its trait's vector, for the four best and four worst
    separated traits (all traits when there are at most eight)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    ranked = trait_metadata(vectors).sort_values("auroc_heldout_questions", ascending=False)["trait"].tolist()
    shown = ranked[:4] + ranked[-4:] if len(ranked) > 8 else ranked
    fig, ax = plt.subplots(figsize=(12, 3.8))
    sns.stripplot(data=projections[projections["trait"].isin(shown)], x="trait", y="value", hue="side", order=shown,
                  dodge=True, ax=ax, size=5)
    ax.set(title="Held-out projections: best and worst separated traits", xlabel="", ylabel="projection")
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    return _save(fig, folder, HELDOUT_PROJECTIONS_FIGURE)


def plot_trait_cosines(cosines: pd.DataFrame, layer: int, folder: str | Path | None = None):
    """Clustered heatmap of the trait-by-trait cosines (labels shown up to 60 traits); returns the
    figure of the clustermap."""
    import seaborn as sns

    show_labels = len(cosines) <= 60
    grid = sns.clustermap(cosines, cmap="RdBu_r", vmin=-1, vmax=1, figsize=(12, 12) if len(cosines) > 20 else (7, 7),
                          xticklabels=show_labels, yticklabels=show_labels, method="average",
                          cbar_kws={"label": "cosine"})
    grid.fig.suptitle(f"Trait-by-trait cosine similarity at layer {layer}", y=1.01)
    return _save(grid.fig, folder, COSINE_FIGURE)


def plot_axis_cosines(vectors: TraitVectors, layer: int, folder: str | Path | None = None):
    """Bars of the traits most aligned with and most opposed to the Assistant Axis (up to 12 each)."""
    import matplotlib.pyplot as plt

    cosines = trait_metadata(vectors).set_index("trait")["cos_assistant_axis"].sort_values()
    k = min(12, len(cosines) // 2) or 1
    extremes = pd.concat([cosines.head(k), cosines.tail(k)]).drop_duplicates()
    fig, ax = plt.subplots(figsize=(8, max(3, 0.28 * len(extremes))))
    ax.barh(extremes.index, extremes.values, color=["C3" if value < 0 else "C0" for value in extremes.values])
    ax.axvline(0, color="black", lw=0.8)
    ax.set(title=f"Cosine of trait vectors with the Assistant Axis (layer {layer})", xlabel="cosine")
    fig.tight_layout()
    return _save(fig, folder, AXIS_COSINES_FIGURE)
