"""Notebook 08's figures, saved under ``realign/figures/``: the EM measures along the combined trail
(fine-tuning, then re-alignment) per benign set, and the per-trait recovery fractions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.plots import save_figure, set_style

MEASURE_LABELS = {
    "preference": "misalignment preference\n(change from base)",
    "fingerprint": "fingerprint\n(signed drift, key traits)",
    "em_direction": "EM-direction projection\n(change from base)",
    "em_rate": "EM rate\n(change from base)",
}
ROLE_COLOURS = {"em": "C3", "control": "C0"}
STATUS_COLOURS = {"returns": "C2", "persists": "C3", "undetermined": "0.6"}


def combined_trail_figure(measures: pd.DataFrame, pair: str):
    """Rows: measures; columns: benign sets; one line per (role, seed), the EM run red and its control
    blue; the dashed line marks where re-alignment starts (each trail's source step)."""
    import matplotlib.pyplot as plt

    rows = measures[measures["pair"] == pair]
    names = [name for name in MEASURE_LABELS if name in set(rows["measure"])]
    benign_sets = sorted(rows["benign"].unique())
    fig, axes = plt.subplots(len(names), len(benign_sets), figsize=(5.5 * len(benign_sets), 2.8 * len(names)),
                             squeeze=False, sharex="col")
    for row_index, name in enumerate(names):
        for column_index, benign in enumerate(benign_sets):
            ax = axes[row_index][column_index]
            panel = rows[(rows["measure"] == name) & (rows["benign"] == benign)]
            labelled = set()
            for (role, seed), line in panel.groupby(["role", "seed"], sort=True):
                line = line.sort_values("step")
                label = None if role in labelled else ("EM run" if role == "em" else "control run")
                labelled.add(role)
                ax.plot(line["step"], line["value"], marker="o", ms=3, color=ROLE_COLOURS.get(role, "C7"), alpha=0.8,
                        label=label)
                if line["low"].notna().any():
                    ax.fill_between(line["step"], line["low"], line["high"], color=ROLE_COLOURS.get(role, "C7"), alpha=0.08)
            for start in panel.loc[panel["realign_step"] == 0, "step"].unique():
                ax.axvline(start, color="0.4", ls="--", lw=0.8)
            ax.axhline(0, color="0.6", lw=0.6)
            if row_index == 0:
                data = panel["benign_data"].iloc[0] if len(panel) else ""
                ax.set_title(f"{pair} re-aligned on {benign}\n({data})", fontsize=10)
            if column_index == 0:
                ax.set_ylabel(MEASURE_LABELS[name], fontsize=9)
            if row_index == len(names) - 1:
                ax.set_xlabel("step: fine-tuning | re-alignment (dashed)")
            if row_index == 0 and column_index == 0:
                ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def recovery_figure(recovery: pd.DataFrame, pair: str, recovered_above: float):
    """Per benign set, each key trait's recovery fraction with its interval over seeds, coloured by
    whether it returns to base, stays shifted or is undetermined."""
    import matplotlib.pyplot as plt

    rows = recovery[recovery["pair"] == pair]
    benign_sets = sorted(rows["benign"].unique())
    n_traits = max((len(group) for _, group in rows.groupby("benign")), default=1)
    fig, axes = plt.subplots(1, len(benign_sets), figsize=(5.5 * len(benign_sets), 1.6 + 0.32 * n_traits),
                             squeeze=False, sharey=True)
    order = list(rows.groupby("trait")["before"].apply(lambda values: values.abs().mean()).sort_values().index)
    for ax, benign in zip(axes[0], benign_sets):
        panel = rows[rows["benign"] == benign].set_index("trait").reindex(order)
        positions = np.arange(len(panel))
        colours = [STATUS_COLOURS.get(status, "0.6") for status in panel["status"].fillna("undetermined")]
        ax.barh(positions, panel["recovery"], color=colours, alpha=0.85)
        if panel["recovery_low"].notna().any():
            ax.errorbar(panel["recovery"], positions, fmt="none", ecolor="black", capsize=2, lw=1,
                        xerr=[(panel["recovery"] - panel["recovery_low"]).fillna(0),
                              (panel["recovery_high"] - panel["recovery"]).fillna(0)])
        ax.set_yticks(positions, order)
        for x, style in ((0, "-"), (1, "-"), (recovered_above, ":")):
            ax.axvline(x, color="0.4", lw=0.8, ls=style)
        n_seeds = int(panel["n_seeds"].max()) if panel["n_seeds"].notna().any() else 0
        ax.set_title(f"{pair}, {benign}: EM-minus-control shift\n({n_seeds} seed{'s' if n_seeds != 1 else ''})", fontsize=10)
        ax.set_xlabel("recovery fraction (1 = back at base)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour) for colour in STATUS_COLOURS.values()]
    axes[0][-1].legend(handles, list(STATUS_COLOURS), fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def save_realign_figures(measures: pd.DataFrame, recovery: pd.DataFrame, folder: Path, recovered_above: float
                         ) -> dict[str, Path]:
    """Both figures per pair; returns figure name -> file."""
    import matplotlib.pyplot as plt

    set_style()
    figures = {}
    for pair in sorted(measures["pair"].unique()) if len(measures) else []:
        for name, fig in ((f"combined_trail__{pair}", combined_trail_figure(measures, pair)),
                          (f"recovery__{pair}", recovery_figure(recovery, pair, recovered_above)
                           if len(recovery) and pair in set(recovery["pair"]) else None)):
            if fig is not None:
                figures[name] = save_figure(fig, Path(folder) / f"{name}.png")
                plt.close(fig)
    return figures
