"""What notebook 05 reads, and only through the earlier stages' loaders
(``traitspace.<stage>.load_outputs``): the projections, drift, raw mean activations, top shifts and
decomposition of notebook 03; the behaviour rates and judge validity of notebook 04; the figures of
notebooks 00-04 for the report; and the same tables of any extra runs named in the params.

Each training seed of a run becomes one :class:`RunTables` (its rows only, without a seed column),
so the per-run analyses (timing, monitor rows keyed by dataset and seed) see one trail per condition;
the seed-level tests of notebooks 03 and 04 (EM vs control across seeds) come through
:class:`SeedLevel` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd


@dataclass
class RunTables:
    """One run's measured tables."""

    run_dir: Path
    seed: int
    projections: pd.DataFrame       # condition, step, trait, layer, prompt, value, act_norm
    drift: pd.DataFrame             # condition, step, trait, drift, base_norm, drift_pct_of_norm
    rates: pd.DataFrame             # condition, step, em_rate_of_*, *_low, *_high, coherence_rate, mean_aligned, ...
    mean_activations: dict          # (condition, step) -> {layer: [hidden]}
    pairs: dict[str, str]           # EM condition -> its control
    top_shifts: dict = field(default_factory=dict)      # (em, control) -> top_shifts table of notebook 03
    decomposition: dict = field(default_factory=dict)   # (em, control) -> shared/specific table of notebook 03
    preference: pd.DataFrame = field(default_factory=pd.DataFrame)  # condition, step, change_from_base (em pairs)


@dataclass
class SeedLevel:
    """The tests across training seeds written by notebooks 03 and 04 (the evidence for an effect of
    the data), and the seeds they used."""

    seeds: list[int]
    shifts: dict = field(default_factory=dict)            # (em, control) -> seed-level trait test, final step
    shifts_by_step: dict = field(default_factory=dict)    # (em, control) -> the same at every step
    activation_shift: dict = field(default_factory=dict)  # (em, control) -> per layer
    preference_test: pd.DataFrame = field(default_factory=pd.DataFrame)  # EM vs control preference change, per step
    drift: pd.DataFrame = field(default_factory=pd.DataFrame)       # condition, seed, step, trait, drift, ... (every run)
    rates: pd.DataFrame = field(default_factory=pd.DataFrame)       # EM rates per (condition, seed, step)
    preference_summary: pd.DataFrame = field(default_factory=pd.DataFrame)  # per (condition, seed, step, kind)

    @property
    def testable(self) -> bool:
        return len(self.seeds) >= 2


@dataclass
class FindingsInputs:
    main: RunTables
    extra: list[RunTables]
    alignment_traits: list[str]
    judge_validity: pd.DataFrame | None
    figures: list[Path] = field(default_factory=list)   # notebooks 00-04's figures, for the report
    seed_level: SeedLevel | None = None

    @property
    def projections(self) -> pd.DataFrame:
        return self.main.projections

    def summary(self) -> str:
        seeds = self.seed_level.seeds if self.seed_level is not None else [self.main.seed]
        lines = [f"run {self.main.run_dir}: conditions {sorted(self.main.projections['condition'].unique())}, "
                 f"training seeds {seeds}, {self.main.projections['step'].nunique()} projected steps, "
                 f"{len(self.main.rates)} (condition, step) behaviour evaluations per seed; pairs {self.main.pairs}"]
        lines += [f"other run {run.run_dir} seed {run.seed}: {len(run.rates)} behaviour evaluations"
                  for run in self.extra if run.run_dir != self.main.run_dir]
        return "\n".join(lines)


def load_behaviour_rates(run_dir, behavior_section, conditions: Sequence[str]) -> pd.DataFrame:
    """EM rates per (condition, step), as notebook 04's loader computes them."""
    from .. import behavior

    return behavior.load_outputs(run_dir, behavior_section, list(conditions)).rates


def _one_seed(table: pd.DataFrame, seed: int) -> pd.DataFrame:
    if "seed" not in table.columns:
        return table
    return table[table["seed"] == seed].drop(columns="seed").reset_index(drop=True)


def _run_tables(config, run_dir: Path):
    """One :class:`RunTables` per training seed of ``run_dir``, and the projection and behaviour
    stages' outputs (for the seed-level tests, the main run's judge validity and figures)."""
    from .. import behavior, project

    projection = project.load_outputs(run_dir)
    conditions = sorted(projection.projections["condition"].unique())
    behaviour = behavior.load_outputs(run_dir, config.behavior, conditions)
    summary = behaviour.preference_summary
    preference = pd.DataFrame(columns=["condition", "seed", "step", "change_from_base"])
    if summary is not None and len(summary) and "change_from_base" in summary.columns:
        preference = summary.loc[summary["kind"] == "em", ["condition", "seed", "step", "change_from_base"]]
    runs = []
    for seed in projection.seeds:
        activations = {(condition, step): layers for (condition, run_seed, step), layers
                       in projection.mean_activations.items() if run_seed == seed}
        runs.append(RunTables(run_dir, seed, _one_seed(projection.projections, seed), _one_seed(projection.drift, seed),
                              _one_seed(behaviour.rates, seed), activations, dict(projection.pairs),
                              dict(projection.top_shifts), dict(projection.decomposition),
                              _one_seed(preference, seed)))
    return runs, projection, behaviour


def load_run_tables(config, run_dir=None) -> RunTables:
    """The tables of the first training seed of ``run_dir`` (default: this config's run) under this
    config's behaviour thresholds."""
    return _run_tables(config, Path(run_dir or config.run_dir))[0][0]


def stage_figures(run_dir, conditions: Sequence[str], *stage_outputs) -> list[Path]:
    """The figures of notebooks 00-04 as their loaders list them (``stage_outputs`` adds loader
    outputs already read), sorted by path as the report has always shown them."""
    from .. import extract, finetune, model_check

    outputs = [model_check.load_outputs(run_dir), finetune.load_outputs(run_dir, list(conditions)), *stage_outputs]
    figures = [path for output in outputs for path in output.figures]
    figures += extract.load_outputs(run_dir).figures
    return sorted({Path(path) for path in figures})


def load_inputs(config) -> FindingsInputs:
    """The main run's tables, the extra runs' tables, the library's alignment traits, the judge's
    validity and the earlier notebooks' figures."""
    from ..library import load_builtin_library

    runs, projection, behaviour = _run_tables(config, Path(config.run_dir))
    main, extra = runs[0], runs[1:]
    for path in config.findings.extra_runs:
        extra.extend(_run_tables(config, Path(path))[0])
    seed_level = SeedLevel(projection.seeds, dict(projection.top_shifts), dict(projection.shifts_by_step),
                           dict(projection.activation_shift), behaviour.preference_test, projection.drift,
                           behaviour.rates, behaviour.preference_summary)
    library = load_builtin_library()
    alignment = [trait.name for trait in library.all_traits if trait.polarity is not None]
    conditions = sorted(main.projections["condition"].unique())
    figures = stage_figures(config.run_dir, conditions, projection, behaviour)
    return FindingsInputs(main, extra, alignment, behaviour.judge_validity, figures, seed_level)
