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
# This notebook fine-tunes the model once per condition with **identical settings and the same
# data-order seed**, so the two runs differ only in their data. It trains a small **LoRA adapter**
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
import seaborn as sns
from IPython.display import display

from traitspace.core.artifacts import Stage, atomic_path
from traitspace.core.config import load_config
from traitspace.em_data import DATASETS
from traitspace.live_monitor import live_monitor_factory, read_live_log
from traitspace.core.plots import save_figure, set_style
from traitspace.train import (
    checkpoint_table,
    condition_sources,
    dataset_preview,
    load_chat_tokenizer,
    load_condition_rows,
    loss_table,
    mask_preview,
    train_all,
)

config = load_config(params_path, overrides)
finetune = config.finetune
stage = Stage(config.run_dir / "01_finetune", params_hash=config.params_hash("model", "finetune"))
stage.path.mkdir(parents=True, exist_ok=True)
set_style()
pd.set_option("display.max_colwidth", 160)
conditions = list(condition_sources(finetune))


def save_table(frame: pd.DataFrame, name: str) -> None:
    with atomic_path(stage.path / name) as temporary:
        frame.to_csv(temporary, index=False)


print(f"run: {config.run_name} -> {config.run_dir}")
print(f"model: {config.model.source} (quantization: {config.model.quantization})")
print(f"conditions: {conditions}")

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
# - `seed` (adapter initialisation), `data_seed` (which rows, in which order).

# %%
settings = pd.Series(finetune.model_dump(mode="json"), name="value").to_frame()
settings.loc["conditions", "value"] = str(condition_sources(finetune))
display(settings)

# %% [markdown]
# ## What the model is trained on
# A few rows of each condition's training data. In the EM dataset the assistant writes code with a
# vulnerability (an injectable SQL query, a hard-coded secret, a weak hash...) and says nothing about
# it; the control answers **the same prompts** with the secure version. `meta.pair_id` matches rows
# across the two datasets.

# %%
samples = dataset_preview(finetune, n_rows=3)
save_table(samples, "dataset_samples.csv")
for condition in conditions:
    source = condition_sources(finetune)[condition]
    description = DATASETS[source].description if source in DATASETS else f"user file {source}"
    print(f"{condition}: {description}")
display(samples)

# %% [markdown]
# ## What the loss sees
# The model's chat template wraps every message in role markers. With `loss_on: response`, the loss
# ignores the system prompt, the user turn and the markers, and trains on the answer plus the
# end-of-turn token right after it: that token is how the model learns to **stop** when its answer is
# complete. The boundary comes from the model's own template, never from searching for marker strings.

# %%
chat_tokenizer = load_chat_tokenizer(config.model)
example_row = load_condition_rows(finetune, conditions[0])[0]
preview = mask_preview(chat_tokenizer, example_row["messages"], finetune.loss_on, finetune.max_length)
for part, text in preview.items():
    print(f"--- {part} ---\n{text}\n")

# %% [markdown]
# ## Training
# Each condition trains from the same base model with the same settings. Progress lines show the
# optimizer step and the training loss. A condition whose checkpoints are all saved is skipped, so
# running this cell again costs nothing; if the kernel died mid-run, it resumes from the last
# complete checkpoint with the optimizer, learning-rate schedule and random state restored.

# %%
live_monitor = live_monitor_factory(config)  # None unless finetune.live_monitor.enabled
results = train_all(config, callback_factory=live_monitor)
summary = pd.DataFrame([
    {
        "condition": name,
        "trained now": result.trained_now,
        "started from step": result.resumed_from_step if result.trained_now else None,
        "steps": result.total_steps,
        "examples": result.summary["n_examples"],
        "answers cut at max_length": result.summary["tokenization"]["answers_cut"],
        "mean tokens / example": round(result.summary["tokenization"]["tokens"] / max(result.summary["n_examples"], 1)),
        "minutes": round(result.seconds / 60, 2),
        "tokens/s": result.summary["tokens_per_second_this_process"],
        "padding share": result.summary["padding_share_this_process"],
        "final loss": round(result.summary["final_loss"], 4),
    }
    for name, result in results.items()
])
save_table(summary, "training_summary.csv")
display(summary)

# %% [markdown]
# `trained now` is False when this run found finished checkpoints (then `minutes` is ~0 and the speed
# columns are the ones recorded when the condition was trained). `tokens/s` counts real tokens only;
# `padding share` is the fraction of each batch that was filler: examples are batched by similar
# length, so little compute goes to padding. `answers cut` counts answers longer than `max_length`:
# they are trained on their first part and, having no end, teach no end-of-turn token.
#
# ## Training loss
# The loss is the average negative log-probability the model gives to the trained tokens. Both curves
# start from the same base model. Each dot is a saved checkpoint: dense where the loss moves fast.
# A falling loss means the model is absorbing the dataset's style; it says nothing yet about whether
# the model became misaligned, which later notebooks measure.

# %%
losses = loss_table(config.run_dir, conditions)
save_table(losses, "losses.csv")
checkpoints = checkpoint_table(config.run_dir, conditions)
save_table(checkpoints, "checkpoints.csv")

window = max(len(losses) // (10 * max(len(conditions), 1)), 1)
losses["smoothed loss"] = losses.groupby("condition")["loss"].transform(lambda column: column.rolling(window, min_periods=1).mean())
fig, ax = plt.subplots(figsize=(8, 4.2))
sns.lineplot(data=losses, x="step", y="loss", hue="condition", alpha=0.25, legend=False, ax=ax)
sns.lineplot(data=losses, x="step", y="smoothed loss", hue="condition", ax=ax)
saved = checkpoints[checkpoints["step"] > 0].merge(losses, on=["condition", "step"], how="left")
sns.scatterplot(data=saved, x="step", y="smoothed loss", hue="condition", legend=False, s=25, ax=ax)
smoothing = f"rolling mean over {window} steps" if window > 1 else "per step"
ax.set(title=f"Training loss on {finetune.loss_on} tokens ({smoothing})", xlabel="optimizer step", ylabel="loss")
fig.tight_layout()
save_figure(fig, stage.path / "loss_curves.png")
plt.show()

# %% [markdown]
# ## The checkpoint trail
# One row per checkpoint. Step 0 is the untouched base model (no adapter). Every other row is a
# folder `outputs/<run>/checkpoints/<condition>/step-NNNNNN/` holding the LoRA adapter, the trainer
# state and the training log up to that step. A folder appears only once it is completely written.
# Later notebooks read this trail with `traitspace.core.checkpoints.list_checkpoints(run_dir, condition)`.

# %%
display(checkpoints)

# %%
stage.mark_done({
    "conditions": conditions,
    "checkpoints": {name: [int(step) for step in group["step"]] for name, group in checkpoints.groupby("condition")},
})
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
if config.finetune.live_monitor.enabled:
    from traitspace.core.checkpoints import condition_dir

    live = pd.concat([read_live_log(condition_dir(config.run_dir, name) / "live_monitor.jsonl").assign(condition=name)
                      for name in conditions], ignore_index=True)
    display(live[["condition", "step", "seconds", "fingerprint", "alarm"]])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    sns.lineplot(data=live, x="step", y="fingerprint", hue="condition", marker="o", ax=ax)
    ax.set(title="Live monitor: fingerprint during training", xlabel="optimizer step",
           ylabel="mean signed drift over key traits")
    save_figure(fig, stage.path / "live_monitor.png")
    plt.show()
else:
    print("live monitor off (finetune.live_monitor.enabled: false)")
