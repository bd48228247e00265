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
# **Is a vector real?** Part of the questions is *held out*: the vector is fitted on the other
# questions, then we check whether held-out positive conversations project higher than held-out
# negative ones (AUROC, Cohen's d). The same held-out check picks the layer.

# %% tags=["parameters"]
params_path = "params/default.yaml"
overrides = {}

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from traitspace import extract
from traitspace.core.artifacts import Stage
from traitspace.core.config import load_config
from traitspace.core.plots import set_style
from traitspace.library import load_builtin_library

config = load_config(params_path, overrides)
settings = config.extract
set_style()
pd.set_option("display.max_colwidth", 110)
traits_dir = config.run_dir / extract.OUTPUT_FOLDER
print(f"run: {config.run_name} -> {traits_dir}")
extract.settings_table(settings)

# %% [markdown]
# ## What will be read
# The trait library ships with the workbook: 240 persona traits in six families, 7 alignment traits
# (stored as `align_<name>`), 71 role personas and two disjoint question sets. Here is one trait's
# first prompt pair and the questions, with the held-out ones marked.

# %%
overview, questions = extract.plan_overview(load_builtin_library(), settings)
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
cached = Stage(traits_dir, extract.stage_hash(config, judge)).is_done()
vectors = extract.run_extraction(config, judge=judge)
print(extract.run_report(vectors, cached))
shared_layer = vectors.info["shared_layer"]

# %% [markdown]
# ## Which layer?
# For each layer we fit the vectors on the fitting questions and measure the held-out separation.
# The left panel shows the mean over traits; the dashed line marks the layer the vectors use
# (`extract.layer_selection`: best held-out AUROC, ties broken by Cohen's d; `layer_scope: shared`
# uses one layer for every vector so that they can be compared with each other).

# %%
extract.plot_separation_by_layer(extract.read_separation(traits_dir), shared_layer, traits_dir)
plt.show()

# %% [markdown]
# ## Validation table
# One row per vector at its layer, the least separated first. `separates` flags traits whose
# held-out AUROC reaches `extract.separation_threshold`; the others are kept (a later notebook may
# still find them useful) but should be read with care. `norm` is the length of the raw mean
# difference and `activation_norm` the typical length of an activation at that layer, for scale.

# %%
print(extract.validation_summary(vectors, settings.separation_threshold))
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
print(extract.write_summary(vectors, traits_dir).read_text())
