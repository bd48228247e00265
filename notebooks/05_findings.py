# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 05 · Findings: the EM fingerprint, its lead time, and a trait-drift monitor
#
# This notebook turns the tables of notebooks 03 (trait projections) and 04 (behaviour) into the
# claims a writeup makes, each with its interval and sample size:
#
# 1. **Fingerprint and timing.** Which traits mark the EM run, and do they move *before* its answers
#    become misaligned? Key traits are chosen on one half of the projection prompts and measured on
#    the other half, so the fingerprint is never scored on the prompts that selected it.
# 2. **Monitor.** Can a small classifier on a checkpoint's trait drift tell dangerous checkpoints
#    from safe ones on a dataset it was not trained on? Compared with simpler baselines.
# 3. **Report.** Everything, with the run's parameters and an honest limitations section, as
#    `findings/report.md` and `findings/report.html`.

# %% tags=["parameters"]
params_path = "params/default.yaml"
overrides = {}

# %%
import matplotlib.pyplot as plt
from IPython.display import display

from traitspace import findings
from traitspace.core.config import load_config
from traitspace.core.paths import describe_paths
from traitspace.core.plots import save_figure, set_style

config = load_config(params_path, overrides)
print(describe_paths(config))  # relative paths start at the project root, wherever the kernel runs
settings = config.findings
set_style()
stage = findings.open_stage(config)
inputs = findings.load_inputs(config)
print(inputs.summary())

# %% [markdown]
# ## 0 · What the EM data did, across training seeds
# Every claim about an effect of the EM data is tested with training seeds as the unit: the EM runs'
# difference from their controls, averaged over seeds, against the **seed-pair null** (how much two
# seeds of the same data differ), with its interval across seeds. Resampling prompts only measures
# how precisely two fixed runs were compared, so no p-value below comes from prompts. With one seed
# nothing can be tested and the cell says so. The per-run analyses further down (timing, monitor)
# treat each training seed as one run.

# %%
for sentence in findings.seed_level_sentences(inputs.seed_level):
    print(sentence)
for caption, table in findings.seed_level_tables(inputs.seed_level, config.project.top_k).items():
    print(caption)
    display(table.round(4))

# %% [markdown]
# ## 1 · Do traits move before behaviour? Matched tests across seeds
# For each held-out training seed, the key traits are chosen on the *other* seeds (the largest
# EM-minus-control drifts at the last step). The **fingerprint** of a run is the mean signed drift
# over those traits; **behaviour** is the change of the judge-free misalignment preference from the
# base model (or the EM rate, `findings.behaviour_measure`). At each step where both were measured,
# the held-out seed's EM-minus-control difference of each is tested the same way: against the
# seed-pair null (how far two seeds of the same data drift apart), one-sided, Holm over steps. The
# lead is behaviour's first crossing minus the fingerprint's; "behaviour first" and "no crossing"
# count as results. With fewer than 3 seeds, or behaviour measured at a single trained step, the
# cell says that no lead time can be tested.

# %%
seed_timings = findings.seed_timings(inputs, settings)
for (em, control), timing in seed_timings.items():
    print(timing.sentence)
    if timing.testable:
        display(timing.per_seed)
seed_timing_table = findings.seed_timing_table(seed_timings)

# %% [markdown]
# ### Within one run: the prompt-half fingerprint (description, not a test of the data)
# The first seed's runs alone, as the seed project timed them. The **fingerprint** at each step is the
# mean, over the key traits, of the EM-minus-control drift signed so that the EM direction counts as
# positive. Its **threshold** comes from how much the
# fingerprint could move by chance: each measurement prompt's signed differential is flipped at
# random (the whole trajectory of a prompt at once) and the largest value over steps is recorded;
# the threshold is the 95th percentile of those maxima (`findings.threshold_method: permutation`;
# `control_spread` uses instead twice the control's own step-to-step spread). **Behaviour** crosses
# at the first evaluated step where the EM run's misalignment rate is above the control's beyond
# both Wilson 95% intervals. Both thresholds measure how precisely two fixed runs were compared,
# and the two tests differ in kind, so the lead time here is descriptive.

# %%
timings = findings.fingerprint_and_behaviour(inputs, settings, seed=config.run.seed)
for pair, timing in timings.items():
    print(f"{pair[0]} vs {pair[1]}: {timing.sentence}")
    display(timing.fingerprint.key_traits)
    fig = findings.plot_timing(timing, rate_column=settings.em_rate)
    save_figure(fig, findings.timing_figure(stage.path, pair[0]))
    plt.show()
timing_table = findings.timing_table(timings)
display(timing_table)

# %% [markdown]
# ## 2 · A monitor on trait drift
# One row per evaluated *trained* checkpoint of every run: its drift profile (each trait's drift as
# a percentage of the base model's activation norm) as features, labelled **dangerous** from the same
# behaviour series the timing uses (`findings.behaviour_measure`: the misalignment preference where
# every run has it at every step, else the EM rate) by `findings.danger_relative_to`: the default
# asks that it rise above the base model's beyond the seed-pair null at that step (the printed
# description says which rule applied). The base model (step 0) is left out: it is the same model in
# every run with zero drift by construction, and counting it would reward any feature that merely
# grows with training. Each classifier is trained on all datasets but one and tested on the held-out
# dataset, all its seeds at once (`held_out: dataset`); with several seeds it is also trained on all
# seeds but one and tested on the held-out seed (`held_out: seed`). Out-of-fold scores give AUROC, the false
# negative rate (dangerous checkpoints missed) and the false positive rate; each fold picks its
# decision threshold on its own training rows, so FNR and FPR are out-of-fold too. The 95% intervals
# resample whole runs (dataset x seed), because the checkpoints of one run are not independent.
# Baselines on the same folds: the absolute drift along the first principal component of the whole
# library and of the 7 alignment traits (paper 001's cluster PC1), the norm of the raw activation
# drift, 7 principal components of the raw activations, and 7 random activation directions, drawn
# `findings.n_random_draws` times: `random_percentile` says where each feature set's AUROC falls in
# that distribution (one draw says little). With only one EM dataset and its control (the default
# run), holding the EM dataset out leaves only control checkpoints to train on: no monitor can be
# trained for that fold (`untrained_folds`), and the held-out-dataset AUROC is undefined (the table
# says why); the held-out-seed rows still ask whether the monitor carries over to a new training run.
# `params/monitor.yaml` trains all datasets and two seeds to give the held-out-dataset question data.

# %%
monitor = findings.monitor_evaluation(inputs, settings, seed=config.run.seed)
print(monitor.description)
display(monitor.results)
if monitor.results["auroc"].notna().any():
    fig = findings.plot_monitor(monitor.results)
    save_figure(fig, findings.monitor_figure(stage.path))
    plt.show()

# %% [markdown]
# ### Which traits track behaviour?
# Spearman correlation, across evaluated checkpoints of every run (each training seed its own run;
# the base model counted once), between each trait's drift and the behaviour scores (misalignment
# rate, mean alignment score, coherence), with Benjamini-Hochberg q-values over all the tests. Drift
# and misalignment both grow with training, so `partial_rho` removes the training step first: a
# trait that tracks behaviour beyond "both moved" keeps a partial correlation. n is the number of
# checkpoints; with the default run's few evaluated checkpoints, read these as exploratory.

# %%
spearman = findings.trait_behaviour_spearman(inputs, settings)
if len(spearman):
    fig = findings.plot_spearman(spearman, k=15)
    save_figure(fig, findings.spearman_figure(stage.path))
    plt.show()
    display(spearman.sort_values("p_value").head(10)[["trait", "behaviour", "rho", "q_value", "partial_rho",
                                                      "partial_q", "n"]])
else:
    print("Too few evaluated checkpoints for a correlation.")

# %% [markdown]
# ## 3 · Explore any trait
# Search a trait, pick the conditions and a checkpoint. Beside the raw mean projections the explorer
# draws what the analysis tests: each run's drift from the base model and the EM-minus-control
# differential, with the analysis' own interval (across training seeds with several seeds, a
# bootstrap over prompts with one), the trait-space PCA trajectory with the chosen checkpoint ringed,
# and a table of the prompts (and judged answers) behind that checkpoint. (Interactive in JupyterLab;
# the executed copy keeps the widget's state.)

# %%
explorer = findings.trait_explorer(inputs, config)
explorer

# %% [markdown]
# ## 4 · The report
# Figures of notebooks 00-05, the tables above with their intervals, the run's parameters and
# provenance, and limitations written from what was measured. The tables are also saved as CSV
# (`fingerprint_timing.csv`, `monitor_results.csv`, `trait_behaviour_spearman.csv`), and the
# fingerprint (`fingerprint__<em>.json`) and fitted monitor (`monitor.joblib`) for notebook 01's live
# monitor in a later run.

# %%
findings.save_monitor_artifacts(monitor, timings, stage.path)
findings.save_findings_tables(stage.path, timing_table, monitor.results, spearman, seed_timing_table)
markdown_path, html_path = findings.write_report(config, inputs, timings, monitor, spearman, stage.path,
                                                 seed_timings=seed_timings)
stage.mark_done({"report": [str(markdown_path), str(html_path)]})
print(f"wrote {markdown_path} and {html_path}")
print("\n".join(findings.limitations(inputs, timings, monitor)))
