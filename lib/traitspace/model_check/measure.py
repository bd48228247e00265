"""Notebook 00's measurements: replies with and without a system prompt, and activations under two
contrasting system prompts (per-layer norms, separation, 2-D PCA of one layer).

Pure computation on a loaded model; writing the results is :mod:`.outputs`' job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA

from ..core.hooks import capture_conversations
from ..core.sampling import generate_replies


def reply_table(loaded, prompts: Sequence[str], system_prompt: str, max_new_tokens: int, seed: int = 0) -> pd.DataFrame:
    """Greedy replies to each prompt without a system prompt (the model's default, made explicit)
    and with ``system_prompt``; the system prompt the model actually saw is recorded."""
    rows, conversations = [], []
    for setting, system in (("no system prompt", None), ("with system prompt", system_prompt)):
        for prompt in prompts:
            messages = loaded.chat.conversation(prompt, system=system)
            conversations.append(messages)
            seen = loaded.chat.normalize(messages)
            rows.append({
                "setting": setting,
                "prompt": prompt,
                "system_prompt_seen": seen[0]["content"] if seen[0]["role"] == "system" else "(folded into user turn)"
                if system is not None else "(none)",
            })
    replies = generate_replies(loaded, conversations, max_new_tokens=max_new_tokens, seed=seed)
    for row, reply in zip(rows, replies):
        row["reply"] = reply
    return pd.DataFrame(rows)


def contrast_activations(
    loaded,
    system_prompts: Mapping[str, str],
    questions: Sequence[str],
    layers="all",
    batch_size: int = 16,
) -> tuple[list[str], dict[int, torch.Tensor]]:
    """Last-prompt-token activations for every (system prompt, question) pair.

    The last prompt token is where the model has read the whole prompt and is about to answer,
    so it carries the persona the system prompt set up. Returns (labels, {layer: [n, hidden]}).
    """
    labels, conversations = [], []
    for label, system in system_prompts.items():
        for question in questions:
            labels.append(label)
            conversations.append(loaded.chat.conversation(question, system=system))
    activations = capture_conversations(loaded, conversations, layers=layers, pooling="last_prompt", batch_size=batch_size)
    return labels, activations


def layer_norm_table(labels: Sequence[str], activations: Mapping[int, torch.Tensor]) -> pd.DataFrame:
    """Mean residual-stream norm per layer and label: columns layer, label, mean_norm."""
    label_array = np.asarray(labels)
    rows = []
    for layer, vectors in activations.items():
        for label in dict.fromkeys(labels):
            subset = vectors[torch.from_numpy(label_array == label)]
            rows.append({"layer": layer, "label": label, "mean_norm": float(subset.norm(dim=1).mean())})
    return pd.DataFrame(rows)


def separation_by_layer(labels: Sequence[str], activations: Mapping[int, torch.Tensor]) -> pd.DataFrame:
    """Per layer, how far apart two labels' activations are: the cosine between the two label
    means and the distance between them relative to the mean norm. Columns layer, cosine,
    relative_distance."""
    label_array = np.asarray(labels)
    names = list(dict.fromkeys(labels))
    if len(names) != 2:
        raise ValueError(f"separation needs exactly two labels, got {names}")
    rows = []
    for layer, vectors in activations.items():
        first, second = (vectors[torch.from_numpy(label_array == name)].mean(0) for name in names)
        rows.append({
            "layer": layer,
            "cosine": float(torch.nn.functional.cosine_similarity(first, second, dim=0)),
            "relative_distance": float((first - second).norm() / vectors.norm(dim=1).mean()),
        })
    return pd.DataFrame(rows)


def pca_2d(labels: Sequence[str], vectors: torch.Tensor, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """2-D PCA coordinates of one layer's vectors, with the explained variance ratios."""
    pca = PCA(n_components=2, random_state=seed)
    coordinates = pca.fit_transform(vectors.numpy())
    frame = pd.DataFrame({"pc1": coordinates[:, 0], "pc2": coordinates[:, 1], "label": list(labels)})
    return frame, pca.explained_variance_ratio_


@dataclass
class PersonaContrast:
    """Everything the notebook shows about the two contrasting personas.

    ``norms`` (layer, label, mean_norm), ``separation`` (layer, cosine, relative_distance),
    ``pca`` (pc1, pc2, label) of ``middle_layer`` with its ``explained`` variance ratios.
    """

    labels: list[str]
    norms: pd.DataFrame
    separation: pd.DataFrame
    middle_layer: int
    pca: pd.DataFrame
    explained: np.ndarray


def measure_contrast(loaded, check, capture, seed: int = 0) -> PersonaContrast:
    """Capture the ``model_check`` section's contrast prompts with the ``capture`` section's layers
    and batch size, and summarise them per layer. The PCA is drawn at the middle captured layer,
    where persona directions are usually read."""
    labels, activations = contrast_activations(
        loaded, check.contrast_system_prompts, check.contrast_questions,
        layers=capture.layers, batch_size=capture.batch_size,
    )
    middle_layer = sorted(activations)[len(activations) // 2]
    coordinates, explained = pca_2d(labels, activations[middle_layer], seed=seed)
    return PersonaContrast(
        labels=labels,
        norms=layer_norm_table(labels, activations),
        separation=separation_by_layer(labels, activations),
        middle_layer=middle_layer,
        pca=coordinates,
        explained=explained,
    )
