"""Steering sweeps: each direction at each alpha, resumable, stopping where coherence breaks down.

Every direction is steered at one layer, with alpha in units of that layer's typical residual norm
(:mod:`.scale`), so all directions, the random control included, add vectors of the same size at
the same alpha. The unsteered model (alpha 0) is measured once and shared by every direction.

Each side of 0 is swept outward (0.25, 0.5, 1, ... and -0.25, -0.5, -1, ...); a side stops at the
first alpha whose coherence rate falls below the threshold (that alpha is kept, flagged
``stopped_here``; larger ones are not measured): past it a "misalignment" reading would be a reading
of broken text. Paper 003 kept incoherence at or under 10%; ``coherence_reference: unsteered`` makes
the threshold a share of the unsteered model's own coherence, since a small model is often
incoherent unsteered. Without sampled answers there is no coherence and no side stops.

Each (direction, alpha) is stored by :class:`.results.ResultStore` under ``sweep/<direction>/alpha<+a>``
with a fingerprint of everything it depends on; a rerun reads it back instead of measuring it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch

from ..core.checkpoints import Checkpoint
from ..core.parts import combine_fingerprint
from .hooks import Intervention, Positions
from .measure import SUMMARY_KEYS, MeasureSetup, measure, paired_preference_change
from .results import ResultStore

CHANGE_KEYS = ("preference_change", "preference_change_low", "preference_change_high")
SWEEP_COLUMNS = ["direction", "kind", "alpha", "status", *SUMMARY_KEYS, *CHANGE_KEYS]
UNSTEERED_KEY = "sweep/unsteered"


@dataclass(frozen=True)
class SweepDirection:
    """One direction to sweep: its name, kind (``trait`` | ``em_direction`` | ``random``) and vector ``[H]``."""

    name: str
    kind: str
    vector: torch.Tensor

    def fingerprint(self) -> str:
        data = self.vector.detach().float().contiguous().numpy().tobytes()
        return combine_fingerprint(self.name, self.kind, hashlib.sha256(data).hexdigest())


def random_direction(hidden_size: int, seed: int) -> torch.Tensor:
    """A direction uniform on the sphere (the control: same layer, same alpha, so the same norm)."""
    generator = torch.Generator().manual_seed(int(seed))
    vector = torch.randn(hidden_size, generator=generator)
    return vector / vector.norm()


def sides(alphas: Sequence[float]) -> list[list[float]]:
    """The positive alphas ascending and the negative ones by increasing size (0 left out)."""
    values = sorted({float(alpha) for alpha in alphas if alpha != 0})
    return [side for side in ([a for a in values if a > 0], sorted((a for a in values if a < 0), reverse=True)) if side]


def coherence_threshold(unsteered: dict, min_coherence: float, reference: Literal["absolute", "unsteered"]) -> float:
    """The coherence rate below which a side stops (NaN: never stop, e.g. nothing was sampled)."""
    if reference == "absolute":
        return float(min_coherence) if np.isfinite(unsteered.get("coherence_rate", np.nan)) else float("nan")
    return float(min_coherence) * float(unsteered.get("coherence_rate", np.nan))


def run_sweep(
    loaded,
    checkpoint: Checkpoint,
    directions: Sequence[SweepDirection],
    layer: int,
    scale: float,
    alphas: Sequence[float],
    setup: MeasureSetup,
    store: ResultStore,
    *,
    settings_fingerprint: str,
    positions: Positions = "response",
    min_coherence: float = 0.9,
    coherence_reference: Literal["absolute", "unsteered"] = "unsteered",
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Measure every direction at every alpha on ``checkpoint`` (the caller activates its adapter).

    Returns ``SWEEP_COLUMNS``: one row per direction and measured alpha, alpha 0 (the shared unsteered
    measurement) included; ``status`` is ``measured``, ``stopped_here`` (coherence fell below the
    threshold at this alpha) or ``unsteered``; ``preference_change`` is the change from the unsteered
    model paired by question (its interval resamples questions, so the questions' own spread cancels).
    """
    base = combine_fingerprint(settings_fingerprint, checkpoint.identity(), str(layer), repr(float(scale)), positions)
    unsteered, _ = store.measured(UNSTEERED_KEY, base, lambda: measure(loaded, Intervention.none(), setup, checkpoint))
    threshold = coherence_threshold(unsteered.summary, min_coherence, coherence_reference)
    rows = []
    for direction in directions:
        rows.append({"direction": direction.name, "kind": direction.kind, "alpha": 0.0, "status": "unsteered",
                     **unsteered.summary, **dict.fromkeys(CHANGE_KEYS, 0.0)})
        for side in sides(alphas):
            for alpha in side:
                intervention = Intervention({layer: direction.vector}, alpha=alpha, op="add", scales={layer: scale},
                                            positions=positions)
                key = f"sweep/{direction.name}/alpha{alpha:+g}"
                fingerprint = combine_fingerprint(base, direction.fingerprint(), repr(alpha))
                result, computed = store.measured(
                    key, fingerprint, lambda: measure(loaded, intervention, setup, checkpoint))
                coherence = result.summary.get("coherence_rate", np.nan)
                stopped = bool(np.isfinite(threshold) and np.isfinite(coherence) and coherence < threshold)
                rows.append({"direction": direction.name, "kind": direction.kind, "alpha": alpha,
                             "status": "stopped_here" if stopped else "measured", **result.summary,
                             **paired_preference_change(result.preference, unsteered.preference, setup.n_boot)})
                if log and computed:
                    log(f"{direction.name} alpha {alpha:+g}: preference {result.summary['preference']:+.4f}, "
                        f"coherence {coherence:.2f}")
                if stopped:
                    break
    table = pd.DataFrame(rows, columns=SWEEP_COLUMNS)
    table.attrs["coherence_threshold"] = threshold
    return table.sort_values(["direction", "alpha"], kind="stable", ignore_index=True)
