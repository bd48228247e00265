"""Stage 00, model check: a first look at a configured model before any experiment.

Does the chat template work and does the model follow a system prompt (replies with and without
one)? Do the hooks see the residual stream, and at which depth do two contrasting personas differ?

Output folder ``outputs/<run>/00_model_check/``:

- ``replies.csv``: setting, prompt, system_prompt_seen, reply (greedy)
- ``separation.csv``: layer, cosine, relative_distance between the two personas' mean activations
- ``layer_norms.png``: per-layer norm per persona, and the personas' distance per layer
- ``pca_middle_layer.png``: 2-D PCA of the middle layer's activations
- ``manifest.json``: the stage manifest (params hash of model, capture, model_check)

No later stage reads these files; :func:`load_outputs` is the one reader (for tests and reports).
"""

from __future__ import annotations

from .measure import (
    PersonaContrast,
    contrast_activations,
    layer_norm_table,
    measure_contrast,
    pca_2d,
    reply_table,
    separation_by_layer,
)
from .outputs import (
    OUTPUT_FOLDER,
    ModelCheckOutputs,
    load_outputs,
    save_contrast,
    save_replies,
    stage,
)
from .plots import plot_layer_profile, plot_pca

__all__ = [
    "OUTPUT_FOLDER",
    "ModelCheckOutputs",
    "PersonaContrast",
    "contrast_activations",
    "layer_norm_table",
    "load_outputs",
    "measure_contrast",
    "pca_2d",
    "plot_layer_profile",
    "plot_pca",
    "reply_table",
    "save_contrast",
    "save_replies",
    "separation_by_layer",
    "stage",
]
