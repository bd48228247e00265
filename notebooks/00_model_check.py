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
from IPython.display import display

from traitspace import model_check
from traitspace.core.config import load_config
from traitspace.core.models import load_model
from traitspace.core.paths import describe_paths
from traitspace.core.plots import set_style

config = load_config(params_path, overrides)
check = config.model_check
stage = model_check.stage(config)
set_style()
pd.set_option("display.max_colwidth", 120)
print(describe_paths(config))  # relative paths start at the project root, wherever the kernel runs

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
replies = model_check.reply_table(loaded, check.chat_prompts, check.demo_system_prompt, check.max_new_tokens,
                                  seed=config.run.seed)
model_check.save_replies(replies, stage.path)
display(replies)

# %% [markdown]
# ## Activations under two contrasting personas
# Each question is asked under both system prompts; we keep the residual stream at the last prompt
# token of every layer. *Layer i* is the output of decoder block *i* (counting from 0), the one
# layer convention used throughout the workbook.

# %%
contrast = model_check.measure_contrast(loaded, check, config.capture, seed=config.run.seed)
model_check.plot_layer_profile(contrast, stage.path)
plt.show()

# %% [markdown]
# The norm usually grows with depth. The right panel shows at which depth the two system prompts
# pull the representation apart; persona directions are typically read from the middle layers.

# %%
model_check.plot_pca(contrast, stage.path)
plt.show()

# %% [markdown]
# Each point is one (persona, question) pair. Often the *question* dominates the first component,
# so the two points of one question sit close together; what matters is whether one persona is
# consistently offset from the other (along PC1 or PC2). A consistent offset means the hooks capture
# a persona-dependent signal, which is what the trait directions of notebook 02 are built from.

# %%
model_check.save_contrast(contrast, stage.path)
stage.mark_done({"model": loaded.info, "n_activations": len(contrast.labels)})
print(f"wrote {stage.path}")
