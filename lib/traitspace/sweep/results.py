"""A sweep's results: one table (a row per cell) and one figure, under ``outputs/sweeps/<name>/``.

Each row: the cell's axis values, its status, notebook time, the log of a failed run, and, where
notebook 01 ran, the final training loss of each condition (mean over its training seeds), read
through :func:`traitspace.finetune.load_outputs`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ..core.artifacts import atomic_path
from .spec import Sweep
from .submit import CellResult


def final_losses(result: CellResult) -> dict[str, float]:
    """``final_loss[<condition>]``: last logged training loss, mean over the condition's seeds."""
    if result.notebooks.get("01_finetune", {}).get("status") != "ok":
        return {}
    from ..finetune import load_outputs
    from ..finetune.data import condition_sources

    config = result.cell.config
    losses = load_outputs(config.run_dir, list(condition_sources(config.finetune))).losses
    if losses.empty:
        return {}
    last = losses.groupby(["condition", "seed"]).tail(1)
    return {f"final_loss[{condition}]": float(value) for condition, value in last.groupby("condition")["loss"].mean().items()}


def results_table(results: Sequence[CellResult]) -> pd.DataFrame:
    rows = []
    for result in results:
        seconds = [entry.get("seconds") for entry in result.notebooks.values() if entry.get("seconds") is not None]
        rows.append({
            "run": result.cell.name, **{key: str(value) for key, value in result.cell.values.items()},
            "status": result.status, "notebook_seconds": round(sum(seconds), 1) if seconds else None,
            **final_losses(result), "error": result.error, "log": str(result.log) if result.log else None,
            "run_dir": str(result.cell.config.run_dir),
        })
    return pd.DataFrame(rows)


def results_figure(table: pd.DataFrame, sweep: Sweep):
    """Notebook time per cell (colour: status) and, where fine-tuning ran, final loss per cell."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from ..core.plots import set_style

    set_style()
    loss_columns = [column for column in table.columns if column.startswith("final_loss[")]
    panels = 2 if loss_columns else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 0.45 * len(table) + 1.5), squeeze=False)
    sns.barplot(data=table.fillna({"notebook_seconds": 0}), y="run", x="notebook_seconds", hue="status",
                dodge=False, ax=axes[0, 0])
    axes[0, 0].set(xlabel="notebook time (s)", ylabel="", title=f"sweep {sweep.name}: runs")
    if loss_columns:
        long = table.melt(id_vars=["run"], value_vars=loss_columns, var_name="condition", value_name="final loss")
        long["condition"] = long["condition"].str.slice(len("final_loss["), -1)
        sns.barplot(data=long.dropna(), y="run", x="final loss", hue="condition", ax=axes[0, 1])
        axes[0, 1].set(ylabel="", title="final training loss (mean over seeds)")
        axes[0, 1].set_yticklabels([])
    fig.tight_layout()
    return fig


def write_results(results: Sequence[CellResult], sweep: Sweep) -> tuple[pd.DataFrame, Path, Path]:
    """Write ``results.csv`` and ``results.png`` into the sweep's folder (atomically)."""
    import matplotlib.pyplot as plt

    from ..core.plots import save_figure

    table = results_table(results)
    sweep.folder.mkdir(parents=True, exist_ok=True)
    table_path, figure_path = sweep.folder / "results.csv", sweep.folder / "results.png"
    with atomic_path(table_path) as temporary:
        table.to_csv(temporary, index=False)
    fig = results_figure(table, sweep)
    save_figure(fig, figure_path)
    plt.close(fig)
    return table, table_path, figure_path
