# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 00 · Model check
#
# Run this before anything else. It loads the model named in the params file and answers three
# questions:
#
# 1. **Does the chat template work?** We show the model's replies with no system prompt and with a
#    strong persona system prompt. Some models add their own default system prompt (SmolLM2 does);
#    the table shows the system prompt the model *actually saw*, so nothing is silently inserted.
# 2. **Do the activation hooks see the residual stream?** We capture every layer's output at the last
#    prompt token under two contrasting system prompts.
# 3. **Where do the two personas differ?** Per-layer norms, the distance between the two personas'
#    mean activations, and a 2-D PCA of one layer.

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
from traitspace.model_check import contrast_activations, layer_norm_table, pca_2d, reply_table, separation_by_layer
from traitspace.core.models import load_model
from traitspace.core.plots import save_figure, set_style

config = load_config(params_path, overrides)
stage = Stage(config.run_dir / "00_model_check", params_hash=config.params_hash("model", "capture", "model_check"))
stage.path.mkdir(parents=True, exist_ok=True)
set_style()
pd.set_option("display.max_colwidth", 120)
print(f"run: {config.run_name} -> {config.run_dir}")

# %% [markdown]
# ## The model
# `info` records what was loaded: architecture, depth, dtype, device, and how the chat template
# treats system prompts (does it support a system role, and what default does it insert?).

# %%
loaded = load_model(config.model)
pd.Series(loaded.info, name="value").to_frame()

# %% [markdown]
# ## Replies with and without a system prompt
# Greedy decoding, so the table is reproducible. A model that follows system prompts should change
# its style in the second half of the table.

# %%
check = config.model_check
replies = reply_table(loaded, check.chat_prompts, check.demo_system_prompt, check.max_new_tokens, seed=config.run.seed)
with atomic_path(stage.path / "replies.csv") as tmp:
    replies.to_csv(tmp, index=False)
display(replies)

# %% [markdown]
# ## Activations under two contrasting personas
# Each question is asked under both system prompts; we keep the residual stream at the last prompt
# token of every layer. *Layer i* is the output of decoder block *i* (counting from 0), the one
# layer convention used throughout the workbook.

# %%
labels, activations = contrast_activations(
    loaded, check.contrast_system_prompts, check.contrast_questions,
    layers=config.capture.layers, batch_size=config.capture.batch_size,
)
norms = layer_norm_table(labels, activations)
separation = separation_by_layer(labels, activations)

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
sns.lineplot(data=norms, x="layer", y="mean_norm", hue="label", marker="o", ax=axes[0])
axes[0].set(title="Residual-stream norm per layer", ylabel="mean L2 norm")
sns.lineplot(data=separation, x="layer", y="relative_distance", marker="o", ax=axes[1], color="C2")
axes[1].set(title="Distance between the two personas' means", ylabel="|mean A − mean B| / mean norm")
fig.tight_layout()
save_figure(fig, stage.path / "layer_norms.png")
plt.show()

# %% [markdown]
# The norm usually grows with depth. The right panel shows at which depth the two system prompts
# pull the representation apart; persona directions are typically read from the middle layers.

# %%
middle_layer = sorted(activations)[len(activations) // 2]
coordinates, explained = pca_2d(labels, activations[middle_layer], seed=config.run.seed)
fig, ax = plt.subplots(figsize=(5.5, 4.5))
sns.scatterplot(data=coordinates, x="pc1", y="pc2", hue="label", s=60, ax=ax)
ax.set(title=f"Layer {middle_layer}: 2-D PCA of last-prompt-token activations",
       xlabel=f"PC1 ({explained[0]:.0%} of variance)", ylabel=f"PC2 ({explained[1]:.0%})")
fig.tight_layout()
save_figure(fig, stage.path / "pca_middle_layer.png")
plt.show()

# %% [markdown]
# Each point is one (persona, question) pair. Often the *question* dominates the first component,
# so the two points of one question sit close together; what matters is whether one persona is
# consistently offset from the other (along PC1 or PC2). A consistent offset means the hooks capture
# a persona-dependent signal, which is what the trait directions of notebook 02 are built from.

# %%
with atomic_path(stage.path / "separation.csv") as tmp:
    separation.to_csv(tmp, index=False)
stage.mark_done({"model": loaded.info, "n_activations": len(labels)})
print(f"wrote {stage.path}")
