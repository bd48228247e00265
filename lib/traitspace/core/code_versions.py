"""The version of the code behind each stage's outputs, so a rerun never takes a stage finished by
older analysis code for current work.

A stage is skipped on rerun when its manifest's params hash matches (:class:`~.artifacts.Stage`).
The params hash covers what the user set, not the code: a fixed statistic would otherwise leave every
earlier run returning its old tables as if they were current. So each stage also records the number
below, and a stage whose manifest holds another number is computed again (its per-checkpoint
measurements are reused where their own fingerprints still match).

Bump a number in the commit that changes what its stage writes (a corrected statistic, a new column,
another figure); leave it when results stay the same (a refactor, a faster path).
``tests/code_versions.lock.json`` locks the source files each number was last reviewed against
(:data:`SOURCES` and everything they import from the package): a change to them fails
``tests/test_code_versions.py`` until its author either bumps the number or re-locks
(``python tests/code_lock.py --update``), so the decision is made once, in review, for every change.

Per-checkpoint measurements (``core.parts``, the steering store) are cached apart from their stage, so
a stage recomputed for a new version of its analysis reuses them. Their own numbers (the entries after
the stages', below) enter their fingerprints through :func:`versioned`: bump one when the measuring
code changes what it measures, and those measurements are taken again.

The training trails' numbers enter their params hash instead (from version 2 on, so trails trained
before these numbers existed keep theirs): checkpoints from other code are then reported, never
silently deleted or resumed, as for other parameters. Version 1 is what manifests written before this
module existed count as.
"""
from __future__ import annotations

CODE_VERSIONS: dict[str, int] = {
    "model_check": 1,
    "extract": 1,
    "finetune": 1,           # the stage's tables and figures over the trails
    "finetune.training": 1,  # a trail's checkpoints
    "project": 1,
    "behavior": 1,
    "findings": 1,
    "steer": 1,
    "consistency": 1,
    "realign": 1,
    "realign.training": 1,
    "sae": 1,
    # per-checkpoint measurements, cached apart from their stages
    "project.measure": 1,
    "behavior.sample": 1,
    "behavior.judge": 1,
    "behavior.preference": 1,
    "steer.measure": 1,
    "consistency.tasks": 1,
    "consistency.activations": 1,
    "sae.features": 1,
    "sae.training": 1,       # the SAE's training activations and weights (notebook 09)
}

# The code each number stands for, as modules or subpackages of ``traitspace`` (the lock adds what
# they import from the package). Read by the lock test only.
SOURCES: dict[str, tuple[str, ...]] = {
    "model_check": ("traitspace.model_check",),
    "extract": ("traitspace.extract",),
    "finetune": ("traitspace.finetune.outputs", "traitspace.finetune.tables"),
    "finetune.training": ("traitspace.finetune.trainer",),
    "project": ("traitspace.project",),
    "behavior": ("traitspace.behavior",),
    "findings": ("traitspace.findings",),
    "steer": ("traitspace.steer",),
    "consistency": ("traitspace.consistency",),
    "realign": ("traitspace.realign",),
    "realign.training": ("traitspace.realign.train",),
    "sae": ("traitspace.sae",),
    "project.measure": ("traitspace.project.stage",),
    "behavior.sample": ("traitspace.behavior.sample",),
    "behavior.judge": ("traitspace.behavior.judging",),
    "behavior.preference": ("traitspace.behavior.preference",),
    "steer.measure": ("traitspace.steer.measure", "traitspace.steer.sweep", "traitspace.steer.ablation"),
    "consistency.tasks": ("traitspace.consistency.reader", "traitspace.consistency.items"),
    "consistency.activations": ("traitspace.consistency.measure",),
    "sae.features": ("traitspace.sae.diff",),
    "sae.training": ("traitspace.sae.activations", "traitspace.sae.train"),
}


def code_version(name: str) -> int:
    """The current version of stage ``name``'s code (a key of :data:`CODE_VERSIONS`)."""
    try:
        return CODE_VERSIONS[name]
    except KeyError:
        raise KeyError(f"no code version for stage {name!r}; known: {sorted(CODE_VERSIONS)}") from None


def versioned(fingerprint: str, name: str) -> str:
    """A measurement's cache fingerprint with its code's version: unchanged at version 1 (measurements
    stored before versions existed stay fresh), suffixed ``+code-v<n>`` after."""
    version = code_version(name)
    return fingerprint if version == 1 else f"{fingerprint}+code-v{version}"


def training_hash_fields(name: str) -> dict[str, int]:
    """What a training run's identity (a trail's params hash, the SAE's checkpoint) adds for its code version: nothing at version 1 (trails
    trained before versions existed keep their hash), ``{"code_version": n}`` after."""
    version = code_version(name)
    return {} if version == 1 else {"code_version": version}
