"""Trait vectors as stored: the file format of ``traits/vectors.safetensors``, :class:`TraitVectors`
(the direction object later stages use) and the stage's one loader, :func:`load_outputs`."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..core import traits as trait_math
from ..core.hooks import resolve_layers
from .plan import AXIS_NAME

OUTPUT_FOLDER = "traits"
VECTORS_FILE = "vectors.safetensors"
FORMAT_VERSION = "traitspace.trait_vectors/1"
# Notebook 02's figures (drawn by :mod:`traitspace.extract.plots`), beside the vectors file.
SEPARATION_BY_LAYER_FIGURE = "separation_by_layer.png"
SEPARATION_PER_TRAIT_FIGURE = "separation_per_trait.png"
HELDOUT_PROJECTIONS_FIGURE = "heldout_projections.png"
COSINE_FIGURE = "trait_cosine_clustermap.png"
AXIS_COSINES_FIGURE = "assistant_axis_cosines.png"
FIGURES = (SEPARATION_BY_LAYER_FIGURE, SEPARATION_PER_TRAIT_FIGURE, HELDOUT_PROJECTIONS_FIGURE, COSINE_FIGURE,
           AXIS_COSINES_FIGURE)
LAYER_CONVENTION = (
    "layer i = output of decoder block i, counting from 0 (transformers hidden_states[i + 1]; "
    "the last layer is the raw block output, before the final norm)"
)

# One row per vector in metadata.csv / the safetensors header (controls: controls.csv and the
# header's "controls", same columns):
#   trait, kind (persona | alignment | axis | control), category (persona family), polarity
#   (alignment traits: "positive" = expressing the trait is aligned), layer (chosen),
#   auroc_heldout_questions / cohens_d_heldout_questions (on held-out questions under the fitting
#   prompts, at that layer, which these rows also chose), separates_heldout_questions (auroc >=
#   extract.separation_threshold), auroc_heldout_instructions / cohens_d_heldout_instructions (mean
#   over instruction folds: held-out pairs and questions, layer chosen on inner rows; nan with one
#   pair and for the axis), separates_heldout_instructions, n_instruction_folds, norm (|raw vector|
#   at that layer), activation_norm (mean |activation| there, for scale), cos_assistant_axis,
#   n_prompts (conversations the vector was fitted on, both sides), n_heldout (held-out-question
#   conversations, both sides), n_heldout_instructions (test conversations over all folds),
#   n_dropped_by_judge (response mode).
METADATA_COLUMNS = (
    "trait", "kind", "category", "polarity", "layer", "auroc_heldout_questions", "cohens_d_heldout_questions",
    "separates_heldout_questions", "auroc_heldout_instructions", "cohens_d_heldout_instructions",
    "separates_heldout_instructions", "n_instruction_folds", "norm", "activation_norm", "cos_assistant_axis",
    "n_prompts", "n_heldout", "n_heldout_instructions", "n_dropped_by_judge",
)


@dataclass
class TraitVectors:
    """Trait directions with their metadata, read from ``<run>/traits/vectors.safetensors``
    (the control contrasts are in :attr:`controls`, never among the vectors).

    Like repeng's ``ControlVector``: a direction object that knows which model, layers and method
    produced it. Each vector is the raw mean difference ``[L, H]`` for every layer; ``layer_of``
    gives the layer chosen for it by held-out separation.

    Example (notebook 03 projects checkpoints onto the vectors)::

        from traitspace.extract import load_outputs
        from traitspace.core.hooks import capture_conversations

        traits = load_outputs(config.run_dir)
        traits.names[:3]                                     # ['cheerful', 'melancholic', 'anxious']
        traits.layer_of("cheerful")                          # e.g. 14
        u = traits.unit("cheerful")                          # Tensor[H], unit length, at its layer
        U = traits.unit_matrix(["cheerful", "calm"], 14)     # Tensor[2, H], both at layer 14
        acts = capture_conversations(loaded, conversations, layers=traits.layers_needed(),
                                     pooling=traits.info["pooling"])
        scores = traits.project(acts)                        # DataFrame [n conversations, T traits]
    """

    vectors: dict[str, torch.Tensor]
    metadata: pd.DataFrame  # one row per vector, indexed by name (columns: METADATA_COLUMNS)
    info: dict[str, Any]  # the file header: model, mode, pooling, layer convention, ...
    path: Path | None = None

    @property
    def names(self) -> list[str]:
        """Vector names in stored order: persona traits, alignment traits, then ``assistant_axis``."""
        return list(self.vectors)

    @property
    def trait_names(self) -> list[str]:
        """Names of the trait vectors (everything but the Assistant Axis)."""
        return [name for name in self.vectors if name != AXIS_NAME]

    @property
    def num_layers(self) -> int:
        return int(next(iter(self.vectors.values())).shape[0])

    def __len__(self) -> int:
        return len(self.vectors)

    def __contains__(self, name: object) -> bool:
        return name in self.vectors

    def _check(self, name: str) -> None:
        if name not in self.vectors:
            close = difflib.get_close_matches(name, self.names, n=3)
            raise KeyError(f"no trait vector {name!r}" + (f"; close matches: {', '.join(close)}" if close else ""))

    def layer_of(self, name: str) -> int:
        """The layer chosen for ``name`` at extraction."""
        self._check(name)
        return int(self.metadata.loc[name, "layer"])

    def vector(self, name: str, layer: int | None = None) -> torch.Tensor:
        """Raw mean difference ``[H]`` at ``layer`` (default: :meth:`layer_of`)."""
        self._check(name)
        layer = self.layer_of(name) if layer is None else resolve_layers([layer], self.num_layers)[0]
        return self.vectors[name][layer]

    def unit(self, name: str, layer: int | None = None) -> torch.Tensor:
        """Unit-length direction ``[H]`` at ``layer`` (default: :meth:`layer_of`)."""
        vector = self.vector(name, layer)
        return vector / vector.norm()

    def unit_matrix(self, names: Sequence[str] | None = None, layers: int | Sequence[int] | None = None) -> torch.Tensor:
        """Unit directions stacked ``[T, H]``.

        ``names``: default all traits (without the axis). ``layers``: None = each vector at its own
        layer; an int = every vector at that layer; a sequence = one layer per name.
        """
        names = list(self.trait_names if names is None else names)
        if layers is None:
            per_name: list[int | None] = [None] * len(names)
        elif isinstance(layers, int):
            per_name = [layers] * len(names)
        else:
            per_name = list(layers)
            if len(per_name) != len(names):
                raise ValueError(f"{len(per_name)} layers given for {len(names)} names")
        return torch.stack([self.unit(name, layer) for name, layer in zip(names, per_name)])

    def layers_needed(self, names: Sequence[str] | None = None) -> list[int]:
        """The layers to capture so that :meth:`project` can score ``names`` (default: all vectors)."""
        return sorted({self.layer_of(name) for name in (self.names if names is None else names)})

    def project(self, activations: Mapping[int, torch.Tensor | np.ndarray], names: Sequence[str] | None = None) -> pd.DataFrame:
        """Projections ``activation . unit`` of captured activations, each vector at its own layer
        (:func:`traitspace.core.traits.project_at_layers`, the one projection).

        Args:
            activations: ``{layer: [n, H]}`` as returned by ``capture_conversations`` (must contain
                every layer in :meth:`layers_needed`).
            names: vectors to project on (default: all, the axis included).

        Returns:
            DataFrame ``[n, T]`` (float32) with one column per name; higher = more like the trait's
            positive side (for ``assistant_axis``: more assistant-like).
        """
        names = list(self.names if names is None else names)
        units = {name: self.unit(name) for name in names}
        names, values, _ = trait_math.project_at_layers(activations, units, {name: self.layer_of(name) for name in names})
        return pd.DataFrame(values, columns=names)

    @property
    def figures(self) -> list[Path]:
        """Notebook 02's figures that exist beside the vectors file (none before the notebook ran)."""
        if self.path is None:
            return []
        return [self.path.parent / name for name in FIGURES if (self.path.parent / name).is_file()]

    def separating(self, heldout: str = "instructions") -> list[str]:
        """Trait names whose held-out AUROC reached the threshold, on held-out ``"instructions"``
        (pairs and questions unseen; none with a single instruction pair) or ``"questions"``."""
        if heldout not in ("instructions", "questions"):
            raise ValueError(f"heldout must be 'instructions' or 'questions', got {heldout!r}")
        flags = self.metadata[f"separates_heldout_{heldout}"].eq(True)  # nan (a file without the column): no
        return [name for name in self.trait_names if flags.loc[name]]

    @property
    def controls(self) -> pd.DataFrame:
        """The control contrasts' rows (``METADATA_COLUMNS``), extracted and scored like the traits
        but stored only as metadata: they are never vectors, so nothing projects on them."""
        return metadata_frame(self.info.get("controls") or [])


_TEXT_COLUMNS = ("trait", "kind", "category", "polarity")


def metadata_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Metadata rows as stored in the header (JSON, nan written as null) back as a table: numeric
    columns numeric again (a column of nulls, e.g. Cohen's d of one-per-side folds, is nan)."""
    table = pd.DataFrame(list(records), columns=list(METADATA_COLUMNS))
    for column in METADATA_COLUMNS:
        if column not in _TEXT_COLUMNS and not column.startswith("separates"):
            table[column] = pd.to_numeric(table[column], errors="coerce")
    return table


def _find_vectors_file(path: str | Path) -> Path:
    path = Path(path)
    for candidate in (path, path / VECTORS_FILE, path / OUTPUT_FOLDER / VECTORS_FILE):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no {VECTORS_FILE} at {path}, {path / VECTORS_FILE} or {path / OUTPUT_FOLDER / VECTORS_FILE}")


def load_trait_vectors(path: str | Path) -> TraitVectors:
    """Read trait vectors from a run folder, its ``traits/`` folder, or the safetensors file."""
    from safetensors import safe_open

    file = _find_vectors_file(path)
    with safe_open(str(file), framework="pt") as handle:
        header = handle.metadata() or {}
        if header.get("format") != FORMAT_VERSION:
            raise ValueError(f"{file}: not a traitspace trait-vector file (format {header.get('format')!r})")
        vectors = {name: handle.get_tensor(name) for name in handle.keys()}
    records = json.loads(header["vectors"])
    metadata = metadata_frame(records).set_index("trait", drop=False)
    order = [record["trait"] for record in records]
    info: dict[str, Any] = {}
    for key, value in header.items():
        if key in ("vectors",):
            continue
        if key == "params_hash":  # a hex string that may look like a number: keep it as written
            info[key] = value
            continue
        try:
            info[key] = json.loads(value)
        except json.JSONDecodeError:
            info[key] = value
    return TraitVectors(vectors={name: vectors[name] for name in order}, metadata=metadata, info=info, path=file)


def load_outputs(run_dir: str | Path) -> TraitVectors:
    """The extraction stage's outputs for later stages: the trait vectors of ``<run_dir>/traits/``."""
    from ..core.integrity import require_intact

    file = Path(run_dir) / OUTPUT_FOLDER / VECTORS_FILE
    if not file.is_file():
        raise FileNotFoundError(f"no trait vectors at {file}: run notebook 02 (extract) for this run first")
    require_intact(file.parent, "02")  # a damaged file is named with its fix, not met as a safetensors error
    return load_trait_vectors(file)
