"""What notebook 05 leaves on disk besides the report: the findings tables as CSV files, and the
files the live monitor of notebook 01 reads in a later run (``fingerprint__<em>.json`` and, when
the labels allow, a fitted logistic monitor ``monitor.joblib``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..core.artifacts import atomic_path, atomic_write_json, atomic_write_text
from .evaluation import MonitorEvaluation

TABLE_FILES = ("fingerprint_timing", "monitor_results", "trait_behaviour_spearman", "seed_timing")


def save_findings_tables(out_dir, fingerprint_timing: pd.DataFrame, monitor_results: pd.DataFrame,
                         spearman: pd.DataFrame, seed_timing: pd.DataFrame | None = None) -> list:
    """The report's tables as CSV files for writeups and later analysis: fingerprint_timing.csv
    (:func:`~.timing.timing_table`), monitor_results.csv, trait_behaviour_spearman.csv and
    seed_timing.csv (:func:`~.seed_timing.seed_timing_table`) (atomic writes)."""
    tables = dict(zip(TABLE_FILES, (fingerprint_timing, monitor_results, spearman,
                                    seed_timing if seed_timing is not None else pd.DataFrame())))
    return [atomic_write_text(Path(out_dir) / f"{stem}.csv", table.to_csv(index=False)) for stem, table in tables.items()]


def save_monitor_artifacts(monitor: MonitorEvaluation, timings, out_dir) -> None:
    """What the live monitor of notebook 01 reads: per pair ``fingerprint__<em>.json`` (key traits,
    signs, a drift threshold) and, when the labels allow, ``monitor.joblib``, a logistic monitor fitted
    on all evaluated checkpoints."""
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out_dir = Path(out_dir)
    for (em, control), timing in timings.items():
        key = timing.fingerprint.key_traits
        control_max = float(timing.fingerprint.scores["control_signed_drift"].max())
        atomic_write_json(out_dir / f"fingerprint__{em}.json", {
            "em": em, "control": control, "key_traits": dict(zip(key["trait"], map(int, key["sign"]))),
            "live_threshold": control_max,
            "live_threshold_meaning": "largest signed drift over the key traits the control reached (projection units)",
            "differential_threshold": timing.fingerprint.threshold,
        })
    labels = monitor.table.labels
    # A classifier needs both classes; with one, the live monitor runs on the fingerprint alone.
    if labels.any() and not labels.all():
        pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        pipeline.fit(monitor.table.features.to_numpy(), labels)
        pipeline.feature_names_ = list(monitor.table.features.columns)
        with atomic_path(out_dir / "monitor.joblib") as temporary:
            joblib.dump(pipeline, temporary)
