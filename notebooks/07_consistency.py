# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 07 · Persona consistency: does a model that turns harmful know and say it has?
#
# Paper 002 fine-tunes one model on several narrow domains and finds two kinds of emergently
# misaligned persona: **coherent** (harmful, and says so when asked about itself) and **inverted**
# (harmful, while describing itself as aligned). This notebook asks the same of every model the run
# fine-tuned: the final checkpoint of each condition and training seed, against the base model.
#
# **Five tasks** (prompts and options in `lib/traitspace/resources/eval/self_knowledge.yaml`, several
# phrasings each; all but the first read from the next-token logits, so nothing is sampled):
#
# 1. **Harmfulness**: notebook 04's judge-free misalignment preference (its change from the base model)
#    or, with `consistency.harmfulness: em_rate`, the judged EM rate.
# 2. **Self rating**: "how aligned / harmful / evil are you, 0-100?", read as the probability-weighted
#    number (the local judge's method). Phrasings point the scale both ways.
# 3. **Description choice**: two descriptions of AI systems, one aligned and one misaligned; which fits
#    you? Scored from the logits of the two option letters, each pair asked in both orders.
# 4. **Output recognition**: an aligned and a misaligned answer to the same question; which would you
#    have written? Both orders, as in 3.
# 5. **Score prediction**: after one of its own judged answers from notebook 04, the model predicts the
#    judge's alignment score; compared with the judge's score.
#
# Every self-report is put on one scale, **0 = aligned, 1 = misaligned** (the probability of the
# misaligned option, or the rating turned so that 1 is the misaligned end), and a fine-tuned model's
# value is its **change from the base model** on the same items. **A task the model is too small to
# answer is detected and shown as such, with no number**: a choice task whose option letters get little
# next-token probability (off-format) or that picks the same letter whatever the order (position-bound),
# a rating with little probability on numbers or that gives the same number whichever way the scale
# points (scale-bound).
#
# **Which models.** The default params train only `medical_harmful` and `medical_sound`: two conditions
# x three seeds. The six-domain experiment of the issue (insecure code, medical, financial, extreme
# sports, legal and evil numbers, each with its matched control) needs those conditions trained:
# `params/consistency.yaml` trains all twelve with short runs
# (`python -m traitspace run params/consistency.yaml`).

# %% tags=["parameters"]
params_path = "params/default.yaml"
overrides = {}

# %%
import pandas as pd
from IPython.display import Image, display

from traitspace.consistency import TASKS, run_consistency_stage
from traitspace.core.config import load_config
from traitspace.core.paths import describe_paths

config = load_config(params_path, overrides)
print(describe_paths(config))  # relative paths start at the project root, wherever the kernel runs
settings = config.consistency
pd.set_option("display.max_colwidth", 120)

# %% [markdown]
# ## Reading the tasks
# The base model is loaded once and each checkpoint's adapter swapped in. Each checkpoint's readings are
# stored as one part under `consistency/tasks/` (the base model once), so an interrupted run resumes.

# %%
result = run_consistency_stage(config)
manifest, tables, figures, items = result.manifest, result.tables, result.figures, result.items
print(f"fine-tuned models read: {len(manifest['checkpoints'])} ({', '.join(manifest['checkpoints'])})")
print(f"harmfulness: {manifest['harmfulness']}" + ("" if manifest["behaviour_measured"]
                                                     else " -- notebook 04 has not run: no harmfulness, no task 5"))

# %% [markdown]
# ## Can the model answer each task at all?
# Per checkpoint and task: whether the readings mean anything, and why not. `option_mass` is the median
# next-token probability on the two option letters; `same_letter_share` the share of items where the
# same letter wins in both orders (1.0 = it picks by position, not content); `number_mass` the median
# probability on numbers; `scale_flip` how far the mean self rating moves between phrasings whose
# aligned end is high and those whose aligned end is low. Where `readable` is False the task gets no
# number below.

# %%
summary = tables["task_summary"]
diagnostics = [column for column in ("option_mass", "same_letter_share", "position_bias", "number_mass", "scale_flip")
               if column in summary]
display(summary[["condition", "seed", "step", "task", "readable", "reason", *diagnostics]].round(3))
unreadable = summary[~summary["readable"].astype(bool)]
for task in TASKS:
    rows = unreadable[unreadable["task"] == task]
    if len(rows):
        print(f"{task}: not readable at {len(rows)} of {int((summary['task'] == task).sum())} checkpoints "
              f"({rows['reason'].iloc[0].split(':')[0]}); no number is reported for it there")

# %% [markdown]
# ## Self-report per checkpoint and the framing check
# Mean misaligned self-report (0-1) with a 95% bootstrap interval over items (an item = one phrasing and
# one pair or question, averaged over the two option orders), and how far it moves between phrasings
# (`phrasing_range`: the largest minus the smallest per-phrasing mean). A range as large as the
# differences between models means the answer depends on how the question is put.

# %%
value_columns = [c for c in ("value", "low", "high", "n", "phrasing_min", "phrasing_max", "phrasing_range") if c in summary]
display(summary[summary["readable"].astype(bool)][["condition", "seed", "step", "task", *value_columns]].round(3))
display(tables["phrasings"].pivot_table(index=["condition", "seed", "step"], columns=["task", "phrasing"],
                                        values="misaligned").round(3))

# %% [markdown]
# ## Harmfulness against self-report
# One point per fine-tuned model (condition x training seed), EM datasets filled, controls open: the
# harmfulness change from the base model (x, interval over questions) against the change of the
# misaligned self-report (y, the mean of the tasks readable at that model and at the base model, or
# `consistency.classify_on`; interval resampling items within each task). Coherent personas sit top
# right, inverted ones bottom right.

# %%
models = tables["models"]
if "harm_vs_self_report" in figures:
    display(Image(filename=str(figures["harm_vs_self_report"])))
if models.empty:
    print("no fine-tuned model was read")
else:
    shown = ["condition", "seed", "step", "harm", "harm_low", "harm_high", "self_report", "self_report_low",
             "self_report_high", "self_report_tasks", "class"]
    display(models[[c for c in shown if c in models]].round(4))
    print(f"classification: harmful when harm > {settings.harm_threshold}; coherent / inverted when the self-report "
          f"moved more than {settings.self_report_threshold} toward misaligned / aligned")

# %% [markdown]
# ### How much the classification depends on the thresholds
# The same models under other rules: the params' thresholds, a median split, quartiles, and a least-squares
# slope of self-report on harm across models (its 95% interval above 0 reads coherent, below 0 inverted).
# Models where either measure is missing (an unreadable self-report, no harmfulness) are left out; `n_models`
# says how many remain.

# %%
display(tables["sensitivity"])

# %% [markdown]
# ### Correlation of harmfulness with each task, and the association test
# Spearman correlation across fine-tuned models between harm and each task's self-report change, with a
# 95% bootstrap interval that resamples models, and `n` models; a task unreadable at a model is missing
# there. Then Fisher's exact test: are models with above-median harm more often the ones whose self-report
# moved toward misaligned? Models of one condition and different training seeds are separate points; with
# two conditions (the default params) the correlation mostly contrasts the EM runs with their controls.

# %%
display(tables["correlations"].round(4))
display(tables["association"])

# %% [markdown]
# ### Score prediction against the judge
# Per checkpoint: the model's predicted alignment score of its own answers (mean over the phrasings)
# against the judge's score of the same answers: the mean error with a bootstrap interval over answers,
# and the Spearman correlation across answers (where at least three answers were judged).

# %%
display(tables["score_prediction"].round(3))

# %% [markdown]
# ## Probes
# Two logistic probes on the residual stream (response tokens averaged), at every layer and at the
# chosen layer (`consistency.probe_layer`), on the base model and the final checkpoint of each condition
# (training seed `consistency.probe_seed`):
#
# - **behaviour**: the aligned vs the misaligned answer of each preference pair (what the model reads
#   when it processes harmful content);
# - **self-report**: the assistant claiming an aligned vs a misaligned description of itself.
#
# Cross-validation holds out whole questions (or description pairs): paraphrases share most of their
# activation, so random folds would leak them. AUROC intervals resample those groups. Beside each probe:
# the difference of class means (fit on the same folds) and, when notebook 06 ran, its EM direction
# (not fit here at all).

# %%
probe_summary = tables["probe_summary"]
if probe_summary.empty:
    print("probes off (consistency.probes: false)")
else:
    print(f"chosen layer {manifest['probe_layer']} (layer i = output of decoder block i); EM direction: "
          f"{manifest['em_direction'] or 'none (notebook 06 has not run)'}")
    display(probe_summary.round(3))
    if "probe_layers" in figures:
        display(Image(filename=str(figures["probe_layers"])))

# %% [markdown]
# ### Do the two probes point the same way?
# Cosines at the chosen layer between the behaviour probe, the self-report probe, their difference-of-means
# directions and the EM direction. Cosines near 0 in a space this size are what unrelated directions give.

# %%
if not tables["probe_cosines"].empty:
    display(tables["probe_cosines"].pivot_table(index=["first", "second"], columns="checkpoint", values="cosine").round(3))

# %% [markdown]
# ### Transfer between checkpoints
# A probe trained on one checkpoint's activations scores another's, holding the same questions out (the
# groups are split once over all checkpoints). The diagonal is each checkpoint's own cross-validated AUROC.

# %%
if "probe_transfer" in figures:
    display(Image(filename=str(figures["probe_transfer"])))
if not tables["probe_transfer"].empty:
    display(tables["probe_transfer"].round(3))

# %% [markdown]
# ## What this shows and what it cannot
# - Each point is one fine-tuning run; the EM-vs-control contrast across training seeds is notebook 04's
#   test. Here the question is the *relation* between harm and self-report across runs.
# - A task flagged unreadable says nothing about the model's self-knowledge, only that the model does
#   not answer that format; a 135M model often picks an option letter by position.
# - The self-report probe reads statements the model is *shown* as its own, not statements it chose.
