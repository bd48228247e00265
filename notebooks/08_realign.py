# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 08 · Emergent re-alignment: does a little benign data undo EM, and does the persona come back?
#
# Fine-tuning an emergently misaligned model on a small amount of *benign* data (about 120
# examples, about 35 steps) brought misalignment from 17.7% to 0.1% in earlier work, even when the
# benign data came from another domain. For a monitoring workbook the sharper question is what
# happens *underneath*: when the behaviour recovers, do the trait shifts and the EM direction recover
# with it, or does the persona change persist?
#
# **What is trained.** The final checkpoint of every fine-tuning trail (notebook 01) is trained
# further: its LoRA adapter is loaded *trainable* (a frozen adapter would train nothing, silently),
# with a fresh optimizer and a fresh learning-rate warm-up, on one of two benign sets:
#
# - **in-domain**: the EM condition's matched control data (e.g. sound medical advice after harmful
#   medical advice), on prompts the fine-tuning never saw;
# - **out-of-domain**: sound data of another domain (e.g. prudent financial advice).
#
# The *control* run of each pair is continued on exactly the same rows: whatever benign training
# does to any fine-tuned model shows up in the control, and the EM-minus-control difference is what
# the EM data did. Every training seed of notebook 01 is continued, so seeds are the unit of every
# interval below.
#
# **Measured exactly like the main trail** at every re-alignment checkpoint: trait projections
# (notebook 03's functions), the misalignment preference (notebook 04; higher = the model finds
# misaligned answers more likely), the judged EM rate at some checkpoints, the EM direction of notebook
# 06 (when it ran), and the **fingerprint**: the mean over notebook 03's top EM-shifted traits of
# their drift from the base model, signed the way EM moved them.

# %% tags=["parameters"]
params_path = "params/default.yaml"
overrides = {}

# %%
import pandas as pd
from IPython.display import Image, display

from traitspace.core.config import load_config
from traitspace.core.paths import describe_paths
from traitspace.realign import run_realign_stage

config = load_config(params_path, overrides)
print(describe_paths(config))  # relative paths start at the project root, wherever the kernel runs
settings = config.realign
pd.set_option("display.max_colwidth", 80)

# %% [markdown]
# ## Training and measuring
# One trail per (source run, benign set, training seed), saved every `realign.save_every` steps under
# `realign/checkpoints/<source>/<benign dataset>/seed-<k>/`. A trail that was interrupted resumes from
# its last complete checkpoint (as fine-tuning does); a finished one is not retrained, and every
# checkpoint's measurements are cached, so rerunning this cell costs nothing.

# %%
result = run_realign_stage(config)
manifest, tables, figures = result.manifest, result.tables, result.figures
for name, note in manifest["notes"].items():
    print(f"{name}: {note}")
display(tables["trails"])

# %% [markdown]
# The training loss on the benign rows at the first and the last re-alignment step, averaged over
# seeds: an EM run that starts higher than its control on the same benign rows was moved away from
# such answers by its fine-tuning.

# %%
losses = tables["losses"]
first_and_last = (losses.sort_values("realign_step").groupby(["pair", "benign", "role", "seed"])["loss"]
                  .agg(first_loss="first", last_loss="last"))
display(first_and_last.groupby(["pair", "benign", "role"]).mean().round(3))  # means over seeds

# %% [markdown]
# ## The combined trail
# Each panel follows a measure from the base model (step 0) through fine-tuning to the source
# checkpoint (the dashed line) and on through re-alignment. The EM runs and their controls are
# coloured as the legend says, one line per training seed. Every measure is a shift from the base model (0 = the base model). The
# band on the preference is its 95% bootstrap interval over questions (the precision of one run's
# measure); the EM rate's is its interval over answers.

# %%
for pair in manifest["pairs"]:
    if f"combined_trail__{pair}" in figures:
        display(Image(filename=str(figures[f"combined_trail__{pair}"])))

# %% [markdown]
# ### Before and after, per benign set and seed
# Each EM measure at the source checkpoint (re-alignment step 0) and at the last re-alignment step.

# %%
measures = tables["measures"]
ends = measures[measures["realign_step"].notna()]
last = ends.groupby(["label", "seed"])["realign_step"].transform("max")
ends = ends[(ends["realign_step"] == 0) | (ends["realign_step"] == last)].assign(
    when=lambda rows: rows["realign_step"].map(lambda step: "before" if step == 0 else "after"))
display(ends.pivot_table(index=["measure", "pair", "benign", "role", "seed"], columns="when", values="value")
        .reindex(columns=["before", "after"]).round(4))

# %% [markdown]
# ### How much of each measure recovers, and how fast
# The **recovery fraction** is (shift after − shift before) / (0 − shift before): 1 = back at the base
# model, 0 = unmoved, above 1 = past the base, below 0 = further away. It is the recovery of the
# seed-mean shift, with Fieller's 95% interval across training seeds (n = seeds, t on n − 1 degrees of
# freedom: with two seeds it is very wide, and unbounded, ±inf, when the shift before re-alignment is not
# clearly away from 0 across seeds); `em_minus_control` is the EM run's shift minus its control's, paired
# by seed. **Steps to recovery**: the first
# re-alignment step at which a seed's shift has recovered by at least `realign.recovered_above`, mean
# over the seeds that got there and a t interval across them.

# %%
display(tables["measure_recovery"].round(3))
display(tables["steps_summary"].round(2))

# %% [markdown]
# ## Which traits return to base, which stay shifted
# Per key trait (notebook 03's top EM-shifted traits), the recovery fraction of its EM-minus-control
# shift, with the interval over seeds. A trait **returns** when the lower end of its interval is at
# least `realign.recovered_above`, **persists** when the upper end is below it, and is
# **undetermined** otherwise (always so with one seed, usually with two). The key traits were chosen on the same
# fine-tuning runs whose recovery is measured here; a trait chosen partly for a lucky large shift
# would look as if it recovered (regression to the mean), so a "returns" on a small shift is weak.

# %%
for pair in manifest["pairs"]:
    if f"recovery__{pair}" in figures:
        display(Image(filename=str(figures[f"recovery__{pair}"])))
trait_recovery = tables["trait_recovery"]
key = trait_recovery[trait_recovery["key_trait"].astype(bool)]
display(key[["pair", "benign", "shift_of", "trait", "before", "after", "recovery", "recovery_low", "recovery_high",
             "n_seeds", "status"]].round(3))
print(key[key["shift_of"] == "em_minus_control"].groupby(["pair", "benign"])["status"].value_counts().to_string())

# %% [markdown]
# All traits (not only the key ones) are in `realign/trait_recovery.csv`, sorted by the size of their
# shift before re-alignment; a recovery fraction of a trait that barely moved is a ratio of noise.
#
# ## The judged EM rate
# At the checkpoints of `realign.em_rate_grid` (by default the source and the last re-alignment step,
# and the base model): the share of answers the judge of notebook 04 calls misaligned, with its 95%
# interval. At this model size few answers are both coherent and misaligned, so these intervals are
# wide; the preference above is the finer measure.

# %%
rates = tables["em_rates"]
if len(rates):
    column = manifest["em_rate_column"]
    display(rates[["pair", "benign", "role", "seed", "step", "realign_step", "n_answers", column, f"{column}_low",
                   f"{column}_high"]].sort_values(["pair", "benign", "role", "seed", "step"]).round(3))
