"""Per-checkpoint parts: one table per checkpoint of a stage, cached by a fingerprint.

The one cache scheme of the stages that measure every checkpoint (projection, behaviour sampling,
judging), so an interrupted run resumes and a checkpoint measured with the same settings is read
back instead of measured again. Layout of one folder::

    <folder>/<condition>/seed-<k>/step-<N>.parquet   the checkpoint's table
    <folder>/<condition>/seed-<k>/step-<N>.json      sidecar: fingerprint, rows, whatever the stage adds
    <folder>/<condition>/seed-<k>/step-<N>.<name>    optional attachments (e.g. mean activations)
    <folder>/base/step-000000.*                      the base model, once

Step 0 is the untouched base model in every trail, so its part is stored once, under
:data:`~traitspace.core.checkpoints.BASE_CONDITION`, and read back relabelled with the condition
and seed that ask for it. (Keyed on the step, not on ``adapter_path``: callers that only know a table's
(condition, step) build checkpoints without adapter paths.)

Write order is attachments, table, sidecar: a part counts as fresh only once its sidecar names the
fingerprint, and every file is written atomically, so a half-written part is never read. The
sidecar also records the sha256 of the table and of each attachment: a part damaged later is
measured again, and only it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd

from .artifacts import atomic_path, atomic_write_json, read_json
from .checkpoints import BASE_CONDITION, Checkpoint, seed_folder_name, step_folder_name

__all__ = ["CheckpointParts", "combine_fingerprint"]


def combine_fingerprint(*parts: str) -> str:
    """A short hash of several strings (a stage's settings, a checkpoint's identity, ...)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


class CheckpointParts:
    """The parts of one stage's per-checkpoint tables, under ``folder``.

    Usage::

        parts = CheckpointParts(run_dir / "behavior" / "answers")
        fingerprint = combine_fingerprint(settings_hash, checkpoint.identity())
        if not parts.is_fresh(checkpoint, fingerprint):
            parts.write(checkpoint, measure(checkpoint), fingerprint, extra={"seconds": 1.5})
        table = parts.read(checkpoint)
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @staticmethod
    def is_shared_base(checkpoint: Checkpoint) -> bool:
        return checkpoint.step == 0

    def path(self, checkpoint: Checkpoint) -> Path:
        """The table's file (the base model's one file for step 0 of any condition)."""
        name = f"{step_folder_name(checkpoint.step)}.parquet"
        if self.is_shared_base(checkpoint):
            return self.folder / BASE_CONDITION / name
        return self.folder / checkpoint.condition / seed_folder_name(checkpoint.seed) / name

    def sidecar_path(self, checkpoint: Checkpoint) -> Path:
        return self.path(checkpoint).with_suffix(".json")

    def attachment_path(self, checkpoint: Checkpoint, name: str) -> Path:
        """Where attachment ``name`` (e.g. ``"mean_activation.safetensors"``) of a part lives."""
        return self.path(checkpoint).with_suffix(f".{name}")

    def info(self, checkpoint: Checkpoint) -> dict[str, Any]:
        """The sidecar's contents ({} when there is none or it cannot be read)."""
        sidecar = self.sidecar_path(checkpoint)
        try:
            return read_json(sidecar) if sidecar.is_file() else {}
        except (OSError, ValueError):  # ValueError: bad JSON or bytes that are not UTF-8
            return {}

    def is_fresh(self, checkpoint: Checkpoint, fingerprint: str) -> bool:
        """The part exists, was written with this fingerprint (other settings: stale) and its table
        still has the content its sidecar recorded (a damaged part is measured again, alone)."""
        from .integrity import matches_record

        path = self.path(checkpoint)
        info = self.info(checkpoint)
        if not path.is_file() or info.get("fingerprint") != fingerprint:
            return False
        damaged = [path] if info.get("sha256") is not None and not matches_record(path, info) else []
        damaged += [self.attachment_path(checkpoint, name) for name, recorded in (info.get("attachments") or {}).items()
                    if not matches_record(self.attachment_path(checkpoint, name), recorded)]
        for file in damaged:
            print(f"damaged part {file}: measuring this checkpoint again", flush=True)
        return not damaged

    def write(
        self,
        checkpoint: Checkpoint,
        table: pd.DataFrame,
        fingerprint: str,
        extra: Mapping[str, Any] | None = None,
        attachments: Mapping[str, Callable[[Path], None]] | None = None,
    ) -> Path:
        """Write a part: each attachment through its writer (given a temporary path), then the
        table, then the sidecar ``{"fingerprint", "rows", **extra}`` last."""
        path = self.path(checkpoint)
        path.parent.mkdir(parents=True, exist_ok=True)
        for name, writer in (attachments or {}).items():
            with atomic_path(self.attachment_path(checkpoint, name)) as temporary:
                writer(temporary)
        with atomic_path(path) as temporary:
            table.to_parquet(temporary, index=False)
        from .integrity import file_record

        attached = {name: file_record(self.attachment_path(checkpoint, name)) for name in (attachments or {})}
        atomic_write_json(self.sidecar_path(checkpoint), {"fingerprint": fingerprint, "rows": len(table),
                                                          **file_record(path), "attachments": attached,
                                                          **(extra or {})})
        return path

    def read(self, checkpoint: Checkpoint) -> pd.DataFrame:
        """One checkpoint's table; the shared base part carries the asking checkpoint's condition and seed."""
        table = pd.read_parquet(self.path(checkpoint))
        if self.is_shared_base(checkpoint):
            if "condition" in table.columns:
                table = table.assign(condition=checkpoint.condition)
            if "seed" in table.columns:
                table = table.assign(seed=checkpoint.seed)
        return table

    def measured(self, checkpoint: Checkpoint, fingerprint: str, measure: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        """The checkpoint's table: read back when fresh, else ``measure()`` run, keyed by condition, seed
        and step, and written first (so an interrupted stage resumes at the next checkpoint)."""
        if not self.is_fresh(checkpoint, fingerprint):
            table = measure()
            table.insert(0, "step", checkpoint.step)
            table.insert(0, "seed", checkpoint.seed)
            table.insert(0, "condition", checkpoint.condition)
            self.write(checkpoint, table, fingerprint)
        return self.read(checkpoint)

    def read_all(self) -> pd.DataFrame:
        """Every part under the folder, as stored (the base part under its own condition), in path
        order; an empty table when there is none."""
        paths = sorted([*self.folder.glob("*/step-*.parquet"), *self.folder.glob("*/seed-*/step-*.parquet")])
        return pd.concat([pd.read_parquet(path) for path in paths], ignore_index=True) if paths else pd.DataFrame()
