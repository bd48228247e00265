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
from IPython.display import Image, display

from traitspace.core.config import load_config
from traitspace.project import AXIS, run_projection_stage

config = load_config(params_path, overrides)
settings = config.project

# %% [markdown]
# ## Measurement
# The base model is loaded once and each checkpoint's adapter is swapped in. A checkpoint already
# projected with the same parameters is read back from disk instead of recomputed; the base model
# (step 0 of every condition) is projected once. The stage then writes the tables and figures
# below into `projections/`.

# %%
result = run_projection_stage(config)
table, analysis, figures = result.table, result.analysis, result.figures
print(f"{table['condition'].nunique()} conditions, {table['step'].nunique()} steps, "
      f"{table.loc[table['trait'] != AXIS, 'trait'].nunique()} traits, {len(result.questions)} projection questions; "
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
for pair in analysis.pairs.values():
    display(Image(filename=str(figures[f"differential_heatmap__{pair.em}"])))
    display(Image(filename=str(figures[f"top_shifts__{pair.em}"])))
    print(pair.shift_sentence())
    display(pair.top_shifts.head(settings.top_k)[["trait", "differential", "ci_low", "ci_high", "q_value", "direction"]])

# %% [markdown]
# ## The Assistant Axis
# Higher means more like the model's default assistant persona, lower more like the role-play
# characters the axis was contrasted with. A model drifting away from its assistant persona moves
# down this axis.

# %%
if analysis.axis is not None:
    display(Image(filename=str(figures["assistant_axis"])))
    display(analysis.axis_by_step().round(3))

# %% [markdown]
# ## The whole trajectory at once (PCA)
# Each checkpoint is a point in a space with one coordinate per trait. PCA finds the directions in
# which the checkpoints differ most; the path shows how each condition travels from the shared base
# model (step 0).

# %%
print("variance explained by the first components:", np.round(analysis.pca.explained_variance_ratio, 3))
display(Image(filename=str(figures["pca_trajectory"])))

# %% [markdown]
# ## How much of the shift is shared with the control?
# At each step we split the two drift vectors (one entry per trait) into a **shared** part,
# (EM + control)/2, which any fine-tuning on this kind of data produces, and a **specific** part,
# (EM − control)/2, which only the EM data produces. The cosine between the two drifts says how
# alike their directions are (1: the same direction). For comparison, the seed project reported a
# specific/shared ratio of 2.6 under aggressive training, and a shared/specific ratio of 4.7 with
# cosines of 0.91–0.99 under Betley-matched training.

# %%
for pair in analysis.pairs.values():
    print(pair.decomposition_sentence())
    display(Image(filename=str(figures[f"decomposition__{pair.em}"])))
    display(pair.decomposition.round(3))

# %% [markdown]
# **Reading the numbers.** A specific/shared ratio above 1 means the EM data moves the model in its
# own direction more than fine-tuning in general does; a cosine near 1 with a small specific part
# means both runs move alike and the EM-specific signal is a small difference on top of a large
# common drift. On the small default run (a 135M model, a few minutes of training), differences are
# small and intervals wide: read them as a demonstration of the method, not as a finding.
