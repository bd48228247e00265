"""One figure style for every notebook, and saving figures as files as well as showing them."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from .artifacts import atomic_path

STYLE = {"style": "whitegrid", "context": "notebook", "palette": "colorblind"}


def set_style() -> None:
    import seaborn as sns

    sns.set_theme(**STYLE)
    matplotlib.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight"})


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` atomically (PNG, or whatever the suffix says) and return the path."""
    path = Path(path)
    with atomic_path(path) as temporary:
        fig.savefig(temporary, format=path.suffix.lstrip(".") or "png")
    return path


# -- trait-space figures (notebooks 03 and 05, and the findings report) -------------------------
def differential_heatmap(differential_table, traits, title: str = "EM minus control drift"):
    """Heatmap traits x steps of the differential (columns step, trait, differential)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    grid = (differential_table[differential_table["trait"].isin(traits)]
            .pivot_table(index="trait", columns="step", values="differential").reindex(list(traits)))
    limit = float(abs(grid.to_numpy()).max()) or 1.0
    fig, ax = plt.subplots(figsize=(min(2 + 0.45 * grid.shape[1], 14), 1.5 + 0.28 * len(grid)))
    sns.heatmap(grid, cmap="RdBu_r", center=0, vmin=-limit, vmax=limit, ax=ax,
                cbar_kws={"label": "differential drift (projection units)"})
    ax.set(title=title, xlabel="training step", ylabel="")
    fig.tight_layout()
    return fig


def top_shift_bars(top_table, k: int, title: str,
                   xlabel: str = "differential drift, 95% bootstrap interval (* BH q < 0.05)"):
    """Horizontal bars of the k largest increases and the k largest decreases with their 95%
    intervals (columns trait, differential, ci_low, ci_high, significant); * marks BH q < 0.05.
    Intervals that are NaN (untestable, e.g. one seed) are drawn without error bars."""
    import matplotlib.pyplot as plt
    import pandas as pd

    ordered = top_table.sort_values("differential").reset_index(drop=True)
    shown = ordered if len(ordered) <= 2 * k else pd.concat([ordered.head(k), ordered.tail(k)], ignore_index=True)
    fig, ax = plt.subplots(figsize=(7, 1 + 0.3 * len(shown)))
    positions = range(len(shown))
    colors = ["C3" if value > 0 else "C0" for value in shown["differential"]]
    ax.barh(positions, shown["differential"], color=colors, alpha=0.85)
    if shown["ci_low"].notna().any():
        ax.errorbar(shown["differential"], positions,
                    xerr=[(shown["differential"] - shown["ci_low"]).fillna(0), (shown["ci_high"] - shown["differential"]).fillna(0)],
                    fmt="none", ecolor="black", capsize=2, lw=1)
    for position, (significant, high) in enumerate(zip(shown["significant"], shown["ci_high"])):
        if significant:
            ax.annotate("*", (high, position), xytext=(3, -4), textcoords="offset points")
    ax.set_yticks(list(positions), shown["trait"])
    ax.axvline(0, color="grey", lw=0.8)
    ax.set(title=title, xlabel=xlabel)
    fig.tight_layout()
    return fig


def trajectory_lines(table, x: str, y: str, hue: str, title: str, ylabel: str, band: tuple[str, str] | None = None):
    """Lines over training steps, one per ``hue`` value, with an optional interval band."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=table, x=x, y=y, hue=hue, marker="o", ax=ax)
    if band is not None:
        for index, (name, rows) in enumerate(table.groupby(hue, sort=False)):
            ax.fill_between(rows[x], rows[band[0]], rows[band[1]], alpha=0.15, color=f"C{index}")
    ax.set(title=title, xlabel="training step", ylabel=ylabel)
    fig.tight_layout()
    return fig


def pca_trajectory(coordinates, explained, title: str = "Trait-space trajectories (PCA)"):
    """2-D PCA path per trail (columns condition, [seed,] step, pc1, pc2; colour: condition, one line
    per seed), the first and last steps annotated."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    keys = ["condition", "seed"] if "seed" in coordinates.columns else ["condition"]
    colours = {name: f"C{index}" for index, name in enumerate(dict.fromkeys(coordinates["condition"]))}
    labelled = set()
    for key, rows in coordinates.groupby(keys, sort=False):
        condition = key[0] if isinstance(key, tuple) else key
        rows = rows.sort_values("step")
        ax.plot(rows["pc1"], rows["pc2"], marker="o", color=colours[condition], alpha=0.8,
                label=None if condition in labelled else condition)
        labelled.add(condition)
        for _, row in rows.iloc[[-1]].iterrows():
            ax.annotate(f"step {int(row['step'])}", (row["pc1"], row["pc2"]), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
    ax.set(title=title, xlabel=f"PC1 ({explained[0]:.0%} of variance)", ylabel=f"PC2 ({explained[1]:.0%})")
    ax.legend()
    fig.tight_layout()
    return fig
