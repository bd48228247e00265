"""What notebook 03 reads off the projection table, per EM/control pair and per condition.

- **Top shifts** (per pair): each trait's EM-minus-control differential at the final step with a
  95% bootstrap interval over prompts and a permutation test against the control, BH-corrected
  over all traits (:func:`traitspace.core.trajectory.top_shifts`), plus the differential at every
  step for the heatmap.
- **Decomposition** (per pair): the two drift vectors (one entry per trait) split into a shared
  part (EM + control)/2 and a specific part (EM - control)/2 at each step.
- **Assistant Axis**: the mean projection per condition and step with a bootstrap interval.
- **PCA trajectory**: each checkpoint's mean trait profile in the first principal components.

:func:`write_analysis` writes the tables into ``projections/`` under fixed names (the file names
below); :func:`read_pair_tables` is how ``traitspace.project.load_outputs`` reads them back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..core import trajectory
from ..core.artifacts import atomic_path
from ..core.stats import bootstrap_mean_ci

AXIS = "assistant_axis"  # the Assistant Axis row in the projection table (not a persona trait)
AXIS_FILE = "assistant_axis.csv"
PCA_FILE = "pca_coordinates.csv"
_PROJECTION_COLUMNS = ["condition", "step", "trait", "prompt", "value"]


def top_shifts_file(folder: str | Path, em: str, control: str) -> Path:
    return Path(folder) / f"top_shifts__{em}__vs__{control}.csv"


def decomposition_file(folder: str | Path, em: str) -> Path:
    return Path(folder) / f"decomposition__{em}.csv"


@dataclass
class PairAnalysis:
    em: str
    control: str
    differential: pd.DataFrame   # step, trait, drift_em, drift_control, differential
    final_step: int
    top_shifts: pd.DataFrame     # one row per trait, by |differential| at the final step
    decomposition: pd.DataFrame  # step, shared_norm, specific_norm, ratios, cosine

    @property
    def n_significant(self) -> int:
        return int(self.top_shifts["significant"].sum())

    def shift_sentence(self) -> str:
        return (f"{self.em} vs {self.control}: {self.n_significant} of {len(self.top_shifts)} traits shift "
                f"significantly (BH q < 0.05) at step {self.final_step}")

    def decomposition_sentence(self) -> str:
        table = self.decomposition
        final = table.iloc[-1]
        return (f"{self.em} vs {self.control} at step {int(final['step'])}: specific/shared = "
                f"{final['specific_to_shared']:.2f}, shared/specific = {final['shared_to_specific']:.2f}, "
                f"cosine(drift EM, drift control) = {final['cosine']:.2f}; cosine range over steps > 0: "
                f"{table['cosine'].iloc[1:].min():.2f} to {table['cosine'].iloc[1:].max():.2f}")


@dataclass
class ProjectionAnalysis:
    pairs: dict[tuple[str, str], PairAnalysis]
    axis: pd.DataFrame | None    # condition, step, projection, low, high (None: no Assistant Axis)
    pca: trajectory.TrajectoryPCA
    top_k: int

    def axis_by_step(self) -> pd.DataFrame:
        """The Assistant-Axis means as a step x condition grid."""
        return self.axis.pivot(index="step", columns="condition", values="projection")


def trait_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The persona and alignment traits (the Assistant Axis is analysed on its own)."""
    return table[table["trait"] != AXIS]


def decomposition(mean_drift: pd.DataFrame, em: str, control: str) -> pd.DataFrame:
    """Shared/specific split of the two conditions' mean drift at the steps both have."""
    grid = mean_drift.pivot_table(index=["condition", "step"], columns="trait", values="drift")
    steps = sorted(set(grid.loc[em].index) & set(grid.loc[control].index))
    return trajectory.decompose(grid.loc[em].loc[steps].to_numpy(), grid.loc[control].loc[steps].to_numpy(),
                                steps=steps)


def analyse_pair(trait_table: pd.DataFrame, mean_drift: pd.DataFrame, em: str, control: str, settings,
                 seed: int) -> PairAnalysis:
    """Top shifts (``settings``: top_k, n_boot, n_perm) and decomposition of one pair."""
    pair_table = trait_table[trait_table["condition"].isin([em, control])]
    differential = trajectory.differential(trajectory.drift(pair_table), em, control)
    top = trajectory.top_shifts(pair_table, em, control, k=settings.top_k, n_boot=settings.n_boot,
                                n_perm=settings.n_perm, seed=seed)
    return PairAnalysis(em, control, differential, int(differential["step"].max()), top,
                        decomposition(mean_drift, em, control))


def assistant_axis_summary(table: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame | None:
    """Mean projection on the Assistant Axis per condition and step, 95% bootstrap interval over prompts."""
    axis = table[table["trait"] == AXIS]
    if not len(axis):
        return None
    rows = []
    for (condition, step), group in axis.groupby(["condition", "step"]):
        mean, low, high = bootstrap_mean_ci(group["value"].to_numpy(), n_boot=n_boot, seed=seed)
        rows.append({"condition": condition, "step": step, "projection": mean, "low": low, "high": high})
    return pd.DataFrame(rows)


def projection_pca(trait_table: pd.DataFrame) -> trajectory.TrajectoryPCA:
    """PCA of the checkpoints' mean trait profiles (up to 5 components)."""
    mean_table = trajectory.mean_projection_table(trait_table[_PROJECTION_COLUMNS])
    return trajectory.trajectory_pca(mean_table, n_components=min(5, mean_table["trait"].nunique()))


def analyse_projections(table: pd.DataFrame, pairs: dict[str, str], settings, seed: int) -> ProjectionAnalysis:
    """Everything notebook 03 shows, from the projection table (``settings``: the project section)."""
    traits = trait_rows(table)
    mean_drift = trajectory.drift(traits[_PROJECTION_COLUMNS])
    analysed = {(em, control): analyse_pair(traits, mean_drift, em, control, settings, seed)
                for em, control in pairs.items()}
    return ProjectionAnalysis(analysed, assistant_axis_summary(table, settings.n_boot, seed),
                              projection_pca(traits), settings.top_k)


def write_analysis(analysis: ProjectionAnalysis, folder: str | Path) -> list[Path]:
    """Write the per-pair tables and the per-condition summaries into ``folder``."""
    tables = []
    for pair in analysis.pairs.values():
        tables.append((top_shifts_file(folder, pair.em, pair.control), pair.top_shifts))
        tables.append((decomposition_file(folder, pair.em), pair.decomposition))
    if analysis.axis is not None:
        tables.append((Path(folder) / AXIS_FILE, analysis.axis))
    tables.append((Path(folder) / PCA_FILE, analysis.pca.coordinates))
    for path, frame in tables:
        with atomic_path(path) as temporary:
            frame.to_csv(temporary, index=False)
    return [path for path, _ in tables]


def read_pair_tables(folder: str | Path, pairs: dict[str, str]
                     ) -> tuple[dict[tuple[str, str], pd.DataFrame], dict[tuple[str, str], pd.DataFrame]]:
    """(top shifts, decomposition) per (em, control) pair, as :func:`write_analysis` wrote them."""
    top_shifts, decompositions = {}, {}
    for em, control in pairs.items():
        top_shifts[(em, control)] = pd.read_csv(top_shifts_file(folder, em, control))
        decompositions[(em, control)] = pd.read_csv(decomposition_file(folder, em))
    return top_shifts, decompositions
