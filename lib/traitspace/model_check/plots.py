"""Notebook 00's figures: the per-layer profile of the two personas and a 2-D PCA of one layer.

Each function draws from a :class:`~.measure.PersonaContrast`, saves the figure under its fixed
name in the stage folder when one is given (so the stage owns its files), and returns it for display.
"""

from __future__ import annotations

from pathlib import Path

from ..core.plots import save_figure
from .measure import PersonaContrast

LAYER_PROFILE_FIGURE = "layer_norms.png"
PCA_FIGURE = "pca_middle_layer.png"


def plot_layer_profile(contrast: PersonaContrast, folder: str | Path | None = None):
    """Left: mean residual-stream norm per layer and persona. Right: the distance between the two
    personas' mean activations relative to the mean norm."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    sns.lineplot(data=contrast.norms, x="layer", y="mean_norm", hue="label", marker="o", ax=axes[0])
    axes[0].set(title="Residual-stream norm per layer", ylabel="mean L2 norm")
    sns.lineplot(data=contrast.separation, x="layer", y="relative_distance", marker="o", ax=axes[1], color="C2")
    axes[1].set(title="Distance between the two personas' means", ylabel="|mean A − mean B| / mean norm")
    fig.tight_layout()
    if folder is not None:
        save_figure(fig, Path(folder) / LAYER_PROFILE_FIGURE)
    return fig


def plot_pca(contrast: PersonaContrast, folder: str | Path | None = None):
    """Scatter of the middle layer's (persona, question) activations on their first two principal
    components, coloured by persona."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    sns.scatterplot(data=contrast.pca, x="pc1", y="pc2", hue="label", s=60, ax=ax)
    ax.set(title=f"Layer {contrast.middle_layer}: 2-D PCA of last-prompt-token activations",
           xlabel=f"PC1 ({contrast.explained[0]:.0%} of variance)", ylabel=f"PC2 ({contrast.explained[1]:.0%})")
    fig.tight_layout()
    if folder is not None:
        save_figure(fig, Path(folder) / PCA_FIGURE)
    return fig
