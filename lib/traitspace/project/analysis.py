"""What notebook 03 reads off the projection table, per EM/control pair and per trail.

Training seeds are the unit of replication (:mod:`traitspace.core.seed_tests`):

- **Seed-level shifts** (per pair, the evidence): each trait's EM-minus-control drift at the final
  step, averaged over seeds, tested against the seed-pair null (the spread between seeds of the
  same data), BH over traits; and the same test at every step (``seed_shifts_by_step__*.csv``, which
  notebook 05 times). With one seed the estimates are there and no p-value is.
- **Precision** (per pair and seed): the prompt-paired bootstrap interval and sign-flip test of one
  EM run against one control run (:func:`traitspace.core.trajectory.top_shifts`). It says how
  precisely two fixed runs were compared, never that the data had an effect: any two runs differ.
- **Activation shift** (per pair): the EM-minus-control difference of mean activations itself, and
  its least-squares reading in the (overlapping) trait basis with the share of its norm it explains.
- **Decomposition** (per pair): the seed-averaged drift vectors split into shared and specific
  parts at each step, in two conventions (see :func:`decomposition`).
- **Assistant Axis**: the mean projection per trail and step with a bootstrap interval over prompts.
- **PCA trajectory**: each checkpoint's mean trait profile in the first principal components, fit
  with the base model as one row (not once per trail). A large share of variance in the first
  components says only that the checkpoints move along few directions, which training on any data
  does; whether a component separates EM from control is tested like a trait (its coordinates per
  run, EM minus control against the seed-pair null at every step: ``pca_seed_test__*.csv``).

:func:`write_analysis` writes the tables into ``projections/`` under fixed names (the file names
below); :func:`read_pair_tables` is how ``traitspace.project.load_outputs`` reads them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..core import trajectory
from ..core.artifacts import atomic_path
from ..core.checkpoints import BASE_CONDITION
from ..core.seed_tests import activation_shift, can_test, seed_level_shifts, seed_level_shifts_by_step
from ..core.stats import bootstrap_mean_ci

AXIS = "assistant_axis"  # the Assistant Axis row in the projection table (not a persona trait)
AXIS_FILE = "assistant_axis.csv"
PCA_FILE = "pca_coordinates.csv"
_PROJECTION_COLUMNS = ["condition", "seed", "step", "trait", "prompt", "value"]


def top_shifts_file(folder: str | Path, em: str, control: str) -> Path:
    """The seed-level shift table at the final step (the evidence)."""
    return Path(folder) / f"top_shifts__{em}__vs__{control}.csv"


def shifts_by_step_file(folder: str | Path, em: str, control: str) -> Path:
    return Path(folder) / f"seed_shifts_by_step__{em}__vs__{control}.csv"


def precision_file(folder: str | Path, em: str, control: str) -> Path:
    """The prompt-level comparison of each seed's two runs (precision only)."""
    return Path(folder) / f"precision__{em}__vs__{control}.csv"


def activation_shift_file(folder: str | Path, em: str, control: str) -> Path:
    return Path(folder) / f"activation_shift__{em}__vs__{control}.csv"


def decomposition_file(folder: str | Path, em: str) -> Path:
    return Path(folder) / f"decomposition__{em}.csv"


def pca_test_file(folder: str | Path, em: str, control: str) -> Path:
    return Path(folder) / f"pca_seed_test__{em}__vs__{control}.csv"


@dataclass
class PairAnalysis:
    em: str
    control: str
    differential: pd.DataFrame   # step, trait, differential (mean over seeds of EM - control drift)
    final_step: int
    top_shifts: pd.DataFrame     # seed-level test per trait at the final step, by |differential|
    shifts_by_step: pd.DataFrame  # the same test at every step > 0
    precision: pd.DataFrame      # seed, trait, differential, ci_low, ci_high, q_value ... (prompt resampling)
    decomposition: pd.DataFrame  # step, shared_norm, specific_norm, ratios (both conventions), cosine
    activation_shift: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per layer
    n_seeds: int = 1
    pca_test: pd.DataFrame = field(default_factory=pd.DataFrame)  # component, step, seed-level test columns

    @property
    def testable(self) -> bool:
        return can_test(int(self.top_shifts["n_em_seeds"].iloc[0]), int(self.top_shifts["n_control_seeds"].iloc[0]))

    @property
    def n_significant(self) -> int:
        return int(self.top_shifts["significant"].sum())

    def shift_sentence(self) -> str:
        n_em, n_control = int(self.top_shifts["n_em_seeds"].iloc[0]), int(self.top_shifts["n_control_seeds"].iloc[0])
        if not self.testable:
            return (f"{self.em} vs {self.control} at step {self.final_step}: one training seed per condition, so no "
                    f"effect of the data can be tested (the seed-to-seed spread is unknown); the differentials "
                    f"below are estimates from one pair of runs. Train with finetune.seeds: [0, 1, 2] to test.")
        return (f"{self.em} vs {self.control} at step {self.final_step}: {self.n_significant} of {len(self.top_shifts)} "
                f"traits' EM-minus-control drift beats the seed-pair null (BH q < 0.05; {n_em} EM and "
                f"{n_control} control seeds, t-test on {n_em + n_control - 2} degrees of freedom)")

    def precision_sentence(self) -> str:
        significant = self.precision.groupby("seed")["significant"].sum()
        counts = ", ".join(f"seed {seed}: {count}" for seed, count in significant.items())
        return (f"precision only (prompts resampled within one pair of runs, which any two runs pass): traits "
                f"whose runs differ at BH q < 0.05 per seed: {counts} of {self.precision['trait'].nunique()}")

    def decomposition_sentence(self) -> str:
        table = self.decomposition
        final = table.iloc[-1]
        return (f"{self.em} vs {self.control} at step {int(final['step'])} (drift averaged over {self.n_seeds} seed(s)): "
                f"specific/shared = {final['specific_to_shared']:.2f} with specific = (EM - control)/2, "
                f"{final['difference_to_shared']:.2f} with the seed project's EM - control; cosine(drift EM, "
                f"drift control) = {final['cosine']:.2f}; cosine range over steps > 0: "
                f"{table['cosine'].iloc[1:].min():.2f} to {table['cosine'].iloc[1:].max():.2f}")

    def activation_shift_sentence(self) -> str:
        if not len(self.activation_shift):
            return "no mean activations stored: activation-space shift not computed"
        rows = [f"layer {int(row.layer)}: ||shift|| = {row.norm:.3g} (a same-data seed pair differs by "
                f"{row.seed_pair_norm:.3g} on average), trait basis explains {row.explained_share:.0%} of its squared "
                f"norm (a random direction: {row.chance_share:.0%})" for row in self.activation_shift.itertuples()]
        return f"{self.em} vs {self.control} at step {self.final_step}, in activation space: " + "; ".join(rows)

    def pca_sentence(self) -> str:
        if not len(self.pca_test):
            return f"{self.em} vs {self.control}: no PCA component to test"
        final = self.pca_test[self.pca_test["step"] == self.pca_test["step"].max()]
        parts = [f"{row.component} {row.differential:+.3g} [{row.ci_low:.3g}, {row.ci_high:.3g}]"
                 + ("" if np.isnan(row.q_value) else f" q = {row.q_value:.2g}") for row in final.itertuples()]
        if not self.testable:
            return (f"{self.em} vs {self.control} at step {int(final['step'].iloc[0])}, EM-minus-control PCA coordinates "
                    f"(one seed: not testable): " + "; ".join(parts))
        n_beating = int(self.pca_test["significant"].sum())
        return (f"{self.em} vs {self.control} at step {int(final['step'].iloc[0])}, EM-minus-control PCA coordinates "
                f"(95% interval across seeds): " + "; ".join(parts) + f". Over all {self.pca_test['step'].nunique()} "
                f"trained steps, {n_beating} of {len(self.pca_test)} component-steps beat the seed-pair null.")


@dataclass
class ProjectionAnalysis:
    pairs: dict[tuple[str, str], PairAnalysis]
    axis: pd.DataFrame | None    # condition, seed, step, projection, low, high (None: no Assistant Axis)
    pca: trajectory.TrajectoryPCA
    top_k: int

    def axis_by_step(self) -> pd.DataFrame:
        """The Assistant-Axis means (averaged over seeds) as a step x condition grid."""
        return self.axis.pivot_table(index="step", columns="condition", values="projection", aggfunc="mean")


def trait_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The persona and alignment traits (the Assistant Axis is analysed on its own)."""
    return table[table["trait"] != AXIS]


def with_seed(table: pd.DataFrame) -> pd.DataFrame:
    """Tables written before seeds existed are one seed, 0."""
    return table if "seed" in table.columns else table.assign(seed=0)


def decomposition(mean_drift: pd.DataFrame, em: str, control: str) -> pd.DataFrame:
    """Shared/specific split of the two conditions' drift (averaged over seeds) at the steps both have.

    Two conventions side by side: this workbook's shared = (EM + control)/2, specific = (EM - control)/2
    (``specific_to_shared``), and the seed project's differential EM - control without halving
    (``difference_to_shared`` = 2 x ``specific_to_shared``), so its figures compare like for like.
    """
    grid = mean_drift.pivot_table(index=["condition", "step"], columns="trait", values="drift", aggfunc="mean")
    steps = sorted(set(grid.loc[em].index) & set(grid.loc[control].index))
    table = trajectory.decompose(grid.loc[em].loc[steps].to_numpy(), grid.loc[control].loc[steps].to_numpy(),
                                 steps=steps)
    table.insert(3, "difference_norm", 2 * table["specific_norm"])
    table.insert(5, "difference_to_shared", 2 * table["specific_to_shared"])
    return table


def precision_table(trait_table: pd.DataFrame, em: str, control: str, settings, seed: int) -> pd.DataFrame:
    """The prompt-paired comparison of each seed's EM run with the same seed's control run."""
    frames = []
    for run_seed in sorted(set(trait_table.loc[trait_table["condition"] == em, "seed"])
                           & set(trait_table.loc[trait_table["condition"] == control, "seed"])):
        rows = trait_table[(trait_table["seed"] == run_seed) & trait_table["condition"].isin([em, control])]
        top = trajectory.top_shifts(rows.drop(columns="seed"), em, control, k=settings.top_k, n_boot=settings.n_boot,
                                    n_perm=settings.n_perm, seed=seed)
        frames.append(top.assign(seed=run_seed))
    return pd.concat(frames, ignore_index=True)


def activation_shift_table(mean_activations, em: str, control: str, step: int, unit_vectors, trait_layers
                           ) -> pd.DataFrame:
    """:func:`traitspace.core.seed_tests.activation_shift` at every layer that holds trait vectors."""
    rows = []
    for layer in sorted(set(int(value) for value in trait_layers.values())):
        basis = {name: np.asarray(unit_vectors[name], dtype=float) for name in unit_vectors
                 if int(trait_layers[name]) == layer and name != AXIS}
        if not basis:
            continue
        shift = activation_shift(mean_activations, em, control, step, layer, basis)
        top = shift.coefficients.head(8)
        rows.append({"layer": layer, "step": step, "norm": shift.norm, "seed_pair_norm": shift.seed_pair_norm,
                     "explained_share": shift.explained_share, "chance_share": shift.chance_share,
                     "n_traits": len(basis), "n_em_seeds": shift.n_em_seeds, "n_control_seeds": shift.n_control_seeds,
                     "top_coefficients": "; ".join(f"{name} {value:+.3g}" for name, value in top.items())})
    return pd.DataFrame(rows)


def pca_seed_test(coordinates: pd.DataFrame, em: str, control: str) -> pd.DataFrame:
    """Each PCA component's EM-minus-control coordinate at every trained step, tested across seeds
    against the seed-pair null like a trait (BH over components at each step)."""
    components = [column for column in coordinates.columns if column.startswith("pc")]
    rows = coordinates[coordinates["condition"].isin([em, control])]
    long = rows.melt(id_vars=["condition", "seed", "step"], value_vars=components, var_name="trait",
                     value_name="drift")
    table = seed_level_shifts_by_step(long, em, control)
    return table.rename(columns={"trait": "component"}).sort_values(["step", "component"], kind="stable"
                                                                    ).reset_index(drop=True)


def analyse_pair(trait_table: pd.DataFrame, mean_drift: pd.DataFrame, em: str, control: str, settings,
                 seed: int, mean_activations=None, unit_vectors=None, trait_layers=None) -> PairAnalysis:
    """Seed-level shifts, precision, activation shift and decomposition of one pair (``settings``:
    top_k, n_boot, n_perm)."""
    pair_drift = mean_drift[mean_drift["condition"].isin([em, control])]
    per_seed = trajectory.differential(pair_drift, em, control)
    differential = per_seed.groupby(["step", "trait"], as_index=False)["differential"].mean()
    final_step = int(differential["step"].max())
    top = seed_level_shifts(pair_drift, em, control, step=final_step)
    top["rank"] = np.arange(1, len(top) + 1)
    top["top_k"] = top["rank"] <= settings.top_k
    shift = pd.DataFrame()
    if mean_activations and unit_vectors is not None:
        shift = activation_shift_table(mean_activations, em, control, final_step, unit_vectors, trait_layers)
    return PairAnalysis(em, control, differential, final_step, top,
                        seed_level_shifts_by_step(pair_drift, em, control),
                        precision_table(trait_table, em, control, settings, seed),
                        decomposition(pair_drift, em, control), shift,
                        n_seeds=int(pair_drift["seed"].nunique()))


def assistant_axis_summary(table: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame | None:
    """Mean projection on the Assistant Axis per trail and step, 95% bootstrap interval over prompts
    (precision of each run's mean; the spread between seeds is the yardstick for effects)."""
    axis = table[table["trait"] == AXIS]
    if not len(axis):
        return None
    rows = []
    for (condition, run_seed, step), group in axis.groupby(["condition", "seed", "step"]):
        mean, low, high = bootstrap_mean_ci(group["value"].to_numpy(), n_boot=n_boot, seed=seed)
        rows.append({"condition": condition, "seed": run_seed, "step": step, "projection": mean, "low": low,
                     "high": high})
    return pd.DataFrame(rows)


def projection_pca(trait_table: pd.DataFrame) -> trajectory.TrajectoryPCA:
    """PCA of the checkpoints' mean trait profiles (up to 5 components), fit with the base model as
    one row: as a row per trail, the identical step-0 profile would weigh the fit towards the start.
    The coordinates list every trail's path from that shared start (step 0 repeated per trail)."""
    mean_table = trajectory.mean_projection_table(trait_table[_PROJECTION_COLUMNS])
    base = mean_table[mean_table["step"] == 0]
    first = base.iloc[0]
    fitted_rows = pd.concat([base[(base["condition"] == first["condition"]) & (base["seed"] == first["seed"])]
                             .assign(condition=BASE_CONDITION, seed=0), mean_table[mean_table["step"] > 0]])
    pca = trajectory.trajectory_pca(fitted_rows, n_components=min(5, mean_table["trait"].nunique()))
    coordinates = pca.coordinates
    base_point = coordinates[coordinates["condition"] == BASE_CONDITION].drop(columns=["condition", "seed"])
    starts = (base[["condition", "seed"]].drop_duplicates().merge(base_point, how="cross"))
    coordinates = pd.concat([starts, coordinates[coordinates["condition"] != BASE_CONDITION]], ignore_index=True)
    coordinates = coordinates.sort_values(["condition", "seed", "step"]).reset_index(drop=True)
    return trajectory.TrajectoryPCA(pca.explained_variance_ratio, coordinates, pca.components)


def analyse_projections(table: pd.DataFrame, pairs: dict[str, str], settings, seed: int, mean_activations=None,
                        unit_vectors=None, trait_layers=None) -> ProjectionAnalysis:
    """Everything notebook 03 shows, from the projection table (``settings``: the project section);
    with ``mean_activations`` and the trait vectors, the activation-space shift too."""
    table = with_seed(table)
    traits = trait_rows(table)
    mean_drift = trajectory.drift(traits[_PROJECTION_COLUMNS])
    analysed = {(em, control): analyse_pair(traits, mean_drift, em, control, settings, seed, mean_activations,
                                            unit_vectors, trait_layers)
                for em, control in pairs.items()}
    pca = projection_pca(traits)
    for (em, control), pair in analysed.items():
        pair.pca_test = pca_seed_test(pca.coordinates, em, control)
    return ProjectionAnalysis(analysed, assistant_axis_summary(table, settings.n_boot, seed), pca, settings.top_k)


def write_analysis(analysis: ProjectionAnalysis, folder: str | Path) -> list[Path]:
    """Write the per-pair tables and the per-condition summaries into ``folder``."""
    tables = []
    for pair in analysis.pairs.values():
        tables.append((top_shifts_file(folder, pair.em, pair.control), pair.top_shifts))
        tables.append((shifts_by_step_file(folder, pair.em, pair.control), pair.shifts_by_step))
        tables.append((precision_file(folder, pair.em, pair.control), pair.precision))
        tables.append((activation_shift_file(folder, pair.em, pair.control), pair.activation_shift))
        tables.append((decomposition_file(folder, pair.em), pair.decomposition))
        tables.append((pca_test_file(folder, pair.em, pair.control), pair.pca_test))
    if analysis.axis is not None:
        tables.append((Path(folder) / AXIS_FILE, analysis.axis))
    tables.append((Path(folder) / PCA_FILE, analysis.pca.coordinates))
    for path, frame in tables:
        with atomic_path(path) as temporary:
            frame.to_csv(temporary, index=False)
    return [path for path, _ in tables]


def read_pair_tables(folder: str | Path, pairs: dict[str, str]) -> dict[str, dict[tuple[str, str], pd.DataFrame]]:
    """{"top_shifts" | "shifts_by_step" | "precision" | "activation_shift" | "pca_test" | "decomposition":
    {(em, control): table}}, as :func:`write_analysis` wrote them."""
    files = {"top_shifts": top_shifts_file, "shifts_by_step": shifts_by_step_file, "precision": precision_file,
             "activation_shift": activation_shift_file, "pca_test": pca_test_file,
             "decomposition": lambda folder, em, control: decomposition_file(folder, em)}
    tables: dict[str, dict] = {name: {} for name in files}
    for em, control in pairs.items():
        for name, path_of in files.items():
            path = path_of(folder, em, control)
            if name == "pca_test" and not path.is_file():  # runs analysed before the PCA test existed
                tables[name][(em, control)] = pd.DataFrame()
                continue
            try:
                tables[name][(em, control)] = pd.read_csv(path)
            except pd.errors.EmptyDataError:  # an empty table (e.g. no activation shift) is written header-less
                tables[name][(em, control)] = pd.DataFrame()
    return tables
