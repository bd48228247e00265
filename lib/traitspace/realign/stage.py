"""Run stage 08: train the re-alignment trails, measure every checkpoint, compute recovery, write
the tables and figures of notebook 08 into ``realign/``.

Inputs come only through the earlier stages' loaders: the checkpoint trails (01), the trait vectors
(02, inside the projection setup), the EM/control pairs, top shifts and fine-tuning-phase projections
(03), and the EM direction (06, optional).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from ..core.artifacts import Stage, atomic_path
from ..core.checkpoints import TRAINING_LOG_FILE
from ..core.code_versions import code_version
from .measure import (
    em_direction_table,
    em_minus_control,
    em_rate_points,
    fingerprint_table,
    measure_em_rates,
    measure_preference,
    measure_projections,
    measures_long,
    preference_points,
    projection_setup,
    spread_to_points,
    trail_drift,
    combined_points,
    unique_checkpoints,
)
from .plan import plan_trails, realign_root
from .plots import save_realign_figures
from .recovery import recovery_table, steps_summary, steps_to_recovery
from .train import RealignResult, train_realign_trails

TABLES = ("trails", "losses", "measures", "trait_recovery", "measure_recovery", "steps_to_recovery", "steps_summary",
          "em_rates")
PARQUETS = ("projections", "drift", "preference", "preference_summary")


def key_traits_of(top_shifts: pd.DataFrame, n: int) -> dict[str, int]:
    """Notebook 03's top ``n`` EM-shifted traits at the final step, signed the way EM moved them."""
    top = top_shifts.head(n)
    return {trait: (1 if value >= 0 else -1) for trait, value in zip(top["trait"], top["differential"])}


def fine_tuning_rows(projections: pd.DataFrame, results: Sequence[RealignResult]) -> pd.DataFrame:
    """Notebook 03's projections of the checkpoints between the base model and each trail's source,
    labelled with the trail: the fine-tuning phase of the combined trail."""
    frames = []
    for result in results:
        trail = result.trail
        rows = projections[(projections["condition"] == trail.source.condition) & (projections["seed"] == trail.seed)
                           & (projections["step"] > 0) & (projections["step"] < trail.source.step)]
        if len(rows):
            frames.append(rows.assign(pair=trail.pair, role=trail.role, benign=trail.benign,
                                      benign_data=trail.benign_data, label=trail.label, condition=trail.label,
                                      realign_step=float("nan"), phase="finetune"))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def losses_table(results: Sequence[RealignResult]) -> pd.DataFrame:
    """Per-step training loss of every trail (from its last checkpoint's training log)."""
    frames = []
    for result in results:
        log = json.loads((result.checkpoints[-1].adapter_path / TRAINING_LOG_FILE).read_text())
        frame = pd.DataFrame(log["losses"]).rename(columns={"step": "realign_step"})
        frames.append(frame.assign(**{key: value for key, value in result.trail.describe().items()}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def trails_table(results: Sequence[RealignResult]) -> pd.DataFrame:
    return pd.DataFrame([{**result.trail.describe(), "total_steps": result.total_steps,
                          "checkpoints": " ".join(str(checkpoint.step) for checkpoint in result.checkpoints[1:]),
                          "n_examples": result.summary.get("n_examples"), "final_loss": result.summary.get("final_loss"),
                          "trained_now": result.trained_now, "minutes": round(result.seconds / 60, 2)}
                         for result in results])


def _em_direction(config, run_dir: Path, parts_dir: Path, points, pairs, log) -> tuple[pd.DataFrame | None, str | None]:
    """Notebook 06's EM direction read along every point of each pair, or why not."""
    from .. import steer

    try:
        steering = steer.load_outputs(run_dir)
    except FileNotFoundError as error:
        return None, f"not measured: {error}"
    layer = int(steering.manifest["layer"])
    frames = []
    for pair in pairs:
        if pair not in steering.em_directions:
            continue
        try:
            frames.append(em_direction_table(parts_dir, [point for point in points if point.pair == pair],
                                             steering.em_directions[pair].vector(layer), layer))
        except KeyError as error:
            return None, f"not measured: {error}"
    if not frames:
        return None, f"not measured: notebook 06 read no EM direction for {list(pairs)}"
    if log:
        log(f"EM direction of notebook 06 read at layer {layer}")
    return pd.concat(frames, ignore_index=True), None


def run_realign_stage(config, progress: bool = True, log: Callable[[str], None] | None = print):
    """Everything notebook 08 shows; returns :class:`traitspace.realign.RealignOutputs`."""
    from .. import finetune, project
    from ..core.models import AdapterSwitcher, load_model
    from . import load_outputs

    settings, run_dir = config.realign, Path(config.run_dir)
    folder = realign_root(run_dir)
    stage = Stage(folder, params_hash=config.params_hash("model", "capture", "finetune", "extract", "project", "behavior",
                                                         "steer", "realign"), code_version=code_version("realign"))
    if stage.is_done():
        return load_outputs(run_dir)
    projection = project.load_outputs(run_dir)
    pairs = projection.pairs
    planned = plan_trails(config, pairs, finetune.load_outputs(run_dir, list(config.finetune.conditions)).trails)
    if not planned:
        raise ValueError(f"nothing to re-align: notebook 03 found no EM/control pair among {list(config.finetune.conditions)} "
                         "(finetune.conditions, project.pairs)")
    chosen_pairs = sorted({trail.pair for trail in planned})
    results = train_realign_trails(config, planned, pairs, progress=progress)
    points = combined_points(results)

    loaded = load_model(config.model)
    switcher = AdapterSwitcher(loaded)
    measured = measure_projections(config, loaded, switcher, unique_checkpoints(points), folder / "projections",
                                   projection_setup(config), progress)
    combined = pd.concat([fine_tuning_rows(projection.projections, results), spread_to_points(measured, points)],
                         ignore_index=True)
    drift = trail_drift(combined)
    key_traits = {pair: key_traits_of(projection.top_shifts[(pair, pairs[pair])], settings.n_key_traits)
                  for pair in chosen_pairs}
    fingerprint = pd.concat([fingerprint_table(drift[drift["pair"] == pair], key_traits[pair]) for pair in chosen_pairs],
                            ignore_index=True)
    notes = {}
    em_direction, notes["em_direction"] = _em_direction(config, run_dir, folder / "projections" / "parts", points,
                                                        chosen_pairs, log)
    preference = preference_summary = None
    if config.behavior.preference:
        preference, preference_summary = measure_preference(
            config, loaded, preference_points(points, settings.preference_grid), folder / "preference", progress)
    else:
        notes["preference"] = "not measured: behavior.preference is false"
    rates = None
    if settings.em_rate_grid != "none":
        rates = measure_em_rates(config, loaded, em_rate_points(points, settings.em_rate_grid), folder / "behavior",
                                 progress, log)
    else:
        notes["em_rate"] = "not measured: realign.em_rate_grid is none"
    measures = measures_long(preference_summary, fingerprint, em_direction, rates, config.findings.em_rate)

    # Per-trait recovery: of the EM-minus-control shift (what the EM data did, net of what fine-tuning
    # and the benign data do to any run) and of the EM run's own drift.
    realigning = drift[drift["realign_step"].notna()]
    trait_shifts = [em_minus_control(realigning, ["pair", "benign", "trait"], "drift").assign(shift_of="em_minus_control"),
                    realigning[realigning["role"] == "em"].rename(columns={"drift": "shift"}).assign(shift_of="em_run")]
    recovery_options = dict(recovered_above=settings.recovered_above)
    trait_recovery = pd.concat([recovery_table(shifts, ["pair", "benign", "shift_of", "trait"], **recovery_options)
                                for shifts in trait_shifts], ignore_index=True)
    trait_recovery["key_trait"] = [trait in key_traits.get(pair, {}) for pair, trait
                                   in zip(trait_recovery["pair"], trait_recovery["trait"])]
    trait_recovery = trait_recovery.sort_values(["pair", "benign", "shift_of", "key_trait", "before"],
                                                key=lambda column: column.abs() if column.name == "before" else column,
                                                ascending=[True, True, True, False, False], ignore_index=True)
    measure_shifts = measures[measures["realign_step"].notna()].rename(columns={"value": "shift"})
    measure_shifts = pd.concat([measure_shifts, em_minus_control(measures[measures["realign_step"].notna()],
                                                                 ["pair", "benign", "measure"], "value")
                                .assign(role="em_minus_control")], ignore_index=True)
    group = ["pair", "benign", "measure", "role"]
    measure_recovery = recovery_table(measure_shifts, group, **recovery_options)
    per_seed_steps = steps_to_recovery(measure_shifts, group, fraction=settings.recovered_above)
    tables = {"trails": trails_table(results), "losses": losses_table(results), "measures": measures,
              "trait_recovery": trait_recovery, "measure_recovery": measure_recovery,
              "steps_to_recovery": per_seed_steps, "steps_summary": steps_summary(per_seed_steps, group),
              "em_rates": rates if rates is not None else pd.DataFrame()}
    parquets = {"projections": measured, "drift": drift,
                "preference": preference if preference is not None else pd.DataFrame(),
                "preference_summary": preference_summary if preference_summary is not None else pd.DataFrame()}
    for name, table in tables.items():
        with atomic_path(folder / f"{name}.csv") as temporary:
            table.to_csv(temporary, index=False)
    for name, table in parquets.items():
        with atomic_path(folder / f"{name}.parquet") as temporary:
            table.to_parquet(temporary, index=False)
    key_recovery = trait_recovery[trait_recovery["key_trait"] & (trait_recovery["shift_of"] == "em_minus_control")]
    save_realign_figures(measures, key_recovery, folder / "figures", settings.recovered_above)
    stage.mark_done({"pairs": {pair: pairs[pair] for pair in chosen_pairs},
                     "trails": [trail.describe() for trail in planned],
                     "key_traits": key_traits, "notes": {name: note for name, note in notes.items() if note},
                     "seeds": sorted({trail.seed for trail in planned}),
                     "n_checkpoints_measured": len(unique_checkpoints(points)),
                     "em_rate_column": config.findings.em_rate})
    return load_outputs(run_dir)
