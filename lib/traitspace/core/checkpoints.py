"""Where fine-tuning checkpoints live and which of them are complete.

Layout of one run (written by :mod:`traitspace.finetune`, read by every later notebook)::

    outputs/<run>/checkpoints/<condition>/seed-<k>/      one trail per (condition, training seed)
        training_plan.json        what is being trained: params hash, data, seed, step schedule
        step-000001/              LoRA adapter (save_pretrained) + training_log.json + trainer_state.json
        step-000002/ ...
        resume_state/             the latest full trainer checkpoint (optimizer, scheduler, RNG), only while
                                  training is unfinished; deleted when the condition is done
        manifest.json             written last: the trail finished (traitspace.core.artifacts.Stage)

A condition is trained once per training seed (``finetune.seeds``); the seeds, not the prompts, are
the unit of replication for any claim about the effect of the training data.

Step 0 is the untouched base model: it has no folder, and :func:`list_checkpoints` returns it with
``path=None`` (``AdapterSwitcher.use(None)`` runs the base model). A step folder appears in one
rename once everything in it is written, so a folder that exists is complete.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

CHECKPOINTS_DIRNAME = "checkpoints"
RESUME_DIRNAME = "resume_state"
PLAN_FILE = "training_plan.json"
TRAINING_LOG_FILE = "training_log.json"
TRAINER_STATE_FILE = "trainer_state.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
_STEP_FOLDER = re.compile(r"^step-(\d{6,})$")
_SEED_FOLDER = re.compile(r"^seed-(\d+)$")


BASE_CONDITION = "base"  # the condition name of the shared base model (step 0 of every trail)


@dataclass(frozen=True)
class Checkpoint:
    """One point of a training trail: a condition's step under one training seed, and its adapter folder.

    ``adapter_path`` None means the untouched base model, which is step 0 of every trail; stages
    that measure it once for all trails name it :func:`base_checkpoint`.
    """

    condition: str
    step: int
    adapter_path: Path | None
    seed: int = 0

    @property
    def is_base(self) -> bool:
        return self.adapter_path is None

    def identity(self) -> str:
        """What distinguishes this checkpoint's weights, for caches: "base", or the adapter file's
        name and content hash (an adapter retrained at the same step is new content). The content,
        not the modification time, so a run copied to another folder or machine keeps its caches."""
        if self.adapter_path is None:
            return "base"
        weights = sorted(Path(self.adapter_path).glob("adapter_model.*"))
        if not weights:
            raise FileNotFoundError(f"no adapter weights (adapter_model.*) in {self.adapter_path}")
        stat = weights[0].stat()
        return f"{weights[0].name}:{_content_digest(str(weights[0]), stat.st_size, stat.st_mtime_ns)}"


def base_checkpoint() -> Checkpoint:
    """The base model as one checkpoint shared by every trail."""
    return Checkpoint(BASE_CONDITION, 0, None)


def seed_folder_name(seed: int) -> str:
    return f"seed-{seed}"


def step_folder_name(step: int) -> str:
    return f"step-{step:06d}"


def checkpoints_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIRNAME


def condition_dir(run_dir: str | Path, condition: str) -> Path:
    """The folder holding one condition's trails (one ``seed-<k>`` folder per training seed)."""
    return checkpoints_root(run_dir) / condition


def trail_dir(run_dir: str | Path, condition: str, seed: int) -> Path:
    """The folder of one trail: a condition trained with one seed."""
    return condition_dir(run_dir, condition) / seed_folder_name(seed)


def is_complete_step_folder(path: Path) -> bool:
    """A step folder holds an adapter and its training log (renamed into place only when complete)."""
    return path.is_dir() and all((path / name).is_file() for name in (*ADAPTER_FILES, TRAINING_LOG_FILE))


def list_conditions(run_dir: str | Path) -> list[str]:
    """Conditions that have a checkpoint folder in this run, sorted by name."""
    root = checkpoints_root(run_dir)
    if not root.is_dir():
        return []
    return sorted(path.name for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))


def list_seeds(run_dir: str | Path, condition: str) -> list[int]:
    """Training seeds that have a trail folder for ``condition``, sorted."""
    folder = condition_dir(run_dir, condition)
    if not folder.is_dir():
        return []
    return sorted(int(match.group(1)) for path in folder.iterdir()
                  if path.is_dir() and (match := _SEED_FOLDER.match(path.name)))


def list_checkpoints(run_dir: str | Path, condition: str, seed: int = 0) -> list[Checkpoint]:
    """Complete checkpoints of one trail, sorted by step, the base model (step 0, path None) first.

    Raises FileNotFoundError when the run has no folder for that condition and seed (a misspelt
    condition would otherwise look like a run with only the base model).
    """
    folder = trail_dir(run_dir, condition, seed)
    if not folder.is_dir():
        available = {name: list_seeds(run_dir, name) for name in list_conditions(run_dir)}
        raise FileNotFoundError(
            f"no checkpoints for condition {condition!r} seed {seed} in {checkpoints_root(run_dir)}; "
            f"trails there (condition: seeds): {available or 'none (run notebook 01 first)'}"
        )
    steps = []
    for path in folder.iterdir():
        match = _STEP_FOLDER.match(path.name)
        if match and is_complete_step_folder(path):
            steps.append(Checkpoint(condition, int(match.group(1)), path, seed))
    return [Checkpoint(condition, 0, None, seed), *sorted(steps, key=lambda checkpoint: checkpoint.step)]


def list_trails(run_dir: str | Path, conditions: list[str] | None = None,
                seeds: list[int] | None = None) -> list[list[Checkpoint]]:
    """Every trail that has a folder, as lists of checkpoints: the named conditions (default: all
    present), each with the named seeds that exist (default: every seed present), in that order."""
    present = list_conditions(run_dir)
    trails = []
    for condition in (conditions if conditions is not None else present):
        if condition not in present:
            continue
        available = list_seeds(run_dir, condition)
        for seed in (seeds if seeds is not None else available):
            if seed in available:
                trails.append(list_checkpoints(run_dir, condition, seed))
    return trails


def read_training_log(run_dir: str | Path, condition: str, seed: int = 0) -> dict:
    """The training log stored with the latest complete checkpoint ({} when none exists yet)."""
    trail = list_checkpoints(run_dir, condition, seed)
    if trail[-1].adapter_path is None:
        return {}
    return json.loads((trail[-1].adapter_path / TRAINING_LOG_FILE).read_text())


def checkpoint_schedule(total_steps: int, n_checkpoints: int, first_step: int = 1) -> list[int]:
    """Optimizer steps at which to save: log-spaced (dense early, sparse late) from ``first_step``,
    strictly increasing, always ending at ``total_steps``.

    ``first_step`` 2 is for a learning-rate warm-up: its first step runs at learning rate 0, so the
    adapter after step 1 is still its zero-initialised start, a copy of the base model
    (:func:`traitspace.finetune.trainer.first_moving_step`).

    The geometric targets ``geomspace(1, total_steps, n)`` collide at small steps (1, 1.3, 1.7, ...),
    so each step is pushed to at least one past the previous one (early checkpoints then come every
    step) and capped so the remaining ones still fit below ``total_steps``. Asking for more
    checkpoints than steps saves every step.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if n_checkpoints < 1:
        raise ValueError(f"n_checkpoints must be >= 1, got {n_checkpoints}")
    first_step = min(max(first_step, 1), total_steps)
    count = min(n_checkpoints, total_steps - first_step + 1)
    if count == 1:
        return [total_steps]
    targets = np.rint(np.geomspace(first_step, total_steps, count)).astype(int)
    steps: list[int] = []
    for target in targets:
        steps.append(max(int(target), steps[-1] + 1) if steps else max(int(target), first_step))
    # Cap from the end: step i may be at most total_steps - (count - 1 - i); min() keeps the order strict.
    return [min(step, total_steps - (count - 1 - index)) for index, step in enumerate(steps)]


@lru_cache(maxsize=4096)
def _content_digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of an adapter file, hashed once per (path, size, mtime) in a process: every stage asks
    for the identity of every checkpoint, and a 32B model's adapter is hundreds of megabytes."""
    from .integrity import file_digest

    return file_digest(path)
