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
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import display
from matplotlib.ticker import MaxNLocator

from traitspace.core import traits as trait_math
from traitspace.core.artifacts import Stage, read_json
from traitspace.core.config import load_config
from traitspace.extract import (AXIS_NAME, build_plan, extraction_questions, run_extraction, selected_traits,
                                stage_hash, write_summary)
from traitspace.core.plots import save_figure, set_style
from traitspace.trait_library import load_builtin_library

config = load_config(params_path, overrides)
settings = config.extract
set_style()
pd.set_option("display.max_colwidth", 110)
traits_dir = config.run_dir / "traits"
print(f"run: {config.run_name} -> {traits_dir}")
pd.Series(settings.model_dump(), name="value").to_frame()

# %% [markdown]
# ## What will be read
# The trait library ships with the workbook: 240 persona traits in six families, 7 alignment traits
# (stored as `align_<name>`), 71 role personas and two disjoint question sets. Here is one trait's
# first prompt pair and the questions, with the held-out ones marked.

# %%
library = load_builtin_library()
entries = selected_traits(library, settings)
questions, heldout = extraction_questions(library, settings)
plan = build_plan(library, settings)
example = entries[0]
print(f"{len(entries)} traits ({sum(e.kind == 'alignment' for e in entries)} alignment), "
      f"{plan.loc[plan['side'] == 'role', 'group'].nunique()} roles, {len(questions)} questions, "
      f"{len(plan)} conversations in all")
print(f"\nTrait {example.name!r}: {example.trait.definition}")
print(f"  positive: {example.trait.positive[0]}")
print(f"  negative: {example.trait.negative[0]}")
pd.DataFrame({"question": questions, "use": ["held out" if i in heldout else "fit" for i in range(len(questions))]})

# %% [markdown]
# In `response` mode an optional **judge** can drop answers that do not do what the system prompt
# asked (a "cheerful" answer that is not cheerful). The workbook's judges score alignment and
# coherence, not arbitrary persona traits, so no trait judge is available here: the filter is off
# and every answer is kept. (`traitspace.extract.run_extraction(config, judge=...)` accepts any
# function `judge(trait, questions, answers) -> scores 0-100` if you have one.)

# %%
judge = None
if settings.mode == "response":
    print("response mode: no trait judge available, so every generated answer is kept")
else:
    print("prompt mode: nothing is generated, so there is nothing to judge")

# %% [markdown]
# ## Extraction (cached)
# The stage is cached by the hash of the `model` and `extract` parameters: a rerun with the same
# parameters loads `traits/vectors.safetensors` and does no model work at all.
#
# Speed trick: every question asked under one system prompt shares all tokens up to the question.
# The extraction runs that shared prefix once, keeps its attention keys and values, and runs only
# the question tokens on top (exact, because attention is causal).

# %%
cached = Stage(traits_dir, stage_hash(config, judge)).is_done()
vectors = run_extraction(config, judge=judge)
manifest = read_json(traits_dir / "manifest.json")
print("loaded from cache" if cached else "extracted now")
print(f"extraction took {manifest['seconds']:.0f} s when it ran; timings: {manifest['timings']}")
print(f"tokens run: {manifest['tokens_run']:,} (without prefix sharing: {manifest['tokens_without_prefix_sharing']:,})")
print(f"{len(vectors)} vectors of shape {tuple(vectors.vectors[AXIS_NAME].shape)} "
      f"(layers x hidden); layer convention: {vectors.info['layer_convention']}")

# %% [markdown]
# ## Which layer?
# For each layer we fit the vectors on the fitting questions and measure the held-out separation.
# The left panel shows the mean over traits; the dashed line marks the layer the vectors use
# (`extract.layer_selection`: best held-out AUROC, ties broken by Cohen's d; `layer_scope: shared`
# uses one layer for every vector so that they can be compared with each other).

# %%
separation = pd.read_csv(traits_dir / "separation_by_layer.csv")
metadata = vectors.metadata.reset_index(drop=True)
shared_layer = vectors.info["shared_layer"]
trait_separation = separation[separation["kind"] != "axis"]
by_layer = trait_separation.groupby("layer")[["auroc", "cohens_d"]].mean().reset_index()

fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
sns.lineplot(data=by_layer, x="layer", y="auroc", marker="o", ax=axes[0], label="traits, mean AUROC")
sns.lineplot(data=separation[separation["kind"] == "axis"], x="layer", y="auroc", marker="s", ax=axes[0],
             label="Assistant Axis AUROC")
axes[0].axvline(shared_layer, ls="--", color="grey")
axes[0].set(title="Held-out separation by layer", ylabel="AUROC (0.5 = chance)", ylim=(0.4, 1.02))
sns.lineplot(data=by_layer, x="layer", y="cohens_d", marker="o", ax=axes[1], color="C2")
axes[1].axvline(shared_layer, ls="--", color="grey")
axes[1].set(title="Held-out Cohen's d by layer (mean over traits)", ylabel="Cohen's d")
for ax in axes:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
fig.tight_layout()
save_figure(fig, traits_dir / "separation_by_layer.png")
plt.show()

# %% [markdown]
# ## Validation table
# One row per vector at its layer. `separates` flags traits whose held-out AUROC reaches
# `extract.separation_threshold`; the others are kept (a later notebook may still find them
# useful) but should be read with care. `norm` is the length of the raw mean difference and
# `activation_norm` the typical length of an activation at that layer, for scale.

# %%
trait_metadata = metadata[metadata["kind"] != "axis"]
n_separating = int(trait_metadata["separates"].sum())
print(f"{n_separating} of {len(trait_metadata)} traits separate on held-out questions "
      f"(AUROC >= {settings.separation_threshold}); "
      f"median AUROC {trait_metadata['auroc'].median():.2f}, median Cohen's d {trait_metadata['cohens_d'].median():.2f}")
axis_row = metadata[metadata["kind"] == "axis"].iloc[0]
print(f"Assistant Axis: layer {axis_row['layer']}, held-out AUROC {axis_row['auroc']:.2f}, Cohen's d {axis_row['cohens_d']:.2f}")
columns = ["trait", "kind", "category", "layer", "auroc", "cohens_d", "separates", "norm", "activation_norm",
           "cos_assistant_axis", "n_prompts", "n_heldout"]
display(metadata.sort_values("auroc")[columns].round(3).head(15))
not_separating = trait_metadata.loc[~trait_metadata["separates"], "trait"].tolist()
print(f"flagged (do not separate): {len(not_separating)}: {', '.join(not_separating[:40])}{' ...' if len(not_separating) > 40 else ''}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
sns.histplot(data=trait_metadata, x="auroc", hue="kind", bins=20, multiple="stack", ax=axes[0])
axes[0].axvline(settings.separation_threshold, ls="--", color="grey")
axes[0].set(title="Held-out AUROC per trait", xlabel="AUROC")
by_category = trait_metadata.assign(category=trait_metadata["category"].fillna("alignment"))
sns.boxplot(data=by_category, x="category", y="cohens_d", ax=axes[1], color="C0")
axes[1].set(title="Held-out Cohen's d by trait family", xlabel="", ylabel="Cohen's d")
axes[1].tick_params(axis="x", rotation=30)
fig.tight_layout()
save_figure(fig, traits_dir / "separation_per_trait.png")
plt.show()

# %% [markdown]
# What separation looks like: each dot is one held-out conversation projected onto the trait's
# vector. The best-separated traits are on the left, the worst on the right.

# %%
projections = pd.read_csv(traits_dir / "heldout_projections.csv")
ranked = trait_metadata.sort_values("auroc", ascending=False)["trait"].tolist()
shown = ranked[:4] + ranked[-4:] if len(ranked) > 8 else ranked
subset = projections[projections["trait"].isin(shown)]
fig, ax = plt.subplots(figsize=(12, 3.8))
sns.stripplot(data=subset, x="trait", y="value", hue="side", order=shown, dodge=True, ax=ax, size=5)
ax.set(title="Held-out projections: best and worst separated traits", xlabel="", ylabel="projection")
ax.tick_params(axis="x", rotation=20)
fig.tight_layout()
save_figure(fig, traits_dir / "heldout_projections.png")
plt.show()

# %% [markdown]
# ## How do the traits relate to each other?
# Cosine similarity between every pair of trait vectors at the shared layer, clustered so that
# similar traits sit together. Blocks of red are families of traits the model represents alike
# (it may not distinguish "cheerful" from "enthusiastic" at all); blue marks opposites.

# %%
names = vectors.trait_names
matrix = vectors.unit_matrix(names, layers=shared_layer).numpy()
cosines = pd.DataFrame(trait_math.cosine_matrix(matrix), index=names, columns=names)
show_labels = len(names) <= 60
grid = sns.clustermap(cosines, cmap="RdBu_r", vmin=-1, vmax=1, figsize=(12, 12) if len(names) > 20 else (7, 7),
                      xticklabels=show_labels, yticklabels=show_labels, method="average",
                      cbar_kws={"label": "cosine"})
grid.fig.suptitle(f"Trait-by-trait cosine similarity at layer {shared_layer}", y=1.01)
save_figure(grid.fig, traits_dir / "trait_cosine_clustermap.png")
plt.show()

pairs = cosines.where(np.triu(np.ones(cosines.shape, dtype=bool), k=1)).stack().rename("cosine").reset_index()
pairs.columns = ["trait_a", "trait_b", "cosine"]
print("most similar pairs:")
display(pairs.nlargest(8, "cosine").round(3))
print("most opposite pairs:")
display(pairs.nsmallest(8, "cosine").round(3))

# %% [markdown]
# ## The Assistant Axis and the traits
# Which traits point the same way as "being the assistant", and which point towards the role
# personas? Positive cosine: expressing the trait moves the model towards its default assistant
# persona; negative: away from it.

# %%
axis_cosines = metadata[metadata["kind"] != "axis"].set_index("trait")["cos_assistant_axis"].sort_values()
k = min(12, len(axis_cosines) // 2) or 1
extremes = pd.concat([axis_cosines.head(k), axis_cosines.tail(k)]).drop_duplicates()
fig, ax = plt.subplots(figsize=(8, max(3, 0.28 * len(extremes))))
ax.barh(extremes.index, extremes.values, color=["C3" if value < 0 else "C0" for value in extremes.values])
ax.axvline(0, color="black", lw=0.8)
ax.set(title=f"Cosine of trait vectors with the Assistant Axis (layer {shared_layer})", xlabel="cosine")
fig.tight_layout()
save_figure(fig, traits_dir / "assistant_axis_cosines.png")
plt.show()
alignment = metadata[metadata["kind"] == "alignment"][["trait", "polarity", "cos_assistant_axis", "auroc"]]
display(alignment.round(3))

# %% [markdown]
# ## Using the vectors
# Everything is in `traits/`: `vectors.safetensors` (one `[layers, hidden]` tensor per trait plus
# `assistant_axis`, raw mean differences, metadata in the file header), `metadata.csv/.parquet`,
# the per-layer separation and the held-out projections. In code:
#
# ```python
# from traitspace.extract import load_trait_vectors
# vectors = load_trait_vectors(config.run_dir)
# vectors.layer_of("cheerful"); vectors.unit("cheerful")   # unit direction at its layer
# scores = vectors.project(capture_conversations(loaded, conversations, layers=vectors.layers_needed(),
#                                                pooling=vectors.info["pooling"]))
# ```

# %%
summary_path = write_summary(vectors, traits_dir)
print(summary_path.read_text())
