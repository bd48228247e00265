# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 06 · Causal tests: steering and ablation along trait directions and the EM direction
#
# Notebooks 03 to 05 only *correlate*: traits drift while behaviour changes. Here we intervene on the
# residual stream and watch the behaviour:
#
# - **Steering**: add a direction to the base model's residual stream at one layer, with a
#   coefficient alpha, and measure how misaligned it becomes. If a trait direction *causes*
#   misalignment, pushing along it should raise the measure more than pushing along a random
#   direction of the same size.
# - **The EM direction**: in the fine-tuned EM model, the mean activation of its misaligned answers
#   minus that of its aligned answers. Is it one of our trait directions, or a mix of them?
# - **Ablation**: remove a direction from the EM model (from its activations, or from the weights
#   of its LoRA adapter) and see whether the misalignment goes away.
#
# **Which checkpoint.** Checkpoints are per condition and training seed. Every test here uses the
# final checkpoint of training seed `steer.seed` (0 unless the params say otherwise) of the EM
# condition and of its control; steering starts from the base model. One seed means these are
# results for one fine-tuning run: they say what a direction does in that model, not how much it
# varies across runs.
#
# **Measures.** The *misalignment preference* (notebook 04): on matched pairs of answers written for
# each evaluation question, log p(misaligned answer) − log p(aligned answer) per token; higher = more
# misaligned; no judge, no sampling. Where the params ask for sampled answers, the judge of notebook
# 04 also gives the **EM rate** and the **coherence rate** of freshly sampled answers at each setting.
# Intervals are 95% bootstrap intervals over questions.
#
# **Alpha** is in units of the layer's typical residual norm (the median norm of one token's residual
# vector over the extraction prompts): alpha 1 adds a vector as long as a typical token's residual.

# %% tags=["parameters"]
params_path = "params/default.yaml"
overrides = {}

# %%
import warnings

import pandas as pd
from IPython.display import Image, display

from traitspace.core.config import load_config
from traitspace.core.paths import describe_paths
from traitspace.steer import run_steering_stage

config = load_config(params_path, overrides)
print(describe_paths(config))  # relative paths start at the project root, wherever the kernel runs
settings = config.steer
pd.set_option("display.max_colwidth", 120)
# transformers 5 renames the sampler's cache argument; its notice would repeat at every steered setting.
warnings.filterwarnings("ignore", message=".*past_key_values.*is deprecated", category=FutureWarning)

# %% [markdown]
# ## Running the tests
# The base model is loaded once and adapters are swapped in. Every measured setting (one direction at
# one alpha, one ablation) is stored as it is made under `steering/results/`, so an interrupted run
# resumes at the next setting.

# %%
result = run_steering_stage(config)
manifest, tables, figures = result.manifest, result.tables, result.figures
em, control = manifest["pair"]
checkpoint = manifest["checkpoints"][em]
print(f"EM condition {em!r} vs control {control!r}; final checkpoints of training seed {checkpoint['seed']} "
      f"(EM step {checkpoint['step']}, control step {manifest['checkpoints'][control]['step']})")
print(f"steered layer {manifest['layer']} (layer i = output of decoder block i); alpha unit = median token norm "
      f"{manifest['scale']:.3f}; steered tokens: {manifest['positions']}")
print(f"measures: preference on {manifest['n_pairs']} answer pairs"
      + (f", {manifest['n_prompts']} sampled answers per setting judged by {manifest['judge']}" if manifest["judge"]
         else "; no sampled answers (steer.samples_per_question: 0), so no EM rate and no coherence stop"))

# %% [markdown]
# ## The EM direction
# Read per layer on the EM checkpoint from the answers below (the note says which source was used and
# why), next to its **model-diff** variant (the same answers read by the EM checkpoint minus by the
# base model). When the judge found too few coherent misaligned answers, the direction comes from
# the judge-free answer pairs of questions *not* used to measure the preference.

# %%
for condition, record in manifest["em_directions"].items():
    print(f"{condition}: {record['n_misaligned']} misaligned vs {record['n_aligned']} aligned answers; {record['note']}")

# %% [markdown]
# ### Is it a trait direction?
# Signed cosine of the EM direction with every trait vector and the Assistant Axis, at the steered
# layer. The grey band holds 95% of the cosines with random directions; a trait counts as beyond that
# null when its p-value (share of random directions at least as aligned) survives Benjamini-Hochberg
# over all vectors. The random null is isotropic: residual-stream directions share a few large
# dimensions, so "beyond the null" says more aligned than chance, not the same mechanism.

# %%
cosines = tables["em_direction_cosines"]
if "em_direction_cosines" in figures:
    display(Image(filename=str(figures["em_direction_cosines"])))
display(cosines.groupby("variant").head(10).round(4))

# %% [markdown]
# ### Does the trait basis explain it?
# Least squares of the EM direction on all trait vectors at once (they overlap, so single cosines
# double count): the share of its squared norm the traits span, against the share a random direction
# would show (number of traits / hidden size), and the largest coefficients.

# %%
display(tables["em_direction_reading"].round(4))

# %% [markdown]
# Agreement across variants and conditions, per layer: the cosine of the EM direction with its
# model-diff variant and with the direction read the same way on the control checkpoint. A direction
# shared by the EM run and its control is something fine-tuning did, not something the EM data did.

# %%
display(tables["direction_agreement"].pivot(index="layer", columns="compared_with", values="cosine").round(3))

# %% [markdown]
# ## Steering sweeps
# The top EM-shifted traits of notebook 03 (each oriented the way EM moved it, so positive alpha
# pushes the base model the way fine-tuning on EM data did), the EM direction, and a random direction
# of the same norm (grey, dashed, in every panel). Each side of alpha 0 is swept outward and stops at
# the first alpha whose coherence rate falls below the threshold (x; the dotted line): past it a
# "misalignment" reading would be a reading of broken text.

# %%
sweep = tables["sweep"]
display(tables["top_traits"].round(4))
if "sweep" in figures:
    display(Image(filename=str(figures["sweep"])))
print(f"coherence threshold: {manifest['coherence_threshold']}")
display(sweep[["direction", "kind", "alpha", "status", "preference", "preference_change", "preference_change_low",
               "preference_change_high", "em_rate_of_coherent", "coherence_rate"]].round(4))

# %% [markdown]
# Does any direction move the misalignment preference more than the random control at the same
# alpha? The change from alpha 0 is paired by question (so the questions' own spread cancels); the
# table lines each direction up against the random direction at every alpha both reached, and calls
# it beyond the random control when the two 95% intervals do not overlap (a conservative reading).

# %%
change = ["preference_change", "preference_change_low", "preference_change_high"]
random_rows = sweep.loc[sweep["kind"] == "random", ["alpha", *change]]
against_random = (sweep[(sweep["kind"] != "random") & (sweep["alpha"] != 0)]
                  .merge(random_rows, on="alpha", suffixes=("", "_random"))
                  .assign(beyond_random=lambda t: (t["preference_change_low"] > t["preference_change_high_random"])
                          | (t["preference_change_high"] < t["preference_change_low_random"])))
display(against_random[["direction", "alpha", "preference_change", "preference_change_random", "beyond_random",
                        "coherence_rate"]].round(4))

# %% [markdown]
# ## Ablation on the EM checkpoint
# The EM checkpoint with a direction projected out of its residual stream (every layer, each layer's
# own vector, unless `steer.ablate_layers: chosen`), against the same checkpoint unablated; the
# control checkpoint and a random direction for scale. Bars: change of the preference from the
# unablated EM checkpoint, paired by question.

# %%
ablation = tables["ablation"]
if len(ablation):
    if "ablation" in figures:
        display(Image(filename=str(figures["ablation"])))
    display(ablation[["setting", "level", "preference", "preference_change", "preference_change_low",
                      "preference_change_high", "em_rate_of_coherent", "coherence_rate"]].round(4))
else:
    print("ablation skipped (steer.ablation: false)")

# %% [markdown]
# ### In the weights, across conditions
# The direction read on each condition, projected out of the output-side B matrices (attention and MLP
# outputs) of each condition's LoRA adapter, rescaled to keep each matrix's norm unless
# `steer.keep_norm: false`. The ablated adapters are saved under `steering/adapters/` and can be
# evaluated like any checkpoint. Rows: whose adapter; columns: whose direction; cells: change of the
# preference from that adapter unablated. If EM runs converge on one direction, the EM direction
# should reduce the EM adapter's preference more than the random direction does.

# %%
matrix = tables["ablation_matrix"]
if len(matrix):
    if "ablation_matrix" in figures:
        display(Image(filename=str(figures["ablation_matrix"])))
    display(matrix.round(4))
