"""What re-alignment trains: which checkpoints are continued, on which benign rows, and where each
trail lives.

A **re-alignment trail** continues one fine-tuned checkpoint (the *source*: a condition's checkpoint
under one training seed, by default its final one) on one benign set. For each EM/control pair both
the EM run and its control run are continued on the same benign rows, so whatever benign training
does to any fine-tuned model is measured by the control and can be subtracted.

Benign sets (``realign.benign_sets``):

- ``in_domain``: the EM condition's matched control data (``medical_sound`` for ``medical_harmful``);
- ``out_of_domain``: the first dataset of ``realign.out_of_domain`` from another domain
  (``financial_prudent`` for a medical pair).

Rows are drawn with ``realign.data_seed``, leaving out every row whose prompt the pair's
fine-tuning saw, so in-domain re-alignment is on held-out prompts, not a replay of the control run.

Layout (the finetune stage's trail layout under ``<run>/realign/``)::

    <run>/realign/checkpoints/<source>/<benign dataset>/seed-<k>/step-NNNNNN/   adapter + training log
    <run>/realign/checkpoints/<source>/<benign dataset>/seed-<k>/manifest.json  the trail finished

so :func:`traitspace.core.checkpoints.list_checkpoints` lists a trail under the condition label
``<source>/<benign dataset>``; its step 0 is the source checkpoint, not the base model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..core.checkpoints import Checkpoint, trail_dir
from ..core.code_versions import training_hash_fields
from ..core.config import FinetuneSection, RunConfig

STAGE_DIRNAME = "realign"


def realign_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / STAGE_DIRNAME


@dataclass(frozen=True)
class RealignTrail:
    """One source checkpoint continued on one benign set."""

    pair: str            # the EM condition of the pair
    role: str            # "em" or "control": which run of the pair the source is
    benign: str          # "in_domain" or "out_of_domain"
    benign_data: str     # the built-in dataset trained on
    source: Checkpoint   # the fine-tuned checkpoint continued (condition, step, adapter, seed)

    @property
    def seed(self) -> int:
        return self.source.seed

    @property
    def label(self) -> str:
        """The trail's condition label: ``<source condition>/<benign dataset>`` (its folder)."""
        return f"{self.source.condition}/{self.benign_data}"

    def folder(self, run_dir: str | Path) -> Path:
        return trail_dir(realign_root(run_dir), self.label, self.seed)

    def describe(self) -> dict:
        return {"pair": self.pair, "role": self.role, "source": self.source.condition, "benign": self.benign,
                "benign_data": self.benign_data, "seed": self.seed, "source_step": self.source.step,
                "label": self.label}


def benign_datasets(em_condition: str, settings) -> dict[str, str]:
    """Benign set name -> built-in dataset for the pair of ``em_condition`` (module docstring);
    ValueError naming the key when none fits."""
    from ..em_data.registry import DATASETS, EM_CONTROL_PAIRS

    if em_condition not in EM_CONTROL_PAIRS:
        raise ValueError(f"realign.pairs: {em_condition!r} is not a built-in EM dataset with a matched control "
                         f"({sorted(EM_CONTROL_PAIRS)}); its benign data is unknown")
    unknown = [name for name in settings.out_of_domain if name not in DATASETS]
    if unknown:
        raise ValueError(f"realign.out_of_domain: unknown datasets {unknown}; valid: {sorted(DATASETS)}")
    domain = DATASETS[em_condition].domain
    chosen = {}
    for benign in settings.benign_sets:
        if benign == "in_domain":
            chosen[benign] = EM_CONTROL_PAIRS[em_condition]
            continue
        others = [name for name in settings.out_of_domain
                  if DATASETS[name].domain != domain and not DATASETS[name].is_em]
        if not others:
            raise ValueError(f"realign.out_of_domain: none of {settings.out_of_domain} is a benign dataset outside "
                             f"the {domain!r} domain of {em_condition!r}")
        chosen[benign] = others[0]
    return chosen


def plan_trails(config: RunConfig, pairs: dict[str, str], trails: dict[tuple[str, int], list[Checkpoint]]
                ) -> list[RealignTrail]:
    """Every re-alignment trail of the run: each chosen pair's EM and control run, each seed, each
    benign set. ``pairs`` are notebook 03's EM -> control pairs; ``trails`` notebook 01's trails."""
    settings = config.realign
    wanted = settings.pairs if settings.pairs is not None else list(pairs)
    missing = [name for name in wanted if name not in pairs]
    if missing:
        raise ValueError(f"realign.pairs: {missing} are not EM conditions of notebook 03's pairs {pairs}")
    seeds = settings.seeds if settings.seeds is not None else list(config.finetune.seeds)
    planned = []
    for em in wanted:
        datasets = benign_datasets(em, settings)
        for seed in seeds:
            for role, condition in (("em", em), ("control", pairs[em])):
                source = source_checkpoint(trails, condition, seed, settings.source_step)
                planned.extend(RealignTrail(em, role, benign, data, source) for benign, data in datasets.items())
    return planned


def source_checkpoint(trails: dict[tuple[str, int], list[Checkpoint]], condition: str, seed: int,
                      step: int | None) -> Checkpoint:
    """The checkpoint of (condition, seed) at ``step`` (None: the final one), with a clear error."""
    trail = trails.get((condition, seed))
    if not trail or trail[-1].adapter_path is None:
        present = sorted(s for c, s in trails if c == condition)
        raise ValueError(f"realign.seeds: no trained checkpoint of {condition!r} for training seed {seed} "
                         f"(seeds with a trail: {present}); run notebook 01 for it or set realign.seeds")
    if step is None:
        return trail[-1]
    for checkpoint in trail:
        if checkpoint.step == step:
            return checkpoint
    raise ValueError(f"realign.source_step: {condition!r} seed {seed} has no checkpoint at step {step} "
                     f"(steps: {[checkpoint.step for checkpoint in trail[1:]]})")


def realign_finetune_section(config: RunConfig) -> FinetuneSection:
    """The training settings of re-alignment: the run's fine-tuning settings (loss mask, optimizer,
    scheduler, ...) with re-alignment's own data size, epochs, batch, learning rate and warm-up."""
    settings, finetune = config.realign, config.finetune
    return finetune.model_copy(update={
        "n_examples": settings.n_examples, "epochs": settings.epochs, "batch_size": settings.batch_size,
        "grad_accum": 1, "learning_rate": settings.learning_rate or finetune.learning_rate,
        "warmup_ratio": settings.warmup_ratio, "max_length": settings.max_length or finetune.max_length,
    })


def _first_prompt(row: dict) -> str:
    return next(message["content"] for message in row["messages"] if message["role"] == "user")


def benign_rows(config: RunConfig, trail: RealignTrail, em_control: tuple[str, str]) -> list[dict]:
    """The trail's benign rows: ``realign.n_examples`` rows of its dataset drawn with
    ``realign.data_seed``, none with a prompt the pair's fine-tuning trained on."""
    from .. import em_data
    from ..finetune.data import load_condition_rows

    settings = config.realign
    seen = {_first_prompt(row) for condition in em_control if condition in list(config.finetune.conditions)
            for row in load_condition_rows(config.finetune, condition)}
    rows = [row for row in em_data.build_dataset(trail.benign_data, seed=settings.data_seed)
            if _first_prompt(row) not in seen]
    if len(rows) < settings.n_examples:
        raise ValueError(f"realign.n_examples={settings.n_examples}: {trail.benign_data} has only {len(rows)} rows "
                         f"whose prompts fine-tuning did not see")
    return [{"messages": list(row["messages"]), "meta": dict(row.get("meta") or {})}
            for row in rows[: settings.n_examples]]


def adapter_digest(adapter_path: Path) -> str:
    """sha256 of an adapter's weights: a re-alignment trail belongs to these exact source weights."""
    digest = hashlib.sha256()
    for path in sorted(Path(adapter_path).glob("adapter_model.*")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def trail_params_hash(config: RunConfig, trail: RealignTrail) -> str:
    """Everything that shapes a re-alignment trail's checkpoints: model, training settings, the source
    adapter's weights, the benign dataset, the seed, the data draw, the checkpoint spacing and the
    training code's version (:mod:`traitspace.core.code_versions`)."""
    settings = config.realign
    data = {
        "model": config.model.model_dump(mode="json"),
        "training": realign_finetune_section(config).model_dump(mode="json", exclude={"conditions", "seeds", "live_monitor"}),
        "source": trail.source.condition, "source_step": trail.source.step,
        "source_weights": adapter_digest(trail.source.adapter_path),
        "benign_data": trail.benign_data, "seed": trail.seed, "data_seed": settings.data_seed,
        "save_every": settings.save_every,
        **training_hash_fields("realign.training"),  # the training code's version, from version 2 on
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def dense_schedule(total_steps: int, every: int) -> list[int]:
    """Save steps of a re-alignment trail: every ``every`` steps, and the last step."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    steps = list(range(every, total_steps + 1, every))
    return steps if steps and steps[-1] == total_steps else [*steps, total_steps]
