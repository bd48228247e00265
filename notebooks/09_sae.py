# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 09 · Model diffing with a sparse autoencoder: which learned features change under EM?
#
# Notebooks 02-06 read the model along directions we chose (persona traits, the EM direction). A
# **sparse autoencoder** (SAE) learns its own directions instead: it rewrites one layer's residual
# vector as a sparse sum of learned *features* (here a TopK SAE: at most `k` features active per token).
# **Model diffing** then asks which features fire more or less on the evaluation answers after
# fine-tuning, EM minus its matched control, across training seeds (paper 003 found EM's "persona
# features" this way), and whether those features are our trait directions.
#
# 1. **The SAE**: trained on the *base* model's activations over a mixed prompt set (extraction,
#    projection and evaluation prompts plus generic chat), or a published SAE in SAE Lens's format
#    (`sae.published`). Its quality is measured on base activations *and* on every fine-tuned
#    checkpoint's: an SAE trained on the base model can reconstruct a fine-tuned model worse.
# 2. **The diff**: each feature's mean activation and firing frequency over the answer tokens of the
#    evaluation questions (chat-template tokens excluded), at every checkpoint of every training seed
#    (with `sae.answers: own`, only the checkpoints notebook 04 sampled), minus the base model; EM
#    minus control tested across training seeds against the seed-pair null.
# 3. **What the top features are**: cosines of their decoder directions with the trait vectors and the
#    EM direction of notebook 06; the answers they fire on most.
# 4. **Causal check**: the base model steered along the top features' decoder directions, a random SAE
#    feature as control (notebook 06's sweep and measure).
# 5. **Monitor baseline**: the top-k changed SAE features as one more feature set in notebook 05's
#    monitor comparison, on **the same rows, labels and folds**.

# %% tags=["parameters"]
params_path = "params/default.yaml"
overrides = {}

# %%
import pandas as pd
from IPython.display import Image, display

from traitspace.core.config import load_config
from traitspace.core.paths import describe_paths
from traitspace.sae import run_sae_stage

config = load_config(params_path, overrides)
print(describe_paths(config))  # relative paths start at the project root, wherever the kernel runs
settings = config.sae
pd.set_option("display.max_colwidth", 160)


def show(name):
    if name in figures:
        display(Image(filename=str(figures[name])))


# %% [markdown]
# ## Running the stage
# The base model is loaded once and adapters are swapped in. Token activations of the training mix are
# cached (`sae/activations.safetensors`), SAE training checkpoints its state every 100 steps
# (`sae/train_checkpoint.pt`), every checkpoint's diff is one stored part (`sae/features/`) and every
# steering setting one stored measurement (`sae/steering/`): an interrupted run resumes where it stopped.

# %%
result = run_sae_stage(config)
manifest, tables, figures = result.manifest, result.tables, result.figures
training = manifest["training"]
print(f"SAE at layer {manifest['layer']} (layer i = output of decoder block i): {manifest['d_sae']} features over "
      f"{manifest['d_in']} dimensions, {manifest['activation']} (k = {manifest['k']}); source: {training['source']}")
if training["source"] == "trained":
    print(f"trained {training['steps']} steps on {training['n_train_tokens']} token vectors "
          f"({training['conversations']} conversations by source) in "
          f"{training['seconds']:.0f} s" if training["seconds"] else "(training read back from an earlier run)")
print(f"answers read by the diff: {manifest['answers']} ({manifest['n_checkpoints']} fine-tuned checkpoints + the base model); "
      f"diff time per newly measured checkpoint: {manifest['diff_seconds_per_checkpoint']}")

# %% [markdown]
# ## 1 · How good is the SAE, on the base model and on the fine-tuned checkpoints?
# *Fraction of variance explained* = 1 − squared reconstruction error / total variance of the token
# vectors; *mean L0* = features active per token; *dead-feature share* = features that fired on none of
# these tokens (it grows when fewer tokens are read: `n_vectors` says how many). The first rows are base
# activations on conversations held out of training; the rest are the evaluation answers' tokens at the
# base model and at each fine-tuned checkpoint. A fine-tuned checkpoint reconstructed much worse than the
# base model has moved into directions the SAE never learned, and its diff misses that part.

# %%
show("quality")
display(tables["quality"].round(4))
if len(tables["training_loss"]):
    print("training loss (normalised units), first and last steps:")
    display(tables["training_loss"].iloc[[0, len(tables["training_loss"]) // 2, -1]].round(4))

# %% [markdown]
# ## 2 · Which features change, EM minus control?
# For each feature: its change from the base model at each run's final checkpoint, EM minus
# control averaged over training seeds, with a 95% t interval across seeds and a pooled t-test against
# the seed-pair null (Benjamini-Hochberg over all features: `q_value`, `significant`). With one seed per
# condition the interval and test are undefined and the table says NaN. Ranked by |difference| of the
# mean activation, and separately of the firing frequency.

# %%
show("top_mean_activation")
columns = ["em", "rank", "feature", "em_change", "control_change", "differential", "ci_low", "ci_high", "q_value",
           "significant", "n_em_seeds", "n_control_seeds", "closest", "cos_em_direction"]
display(tables["top_mean_activation"][columns].round(4))

# %%
show("top_frequency")
display(tables["top_frequency"][columns].round(4))
tested = tables["tested"]
for (em, measure), group in tested.groupby(["em", "measure"]):
    print(f"{em}, {measure}: {int(group['significant'].sum())} of {len(group)} features beyond the seed-pair null "
          f"(BH q < 0.05; {int(group['n_em_seeds'].iloc[0])} EM and {int(group['n_control_seeds'].iloc[0])} control seeds)")

# %% [markdown]
# ## 3 · Are the top features trait directions?
# Cosine of each top feature's decoder direction (what the feature adds to the residual stream) with
# every trait vector at the SAE's layer and with notebook 06's EM direction (when notebook 06 ran). A
# random direction exceeds |cos| = `chance_abs_cosine` only 5% of the time in this many dimensions; a
# cosine above it says "more aligned than chance", not "the same mechanism". The `closest` column above
# lists each feature's three closest traits.

# %%
show("cosines")
print(f"|cos| a random direction exceeds 5% of the time: {manifest['chance_abs_cosine']:.3f}")

# %% [markdown]
# ### The answers the top features fire on most
# At the EM condition's final checkpoints, the answers with the highest maximum activation of each top
# feature (one row per distinct answer).

# %%
display(tables["top_answers"].round(3))

# %% [markdown]
# ## 4 · Causal check: steering along the top features
# The base model steered at the SAE's layer along each top feature's decoder direction, oriented the
# way EM moved the feature, alpha in units of the layer's median token norm (notebook 06's convention),
# response tokens only; a random live SAE feature (grey, dashed) is the control. Measure: the change of
# the misalignment preference from the unsteered model, paired by question (95% bootstrap interval over
# questions). A feature counts as beyond the random one when the two intervals do not overlap.

# %%
if len(tables["sweep"]):
    show("sweep")
    display(tables["against_random"].round(4))
else:
    print("no steering (sae.n_steer: 0)")

# %% [markdown]
# ## 5 · The SAE baseline in notebook 05's monitor comparison
# The monitor of notebook 05 asks whether a small classifier on a checkpoint's features tells dangerous
# checkpoints from safe ones on a dataset (or seed) it was not trained on. The rows below marked
# "notebook 05" are its trait sets and baselines, recomputed here by the same function on the same run
# and params; the SAE row uses **the same checkpoints, the same danger labels and the same folds**
# (one dataset with all its seeds held out; with several seeds, also one seed with all its datasets),
# intervals resampling the same runs. Its features are every SAE feature's change from the base model;
# the `monitor_k` largest are chosen inside each training fold (no labels, never the held-out rows).

# %%
print(manifest["monitor_description"])
monitor = tables["monitor_results"]
if len(monitor):
    show("monitor")
    display(monitor[["source", "held_out", "features", "model", "n_rows", "n_dangerous", "auroc", "auroc_low",
                     "auroc_high", "fnr", "fpr", "undefined"]].round(3))
