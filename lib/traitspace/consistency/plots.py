"""Notebook 07's figures, drawn from the stage's tables and saved as files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.plots import save_figure, set_style


def _errors(values: pd.Series, low: pd.Series, high: pd.Series) -> np.ndarray:
    errors = np.vstack([values - low, high - values]).astype(float)
    return np.where(np.isfinite(errors), np.clip(errors, 0, None), 0)


def harm_vs_self_report(models: pd.DataFrame, em_conditions: set[str]):
    """Every fine-tuned model (condition x training seed) a point: harmfulness against the change of its
    misaligned self-report from the base model, both with intervals; EM datasets filled, controls open."""
    import matplotlib.pyplot as plt

    set_style()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    usable = models.dropna(subset=["harm", "self_report"])
    colours = dict(zip(sorted(usable["condition"].unique()), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4))
    for condition, rows in usable.groupby("condition"):
        filled = condition in em_conditions
        ax.errorbar(rows["harm"], rows["self_report"], xerr=_errors(rows["harm"], rows["harm_low"], rows["harm_high"]),
                    yerr=_errors(rows["self_report"], rows["self_report_low"], rows["self_report_high"]), fmt="o",
                    capsize=2, color=colours[condition], markerfacecolor=colours[condition] if filled else "white",
                    label=condition)
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("harmfulness (change from the base model)")
    ax.set_ylabel("misaligned self-report (change from base)")
    ax.set_title("Harm vs self-report per fine-tuned model" if len(usable) else
                 "Harm vs self-report: no model with both measures")
    if len(usable):
        ax.legend(fontsize=8, loc="best")
    return fig


def probe_layers(sweep: pd.DataFrame):
    """AUROC by layer for each probe (panel): colour = method, line style = checkpoint; the grouped-bootstrap
    band is drawn for the probe itself only (the baselines' bands would hide the lines)."""
    import matplotlib.pyplot as plt

    set_style()
    probes = list(dict.fromkeys(sweep["probe"]))
    methods = list(dict.fromkeys(sweep["method"]))
    checkpoints = list(dict.fromkeys(sweep["checkpoint"]))
    colours = dict(zip(methods, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    styles = dict(zip(checkpoints, ["-", "--", ":", "-."] * (len(checkpoints) // 4 + 1)))
    fig, axes = plt.subplots(1, len(probes), squeeze=False, figsize=(5.2 * len(probes), 3.6), sharey=True)
    for ax, probe in zip(axes[0], probes):
        rows = sweep[sweep["probe"] == probe]
        for (checkpoint, method), line in rows.groupby(["checkpoint", "method"], sort=False):
            line = line.sort_values("layer")
            ax.plot(line["layer"], line["auroc"], label=f"{checkpoint}: {method}", lw=1.2, color=colours[method],
                    ls=styles[checkpoint])
            if method == "probe":
                ax.fill_between(line["layer"], line["low"], line["high"], alpha=0.1, color=colours[method])
        ax.axhline(0.5, color="grey", ls="--", lw=0.8)
        ax.set_title(f"{probe} probe (grouped CV)")
        ax.set_xlabel("layer")
        ax.set_ylabel("AUROC")
        ax.legend(fontsize=6)
    return fig


def transfer_heatmap(transfer: pd.DataFrame):
    import matplotlib.pyplot as plt
    import seaborn as sns

    set_style()
    probes = list(dict.fromkeys(transfer["probe"]))
    fig, axes = plt.subplots(1, len(probes), squeeze=False, figsize=(4.8 * len(probes), 4.0))
    for ax, probe in zip(axes[0], probes):
        matrix = transfer[transfer["probe"] == probe].pivot(index="train", columns="test", values="auroc")
        sns.heatmap(matrix, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", ax=ax, cbar=False)
        ax.set_title(f"{probe} probe: train -> test AUROC")
    return fig


def save_consistency_figures(folder: Path, models: pd.DataFrame, em_conditions: set[str], sweep: pd.DataFrame,
                             transfer: pd.DataFrame) -> dict[str, Path]:
    import matplotlib.pyplot as plt

    figures = {"harm_vs_self_report": harm_vs_self_report(models, em_conditions)}
    if not sweep.empty:
        figures["probe_layers"] = probe_layers(sweep)
    if not transfer.empty:
        figures["probe_transfer"] = transfer_heatmap(transfer)
    saved = {name: save_figure(fig, folder / f"{name}.png") for name, fig in figures.items()}
    for fig in figures.values():
        plt.close(fig)
    return saved
