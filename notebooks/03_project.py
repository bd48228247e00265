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
from traitspace.core.paths import describe_paths
from traitspace.project import AXIS, run_projection_stage

config = load_config(params_path, overrides)
print(describe_paths(config))  # relative paths start at the project root, wherever the kernel runs
settings = config.project

# %% [markdown]
# ## Measurement
# The base model is loaded once and each checkpoint's adapter is swapped in. A checkpoint already
# projected with the same parameters is read back from disk instead of recomputed; the base model
# (step 0 of every trail) is projected once. A *trail* is one condition trained with one training
# seed. The stage then writes the tables and figures below into `projections/`.

# %%
result = run_projection_stage(config)
table, analysis, figures = result.table, result.analysis, result.figures
n_seeds = table["seed"].nunique()
print(f"{table['condition'].nunique()} conditions x {n_seeds} training seed(s), {table['step'].nunique()} steps, "
      f"{table.loc[table['trait'] != AXIS, 'trait'].nunique()} traits, {len(result.questions)} projection questions; "
      f"EM/control pairs: {result.pairs or 'none (no built-in pair among the trained conditions)'}")
if result.seconds_per_checkpoint:
    print(f"{result.seconds_per_checkpoint:.1f} s per newly projected checkpoint")

# %% [markdown]
# ## Which traits move because of the EM data?
# Any two fine-tuning runs end up in different places, two seeds of the *same* data included. So the
# question is not whether the EM run differs from its control (it always does) but whether the
# EM-minus-control drift is larger than what swapping one training seed for another produces: the
# **seed-pair null**, the spread of EM-minus-EM and control-minus-control differences between seeds.
# Each trait's final-step differential, averaged over seeds, is tested against it (a two-sample
# t-test across seeds with the pooled seed-to-seed variance), with Benjamini-Hochberg over all traits.
# The interval is across seeds. With one seed per condition the spread is unknown and nothing can be
# tested: the table then shows estimates only.
#
# The heatmap shows the seed-averaged differential of the traits that moved most, over all steps (red:
# the EM runs moved further *towards* the trait than the controls did).

# %%
for pair in analysis.pairs.values():
    display(Image(filename=str(figures[f"differential_heatmap__{pair.em}"])))
    display(Image(filename=str(figures[f"top_shifts__{pair.em}"])))
    print(pair.shift_sentence())
    display(pair.top_shifts.head(settings.top_k)[["trait", "differential", "ci_low", "ci_high", "seed_pair_sd",
                                                  "q_value", "n_em_seeds", "n_control_seeds", "direction"]])

# %% [markdown]
# ### Precision, not evidence
# Within one seed, the same projection prompts are asked of the EM run and of its control, so a
# bootstrap over prompts says how precisely those two particular runs were compared. It passes for
# almost any two runs; it is shown so the measurement's resolution is known, never as an effect.

# %%
for pair in analysis.pairs.values():
    print(pair.precision_sentence())

# %% [markdown]
# ### The shift in activation space
# The trait directions overlap (many are close to each other), so per-trait differentials count the
# same movement several times. Here the EM-minus-control difference of the mean activations (over the
# projection prompts, averaged over seeds) is read in the trait basis by least squares: the share of
# its squared norm that the trait directions explain, against the share a random direction would get
# (their rank over the hidden size), and the largest coefficients. A same-data seed pair's distance is
# the yardstick for the shift's size.

# %%
for pair in analysis.pairs.values():
    print(pair.activation_shift_sentence())
    if len(pair.activation_shift):
        display(pair.activation_shift.round(3))

# %% [markdown]
# ## The Assistant Axis
# Higher means more like the model's default assistant persona, lower more like the role-play
# characters the axis was contrasted with. A model drifting away from its assistant persona moves
# down this axis. One line per trail; the table averages the seeds.

# %%
if analysis.axis is not None:
    display(Image(filename=str(figures["assistant_axis"])))
    display(analysis.axis_by_step().round(3))

# %% [markdown]
# ## The whole trajectory at once (PCA)
# Each checkpoint is a point in a space with one coordinate per trait. PCA finds the directions in
# which the checkpoints differ most (fit with the base model as one point); each path shows how one
# trail travels from the shared base model (step 0). Much variance in the first components only says
# that fine-tuning moves the model along few directions, which any data does. Whether a component
# separates EM from control is tested like a trait: its coordinate per run, EM minus control, against
# the seed-pair null at every trained step (BH over components).

# %%
print("variance explained by the first components:", np.round(analysis.pca.explained_variance_ratio, 3))
display(Image(filename=str(figures["pca_trajectory"])))
for pair in analysis.pairs.values():
    print(pair.pca_sentence())

# %% [markdown]
# ## How much of the shift is shared with the control?
# At each step we split the two drift vectors (one entry per trait, averaged over seeds) into a
# **shared** part, (EM + control)/2, which any fine-tuning on this kind of data produces, and a
# **specific** part, (EM − control)/2, which only the EM data produces. The cosine between the two
# drifts says how alike their directions are (1: the same direction). The seed project defined the
# differential as EM − control without halving: `difference_to_shared` is that form (twice
# `specific_to_shared`). Its reported figures (specific/shared 2.6 under aggressive training;
# shared/specific 4.7 with cosines of 0.91–0.99 under Betley-matched training) compare with it, on a
# 32B model.

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
