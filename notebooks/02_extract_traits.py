# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 02 · Trait vectors and the Assistant Axis
#
# A **trait vector** is a direction in the model's residual stream that points from one persona
# towards its opposite. We find it by contrast: the same questions are asked twice, once under a
# system prompt that tells the model to *express* a trait ("You are cheerful and upbeat ...") and
# once under a matched prompt that tells it to express the *opposite* ("You are glum and downbeat
# ..."). At every layer we average the activations of each side; the trait vector is
#
# $$ v_\text{trait}[\ell] = \text{mean}(\text{positive})[\ell] - \text{mean}(\text{negative})[\ell]. $$
#
# The **Assistant Axis** is built the same way, but contrasts the plain assistant ("You are a
# helpful assistant.") with dozens of role personas (a pirate, a lawyer, a poet ...): it measures
# how much the model is "being the assistant". Projecting an activation onto a vector,
# $\text{activation}\cdot v / |v|$, gives one number: higher means more like the positive side
# (for the axis: more assistant-like). Notebook 03 uses these vectors as a coordinate system and
# tracks where each fine-tuning checkpoint sits in it.
#
# **Two ways to read the model** (`extract.mode`):
#
# * `prompt` (the default here, cheap): no text is generated. We read the residual stream at the
#   *last prompt token*, the position where the model is about to start its answer, after it has
#   read both the persona and the question. (Averaging over all prompt tokens is offered too, but it
#   mostly averages the system prompt's own words, which differ between the two sides by
#   construction, so it separates trivially and says little about the model's state.)
# * `response` (the persona-vector / Assistant-Axis papers' method): the model answers each question
#   under the system prompt and we average over the answer tokens. Much slower on a CPU.
#
# **Is a vector real?** Two checks, from lenient to strict:
#
# * *held-out questions*: the vector is fitted on part of the questions, under every instruction
#   pair, and scored on the other questions under the same prompts (AUROC: do positive conversations
#   project higher than negative ones? and Cohen's d). The same rows pick the layer. A direction that
#   only recognises the words of its own prompts passes this check.
# * *held-out instructions*: folds over the instruction pairs (scikit-learn's `GroupKFold`, one fold
#   per pair). Each fold fits the vector on the other pairs' fitting questions and scores it on its
#   own pair's held-out questions, so neither the prompt nor the question was seen; the layer of a
#   fold is chosen on an inner split of its training rows only. With a single instruction pair this
#   check cannot be made and is reported as missing.
#
# **Controls.** A few pairs of neutral personas ("an assistant who works in a public library" vs
# "... in a small bakery", `resources/traits/control_pairs.yaml`) differ as much in wording as a
# trait's prompts but in nothing that should change behaviour. They go through exactly the same
# extraction and both checks; a trait whose AUROC does not beat the best control's shows that its
# prompts differ, not that the model holds the trait. Controls are never stored as trait vectors.
#
# The trait library is `extract.library`: `builtin`, or a folder in the published Assistant Axis
# layout (`traits/<name>.json` with instruction pairs, `roles/<name>.json`).

# %% tags=["parameters"]
params_path = "params/default.yaml"
overrides = {}

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from traitspace import extract
from traitspace.core.config import load_config
from traitspace.core.paths import describe_paths
from traitspace.core.plots import set_style
from traitspace.library.traits import load_library

config = load_config(params_path, overrides)
print(describe_paths(config))  # relative paths start at the project root, wherever the kernel runs
settings = config.extract
set_style()
pd.set_option("display.max_colwidth", 110)
traits_dir = config.run_dir / extract.OUTPUT_FOLDER
print(f"run: {config.run_name} -> {traits_dir}")
extract.settings_table(settings)

# %% [markdown]
# ## What will be read
# The built-in trait library ships with the workbook: 240 persona traits in six families, 7
# alignment traits (stored as `align_<name>`), 71 role personas and two disjoint question sets.
# Here is one trait's and one control's first prompt pair and the questions, with the held-out ones
# marked.

# %%
library = load_library(settings.library)
overview, questions = extract.plan_overview(library, settings)
print(overview)
questions

# %% [markdown]
# In `response` mode an optional **judge** can drop answers that do not do what the system prompt
# asked (a "cheerful" answer that is not cheerful). The workbook's judges score alignment and
# coherence, not arbitrary persona traits, so no trait judge is available here: the filter is off
# and every answer is kept. (`traitspace.extract.run_extraction(config, judge=...)` accepts any
# function `judge(trait, questions, answers) -> scores 0-100` if you have one.)

# %%
judge = None
print(extract.judge_note(settings, judge))

# %% [markdown]
# ## Extraction (cached)
# The stage is cached by the hash of the `model` and `extract` parameters: a rerun with the same
# parameters loads `traits/vectors.safetensors` and does no model work at all.
#
# Speed trick: every question asked under one system prompt shares all tokens up to the question.
# The extraction runs that shared prefix once, keeps its attention keys and values, and runs only
# the question tokens on top (exact, because attention is causal).

# %%
cached = extract.extraction_stage(config, judge).is_done()
vectors = extract.run_extraction(config, judge=judge)
print(extract.run_report(vectors, cached))
shared_layer = vectors.info["shared_layer"]

# %% [markdown]
# ## Which layer?
# For each layer we fit the vectors on the fitting questions and measure the separation on the
# held-out questions (the grey line: the control contrasts).
# The left panel shows the mean over traits; the dashed line marks the layer the vectors use
# (`extract.layer_selection`: best held-out AUROC, ties broken by Cohen's d; `layer_scope: shared`
# uses one layer for every vector so that they can be compared with each other).

# %%
extract.plot_separation_by_layer(extract.read_separation(traits_dir), shared_layer, traits_dir)
plt.show()

# %% [markdown]
# ## Do the vectors generalise beyond their instructions?
# Both checks side by side. For each: how many traits reach `extract.separation_threshold` (with a
# Wilson 95% interval on the share), the mean AUROC over traits (bootstrap 95% interval), the
# number of held-out conversations a trait is scored on, and how many traits beat the best control
# contrast's AUROC on the same check. AUROC on a handful of conversations is coarse (with 2 held-out
# questions x 2 sides per fold it moves in steps of 0.25), so read the intervals.

# %%
print(extract.validation_summary(vectors, settings.separation_threshold))
display(extract.validity_table(vectors, settings.separation_threshold).round(3).T)

# %% [markdown]
# The control contrasts, scored exactly like the traits (`n_heldout`, `n_heldout_instructions`:
# conversations scored, both sides):

# %%
display(extract.controls_table(vectors))

# %% [markdown]
# ## Validation table
# One row per vector at its layer, the least separated on held-out instructions first.
# `separates_heldout_*` flag traits whose AUROC reaches the threshold on each check; the others are
# kept (a later notebook may still find them useful) but should be read with care. `norm` is the
# length of the raw mean difference and `activation_norm` the typical length of an activation at
# that layer, for scale.

# %%
display(extract.validation_table(vectors))

# %%
extract.plot_separation_per_trait(vectors, settings.separation_threshold, traits_dir)
plt.show()

# %% [markdown]
# What separation looks like: each dot is one held-out conversation projected onto the trait's
# vector. The best-separated traits are on the left, the worst on the right.

# %%
extract.plot_heldout_projections(extract.read_heldout_projections(traits_dir), vectors, traits_dir)
plt.show()

# %% [markdown]
# ## How do the traits relate to each other?
# Cosine similarity between every pair of trait vectors at the shared layer, clustered so that
# similar traits sit together. Blocks of red are families of traits the model represents alike
# (it may not distinguish "cheerful" from "enthusiastic" at all); blue marks opposites.

# %%
cosines = extract.trait_cosines(vectors, shared_layer)
extract.plot_trait_cosines(cosines, shared_layer, traits_dir)
plt.show()
most_similar, most_opposite = extract.extreme_pairs(cosines)
print("most similar pairs:")
display(most_similar)
print("most opposite pairs:")
display(most_opposite)

# %% [markdown]
# ## The Assistant Axis and the traits
# Which traits point the same way as "being the assistant", and which point towards the role
# personas? Positive cosine: expressing the trait moves the model towards its default assistant
# persona; negative: away from it. Below, the alignment traits.

# %%
extract.plot_axis_cosines(vectors, shared_layer, traits_dir)
plt.show()
display(extract.alignment_table(vectors))

# %% [markdown]
# ## Using the vectors
# Everything is in `traits/`: `vectors.safetensors` (one `[layers, hidden]` tensor per trait plus
# `assistant_axis`, raw mean differences, metadata in the file header), `metadata.csv/.parquet`,
# the per-layer separation and the held-out projections. In code:
#
# ```python
# from traitspace.extract import load_outputs
# vectors = load_outputs(config.run_dir)
# vectors.layer_of("cheerful"); vectors.unit("cheerful")   # unit direction at its layer
# scores = vectors.project(capture_conversations(loaded, conversations, layers=vectors.layers_needed(),
#                                                pooling=vectors.info["pooling"]))
# ```

# %%
print(extract.write_summary(vectors, traits_dir, settings.separation_threshold).read_text())
