"""Measured settings stored one per file set, so an interrupted sweep resumes at the next setting.

Layout under a folder (a key like ``sweep/cheerful/alpha+0.5`` becomes a path)::

    <key>.preference.parquet   the setting's preference pair rows
    <key>.answers.parquet      its judged answers (when it sampled)
    <key>.json                 summary and fingerprint, written last

Every file is written atomically and the summary last, so a setting counts as measured only once all
of it is on disk; a stored setting with another fingerprint (other settings, another model), or whose
tables no longer match the sha256 the summary recorded, is measured again.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from ..core.artifacts import atomic_path, atomic_write_json, read_json
from .measure import Measurement

_UNSAFE = re.compile(r"[^A-Za-z0-9_.+\-/]")


class ResultStore:
    """Measurements under ``folder``, by key."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def _base(self, key: str) -> Path:
        parts = [_UNSAFE.sub("_", part) for part in key.split("/") if part]
        if not parts or any(part in (".", "..") for part in parts):
            raise ValueError(f"bad result key {key!r}")
        return self.folder.joinpath(*parts)

    def _file(self, key: str, suffix: str) -> Path:
        base = self._base(key)
        return base.with_name(base.name + suffix)

    def is_fresh(self, key: str, fingerprint: str) -> bool:
        """Stored with this fingerprint, and its tables still have the content the summary recorded
        (a damaged setting is measured again, alone)."""
        from ..core.integrity import matches_record

        path = self._file(key, ".json")
        try:
            stored = read_json(path) if path.is_file() else {}
        except (OSError, ValueError):  # ValueError: bad JSON or bytes that are not UTF-8
            return False
        if stored.get("fingerprint") != fingerprint:
            return False
        damaged = [self._file(key, suffix) for suffix, recorded in (stored.get("files") or {}).items()
                   if not matches_record(self._file(key, suffix), recorded)]
        for file in damaged:
            print(f"damaged result {file}: measuring this setting again", flush=True)
        return not damaged

    def write(self, key: str, measurement: Measurement, fingerprint: str) -> None:
        tables = {".preference.parquet": measurement.preference, ".answers.parquet": measurement.scored}
        for suffix, table in tables.items():
            path = self._file(key, suffix)
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as temporary:
                table.to_parquet(temporary, index=False)
        from ..core.integrity import file_record

        atomic_write_json(self._file(key, ".json"), {"fingerprint": fingerprint, "summary": measurement.summary,
                                                     "files": {suffix: file_record(self._file(key, suffix))
                                                               for suffix in tables}})

    def read(self, key: str) -> Measurement:
        summary = read_json(self._file(key, ".json"))["summary"]
        summary = {name: float("nan") if value is None else value for name, value in summary.items()}
        return Measurement(summary, pd.read_parquet(self._file(key, ".preference.parquet")),
                           pd.read_parquet(self._file(key, ".answers.parquet")))

    def measured(self, key: str, fingerprint: str, compute) -> tuple[Measurement, bool]:
        """The stored measurement when fresh, else ``compute()`` stored and returned; and whether it was computed."""
        if self.is_fresh(key, fingerprint):
            return self.read(key), False
        measurement = compute()
        self.write(key, measurement, fingerprint)
        return measurement, True
