# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 03 · Where does each checkpoint sit in trait space?
#
# Notebook 01 left a trail of LoRA checkpoints for an emergent-misalignment (EM) condition and its
# matched control; notebook 02 turned the base model into a coordinate system of trait directions.
# Here every checkpoint answers the same *projection questions* (never used to build the vectors),
# and we read its residual stream along every trait direction:
#
# *projection = activation · unit trait vector*, at the layer chosen for that trait.
#
# **Drift** is how far a condition has moved from its own step 0 (the untouched base model). The
# **differential** is drift(EM) − drift(control): movement the EM data causes beyond what any
# fine-tuning on similar data does.

# %% tags=["parameters"]
params_path = "params/default.yaml"
overrides = {}

# %%
import numpy as np
import pandas as pd
from IPython.display import display

from traitspace.core import trajectory
from traitspace.core.artifacts import atomic_path
from traitspace.core.config import load_config
from traitspace.core.plots import differential_heatmap, pca_trajectory, save_figure, set_style, top_shift_bars, trajectory_lines
from traitspace.project import run_projection_stage
from traitspace.core.stats import bootstrap_mean_ci

config = load_config(params_path, overrides)
set_style()
settings = config.project
figures = config.run_dir / "projections" / "figures"
figures.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Measurement
# The base model is loaded once and each checkpoint's adapter is swapped in. A checkpoint already
# projected with the same parameters is read back from disk instead of recomputed.

# %%
result = run_projection_stage(config)
table, drift_table = result.table, result.drift
AXIS = "assistant_axis"
trait_table = table[table["trait"] != AXIS]
print(f"{table['condition'].nunique()} conditions, {table['step'].nunique()} steps, "
      f"{trait_table['trait'].nunique()} traits, {len(result.questions)} projection questions; "
      f"EM/control pairs: {result.pairs or 'none (no built-in pair among the trained conditions)'}")
if result.seconds_per_checkpoint:
    print(f"{result.seconds_per_checkpoint:.1f} s per newly projected checkpoint")

# %% [markdown]
# ## Which traits move, EM minus control?
# For each pair, the heatmap shows the differential of the traits that moved most by the last step,
# over all steps (red: the EM model moved further *towards* the trait than the control did). The bar
# chart gives the final-step differential with a 95% bootstrap interval over the projection prompts;
# a star marks traits whose shift survives a permutation test against the control after
# Benjamini-Hochberg correction over all traits.

# %%
shift_tables = {}
for em, control in result.pairs.items():
    pair_table = trait_table[trait_table["condition"].isin([em, control])]
    differential = trajectory.differential(trajectory.drift(pair_table), em, control)
    final_step = int(differential["step"].max())
    top = trajectory.top_shifts(pair_table, em, control, k=settings.top_k, n_boot=settings.n_boot,
                                n_perm=settings.n_perm, seed=config.run.seed)
    shift_tables[(em, control)] = top
    with atomic_path(config.run_dir / "projections" / f"top_shifts__{em}__vs__{control}.csv") as tmp:
        top.to_csv(tmp, index=False)
    shown = list(top.head(2 * settings.top_k)["trait"])
    fig = differential_heatmap(differential, shown, title=f"{em} minus {control}: drift of the most-moved traits")
    save_figure(fig, figures / f"differential_heatmap__{em}.png")
    fig = top_shift_bars(top, settings.top_k, title=f"{em} vs {control} at step {final_step}")
    save_figure(fig, figures / f"top_shifts__{em}.png")
    n_significant = int(top["significant"].sum())
    print(f"{em} vs {control}: {n_significant} of {len(top)} traits shift significantly (BH q < 0.05) at step {final_step}")
    display(top.head(settings.top_k)[["trait", "differential", "ci_low", "ci_high", "q_value", "direction"]])

# %% [markdown]
# ## The Assistant Axis
# Higher means more like the model's default assistant persona, lower more like the role-play
# characters the axis was contrasted with. A model drifting away from its assistant persona moves
# down this axis.

# %%
axis = table[table["trait"] == AXIS]
if len(axis):
    rows = []
    for (condition, step), group in axis.groupby(["condition", "step"]):
        mean, low, high = bootstrap_mean_ci(group["value"].to_numpy(), n_boot=settings.n_boot, seed=config.run.seed)
        rows.append({"condition": condition, "step": step, "projection": mean, "low": low, "high": high})
    axis_summary = pd.DataFrame(rows)
    fig = trajectory_lines(axis_summary, "step", "projection", "condition", "Assistant Axis over training",
                           "projection on the Assistant Axis (95% CI)", band=("low", "high"))
    save_figure(fig, figures / "assistant_axis.png")
    display(axis_summary.pivot(index="step", columns="condition", values="projection").round(3))

# %% [markdown]
# ## The whole trajectory at once (PCA)
# Each checkpoint is a point in a space with one coordinate per trait. PCA finds the directions in
# which the checkpoints differ most; the path shows how each condition travels from the shared base
# model (step 0).

# %%
mean_table = trajectory.mean_projection_table(trait_table[["condition", "step", "trait", "prompt", "value"]])
pca = trajectory.trajectory_pca(mean_table, n_components=min(5, mean_table["trait"].nunique()))
print("variance explained by the first components:", np.round(pca.explained_variance_ratio, 3))
fig = pca_trajectory(pca.coordinates, pca.explained_variance_ratio)
save_figure(fig, figures / "pca_trajectory.png")

# %% [markdown]
# ## How much of the shift is shared with the control?
# At each step we split the two drift vectors (one entry per trait) into a **shared** part,
# (EM + control)/2, which any fine-tuning on this kind of data produces, and a **specific** part,
# (EM − control)/2, which only the EM data produces. The cosine between the two drifts says how
# alike their directions are (1: the same direction). For comparison, the seed project reported a
# specific/shared ratio of 2.6 under aggressive training, and a shared/specific ratio of 4.7 with
# cosines of 0.91–0.99 under Betley-matched training.

# %%
mean_drift = trajectory.drift(trait_table[["condition", "step", "trait", "prompt", "value"]])
decompositions = {}
for em, control in result.pairs.items():
    grid = mean_drift.pivot_table(index=["condition", "step"], columns="trait", values="drift")
    steps = sorted(set(grid.loc[em].index) & set(grid.loc[control].index))
    decomposition = trajectory.decompose(grid.loc[em].loc[steps].to_numpy(), grid.loc[control].loc[steps].to_numpy(),
                                         steps=steps)
    decompositions[em] = decomposition
    final = decomposition.iloc[-1]
    print(f"{em} vs {control} at step {int(final['step'])}: specific/shared = {final['specific_to_shared']:.2f}, "
          f"shared/specific = {final['shared_to_specific']:.2f}, cosine(drift EM, drift control) = {final['cosine']:.2f}; "
          f"cosine range over steps > 0: {decomposition['cosine'].iloc[1:].min():.2f} to {decomposition['cosine'].iloc[1:].max():.2f}")
    long = decomposition.melt(id_vars="step", value_vars=["shared_norm", "specific_norm"], var_name="component",
                              value_name="L2 norm")
    fig = trajectory_lines(long, "step", "L2 norm", "component", f"{em} vs {control}: shared and specific drift",
                           "L2 norm over traits")
    save_figure(fig, figures / f"decomposition__{em}.png")
    with atomic_path(config.run_dir / "projections" / f"decomposition__{em}.csv") as tmp:
        decomposition.to_csv(tmp, index=False)
    display(decomposition.round(3))

# %% [markdown]
# **Reading the numbers.** A specific/shared ratio above 1 means the EM data moves the model in its
# own direction more than fine-tuning in general does; a cosine near 1 with a small specific part
# means both runs move alike and the EM-specific signal is a small difference on top of a large
# common drift. On the small default run (a 135M model, a few minutes of training), differences are
# small and intervals wide: read them as a demonstration of the method, not as a finding.
