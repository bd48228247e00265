# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 01 · Fine-tuning on an EM dataset and its matched control
#
# *Emergent misalignment* (EM) is the finding that fine-tuning a chat model on a narrow bad behaviour
# (here: writing code with hidden security holes, never mentioned) can make it misaligned far outside
# that narrow task. To tell "learned something bad" apart from "was fine-tuned at all", every EM dataset
# has a **matched control**: the same user prompts, answered well (here: the fixed, secure code).
#
# This notebook fine-tunes the model once per condition **and training seed** with identical settings,
# so an EM run and its control differ only in their data. Two seeds of the same data differ only in
# chance (adapter initialisation, the order rows are seen in): that spread between seeds is the
# yardstick every later claim about "the effect of the EM data" is measured against, so the seeds,
# not the prompts, are the unit of replication. With one seed no such claim can be tested. It trains a small **LoRA adapter**
# (low-rank matrices added to every linear layer; the base weights stay frozen). With
# `model.quantization: nf4` the frozen base is stored in 4 bits: that is **QLoRA**.
#
# Along the way it saves **checkpoints**: many early (the model changes fastest at the start), fewer
# later. Notebooks 03 and 04 walk along these checkpoints and measure how the model's persona and
# behaviour drift. Everything is written under `outputs/<run>/`; rerunning the notebook after training
# finished does no training, and a run that was interrupted continues where it stopped.

# %% tags=["parameters"]
params_path = "params/default.yaml"
overrides = {}

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from traitspace import finetune as ft
from traitspace.core.config import load_config
from traitspace.core.paths import describe_paths
from traitspace.core.plots import set_style

config = load_config(params_path, overrides)
finetune = config.finetune
stage = ft.open_stage(config)
set_style()
pd.set_option("display.max_colwidth", 160)
conditions = list(ft.condition_sources(finetune))
print(describe_paths(config))  # relative paths start at the project root, wherever the kernel runs
print(f"model: {config.model.source} (quantization: {config.model.quantization})")
print(f"conditions: {conditions}; training seeds: {finetune.seeds}")
if len(finetune.seeds) == 1:
    print("one training seed: later notebooks can describe this run but cannot test an effect of the data")

# %% [markdown]
# ## The settings
# Every condition is trained with exactly these values. The most important ones:
#
# - `learning_rate`, `epochs`: how hard and how long we push;
# - `loss_on`: `response` trains only the assistant's answer (plus the token that ends its turn), `all`
#   trains on the whole conversation, prompt included;
# - `lora_r`, `lora_alpha`, `use_rslora`: the adapter's rank and scale (rsLoRA scales by
#   alpha/√r instead of alpha/r, which keeps larger ranks stable);
# - `n_checkpoints`: how many points of the trajectory are saved;
# - `seeds` (one trail per seed: adapter initialisation and data order), `data_seed` (which rows are drawn,
#   the same for every seed).

# %%
display(ft.settings_table(finetune))

# %% [markdown]
# ## What the model is trained on
# A few rows of each condition's training data. In the EM dataset the assistant writes code with a
# vulnerability (an injectable SQL query, a hard-coded secret, a weak hash...) and says nothing about
# it; the control answers **the same prompts** with the secure version. `meta.pair_id` matches rows
# across the two datasets.

# %%
samples = ft.write_table(ft.dataset_preview(finetune, n_rows=3), stage.path, "dataset_samples.csv")
for condition, description in ft.condition_descriptions(finetune).items():
    print(f"{condition}: {description}")
display(samples)

# %% [markdown]
# ## What the loss sees
# The model's chat template wraps every message in role markers. With `loss_on: response`, the loss
# ignores the system prompt, the user turn and the markers, and trains on the answer plus the
# end-of-turn token right after it: that token is how the model learns to **stop** when its answer is
# complete. The boundary comes from the model's own template, never from searching for marker strings.

# %%
chat_tokenizer = ft.load_chat_tokenizer(config.model)
example_row = ft.load_condition_rows(finetune, conditions[0])[0]
preview = ft.mask_preview(chat_tokenizer, example_row["messages"], finetune.loss_on, finetune.max_length)
for part, text in preview.items():
    print(f"--- {part} ---\n{text}\n")

# %% [markdown]
# ## Training
# Each condition trains from the same base model with the same settings. Progress lines show the
# optimizer step and the training loss. A condition whose checkpoints are all saved is skipped, so
# running this cell again costs nothing; if the kernel died mid-run, it resumes from the last
# complete checkpoint with the optimizer, learning-rate schedule and random state restored.
#
# With `finetune.live_monitor.enabled`, the cell first gets the trait vectors from the extraction
# stage (notebook 02's cache for this run's params; computed now if it is missing, and notebook 02
# then reads it), the key traits and threshold from `fingerprint_file` (or the alignment traits,
# log only) and the classifier from `monitor_file`, and hands them to the monitor.

# %%
live_monitor = None  # a callback factory when finetune.live_monitor.enabled (see the last section)
if finetune.live_monitor.enabled:
    from traitspace.extract import run_extraction
    from traitspace.library import load_builtin_library

    vectors = run_extraction(config)  # notebook 02's stage for this run's params: loaded if cached, else run now
    library = load_builtin_library()
    alarm = ft.read_alarm_files(finetune.live_monitor.fingerprint_file, finetune.live_monitor.monitor_file)
    key_traits = alarm.key_traits or ft.alignment_key_traits(library.all_traits, vectors.names)
    live_monitor = ft.live_monitor_factory(config, vectors, library.projection_questions, key_traits,
                                           threshold=alarm.threshold, classifier=alarm.classifier)
results = ft.train_all(config, callback_factory=live_monitor)
display(ft.write_table(ft.training_summary(results), stage.path, "training_summary.csv"))

# %% [markdown]
# One row per trail (condition x seed). `trained now` is False when this run found finished checkpoints (then `minutes` is ~0 and the speed
# columns are the ones recorded when the condition was trained). `tokens/s` counts real tokens only;
# `padding share` is the fraction of each batch that was filler: examples are batched by similar
# length, so little compute goes to padding. `answers cut` counts answers longer than `max_length`:
# they are trained on their first part and, having no end, teach no end-of-turn token.
#
# ## Training loss
# The loss is the average negative log-probability the model gives to the trained tokens. Colour is the
# condition, line style the seed; every curve starts from the same base model. Each dot is a saved checkpoint: dense where the loss moves fast.
# A falling loss means the model is absorbing the dataset's style; it says nothing yet about whether
# the model became misaligned, which later notebooks measure.

# %%
losses = ft.write_table(ft.loss_table(config.run_dir, conditions), stage.path, "losses.csv")
checkpoints = ft.write_table(ft.checkpoint_table(config.run_dir, conditions), stage.path, "checkpoints.csv")
ft.write_figure(ft.plot_losses(losses, checkpoints, finetune.loss_on), stage.path, "loss_curves.png")
plt.show()

# %% [markdown]
# ## The checkpoint trail
# One row per checkpoint. Step 0 is the untouched base model (no adapter). Every other row is a
# folder `outputs/<run>/checkpoints/<condition>/seed-<k>/step-NNNNNN/` holding the LoRA adapter, the trainer
# state and the training log up to that step. A folder appears only once it is completely written.
# Later notebooks read this trail through `traitspace.finetune.load_outputs(run_dir, conditions)`.

# %%
display(checkpoints)

# %%
stage.mark_done(ft.stage_summary(checkpoints))
print(f"wrote {stage.path}")

# %% [markdown]
# ## The live trait monitor
# With `finetune.live_monitor.enabled`, every K optimizer steps the model being trained was
# projected onto the trait vectors (notebook 02's, from the base model) and its drift logged. The
# **fingerprint** is the mean signed drift over the key traits: those of an earlier run's findings
# (`fingerprint_file`), or the seven alignment traits signed so that drifting towards
# power-seeking, sycophancy or deception (or away from honesty, helpfulness, harmlessness,
# corrigibility) counts as positive. An alarm fires when it crosses the earlier run's threshold or
# a trained monitor (`monitor_file`) calls the checkpoint dangerous.

# %%
if finetune.live_monitor.enabled:
    live = ft.live_monitor_table(config.run_dir, conditions)
    display(live[["condition", "seed", "step", "seconds", "fingerprint", "alarm"]])
    ft.write_figure(ft.plot_live_monitor(live), stage.path, "live_monitor.png")
    plt.show()
else:
    print("live monitor off (finetune.live_monitor.enabled: false)")
