"""Stage 05, findings: the EM fingerprint and its lead time over behaviour, a drift monitor against
its baselines, which traits track behaviour, and the writeup report.

Reads the earlier stages only through their loaders (:mod:`.inputs`). Writes ``<run>/findings/``:

- ``fingerprint_timing.csv``, ``monitor_results.csv``, ``trait_behaviour_spearman.csv`` (:mod:`.export`)
- ``fingerprint__<em>.json`` and, when the labels have both classes, ``monitor.joblib``: what the
  live monitor of notebook 01 reads in a later run (:mod:`.export`)
- ``figures/timing__<em>.png``, ``figures/monitor_auroc.png``, ``figures/spearman.png`` (:mod:`.plots`,
  paths in :mod:`.stage`)
- ``report.md`` and ``report.html`` (:mod:`.report`), and ``manifest.json``

Modules: :mod:`.inputs` (what is read), :mod:`.timing` (fingerprint, behaviour crossing, lead time),
:mod:`.monitor` (classifiers, leave-one-group-out evaluation), :mod:`.baselines` (feature sets),
:mod:`.evaluation` (the monitor evaluation of a run), :mod:`.correlations` (trait-behaviour
Spearman), :mod:`.plots`, :mod:`.explorer`, :mod:`.export`, :mod:`.limitations`, :mod:`.report`,
:mod:`.stage`. No later stage reads these files, so the stage has no ``load_outputs``.
"""

from .baselines import (
    AbsProjection,
    PCAFeatures,
    monitor_feature_sets,
    norm_drift,
    pca_features,
    random_direction_features,
    raw_activation_drift,
)
from .correlations import spearman_matrix, trait_behaviour_spearman
from .evaluation import MonitorEvaluation, danger_scale, evaluate_monitors, monitor_evaluation, monitor_rows
from .explorer import trait_explorer
from .export import save_findings_tables, save_monitor_artifacts
from .inputs import FindingsInputs, RunTables, SeedLevel, load_behaviour_rates, load_inputs, load_run_tables, stage_figures
from .limitations import limitations
from .seed_level import seed_level_sentences, seed_level_tables
from .seed_timing import SeedTiming, seed_level_timing, seed_timing_table, seed_timings
from .monitor import MonitorTable, build_monitor_table, leave_one_group_out_eval
from .plots import plot_monitor, plot_spearman, plot_timing
from .report import Report, write_report
from .stage import OUTPUT_FOLDER, monitor_figure, open_stage, spearman_figure, timing_figure
from .timing import (
    FingerprintTiming,
    PairTiming,
    ThresholdMethod,
    behaviour_crossing,
    fingerprint_and_behaviour,
    fingerprint_null_threshold,
    fingerprint_timing,
    lead_time_sentence,
    signed_prompt_matrix,
    timing_table,
)

__all__ = [
    "AbsProjection", "FindingsInputs", "FingerprintTiming", "MonitorEvaluation", "MonitorTable", "OUTPUT_FOLDER",
    "PCAFeatures", "PairTiming", "Report", "RunTables", "ThresholdMethod", "behaviour_crossing",
    "build_monitor_table", "danger_scale", "evaluate_monitors", "fingerprint_and_behaviour",
    "fingerprint_null_threshold", "fingerprint_timing", "lead_time_sentence", "leave_one_group_out_eval",
    "limitations", "load_behaviour_rates", "load_inputs", "load_run_tables", "monitor_evaluation",
    "monitor_feature_sets", "monitor_figure", "monitor_rows", "norm_drift", "open_stage", "pca_features",
    "plot_monitor", "plot_spearman", "plot_timing", "random_direction_features", "raw_activation_drift",
    "save_findings_tables", "SeedLevel", "SeedTiming", "seed_level_timing", "seed_timing_table", "seed_timings", "seed_level_sentences", "seed_level_tables", "save_monitor_artifacts", "signed_prompt_matrix", "spearman_figure",
    "spearman_matrix", "stage_figures", "timing_figure", "timing_table", "trait_behaviour_spearman",
    "trait_explorer", "write_report",
]
