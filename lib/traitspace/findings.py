"""Notebook 05's analyses: the EM fingerprint and its lead time over behaviour, and the drift
monitor against its baselines. Pure functions over the tables earlier stages wrote.

Fingerprint (seed project, finding 3): key EM traits are chosen from the EM-minus-control
differential on one half of the projection prompts and the fingerprint (mean signed differential
over those traits, per step) is measured on the other half, so selection and measurement never
share prompts. Its crossing threshold comes from a sign-flip permutation null over the measurement
prompts (see :func:`fingerprint_null_threshold`), or from the control's own step-to-step spread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import pandas as pd

from . import monitor as monitor_lib
from .core.stats import control_threshold, first_crossing
from .core.trajectory import differential, drift, fingerprint_score, fingerprint_split, select_key_traits

ThresholdMethod = Literal["permutation", "control_spread"]


@dataclass
class FingerprintTiming:
    key_traits: pd.DataFrame        # trait, differential (selection half), sign
    scores: pd.DataFrame            # step, fingerprint, control_signed_drift
    threshold: float
    threshold_method: str
    crossing_step: int | None
    selection_prompts: list
    measurement_prompts: list


def signed_prompt_matrix(measurement: pd.DataFrame, em: str, control: str,
                         traits: Sequence[str], signs: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt and step, the mean over key traits of sign x (drift_EM - drift_control).

    Returns (steps [n_steps], matrix [n_prompts, n_steps]); its mean over prompts is the fingerprint.
    """
    per_prompt = differential(drift(measurement, per_prompt=True), em, control)
    per_prompt = per_prompt[per_prompt["trait"].isin(traits)].copy()
    per_prompt["signed"] = per_prompt["differential"] * per_prompt["trait"].map(dict(zip(traits, signs)))
    grid = per_prompt.groupby(["prompt", "step"])["signed"].mean().unstack("step").sort_index(axis=1)
    return grid.columns.to_numpy(), grid.to_numpy()


def fingerprint_null_threshold(matrix: np.ndarray, n_perm: int = 2000, alpha: float = 0.05, seed: int = 0) -> float:
    """Sign-flip permutation threshold for the fingerprint, family-wise over steps.

    Under "no EM-specific effect", each prompt's signed differential is as likely to be negated.
    Each permutation flips whole prompts (the same sign at every step, keeping each prompt's
    trajectory intact), averages over prompts and keeps the maximum over steps; the threshold is
    the (1 - alpha) quantile of those maxima, so a crossing at any step is significant at alpha.

    matrix: [n_prompts, n_steps] from :func:`signed_prompt_matrix`.
    """
    generator = np.random.default_rng(seed)
    flips = generator.choice([-1.0, 1.0], size=(n_perm, matrix.shape[0]))
    null_series = flips @ np.nan_to_num(matrix) / matrix.shape[0]  # [n_perm, n_steps]
    return float(np.quantile(null_series.max(axis=1), 1 - alpha))


def fingerprint_timing(
    projections: pd.DataFrame,
    em: str,
    control: str,
    k: int = 10,
    method: ThresholdMethod = "permutation",
    n_perm: int = 2000,
    alpha: float = 0.05,
    spread_k: float = 2.0,
    persist: int = 1,
    seed: int = 0,
) -> FingerprintTiming:
    """Key traits on one half of the prompts, fingerprint and its crossing on the other half."""
    table = projections[["condition", "step", "trait", "prompt", "value"]]
    selection, measurement = fingerprint_split(list(table["prompt"].unique()), seed)
    key = select_key_traits(table[table["prompt"].isin(selection)], em, control, k)
    measured = table[table["prompt"].isin(measurement)]
    traits, signs = list(key["trait"]), list(key["sign"])
    score = fingerprint_score(measured, em, control, traits, signs)
    control_drift = drift(measured[measured["condition"] == control])
    control_drift = control_drift[control_drift["trait"].isin(traits)].copy()
    control_drift["signed"] = control_drift["drift"] * control_drift["trait"].map(dict(zip(traits, signs)))
    control_signed = control_drift.groupby("step")["signed"].mean()
    if method == "permutation":
        _, matrix = signed_prompt_matrix(measured, em, control, traits, signs)
        threshold = fingerprint_null_threshold(matrix, n_perm=n_perm, alpha=alpha, seed=seed)
    elif method == "control_spread":
        threshold = float(control_threshold(control_signed.to_numpy(), method="step_spread", k=spread_k))
    else:
        raise ValueError(f"unknown threshold method {method!r}; use 'permutation' or 'control_spread'")
    scores = pd.DataFrame({"step": score.index.astype(int), "fingerprint": score.to_numpy()})
    scores["control_signed_drift"] = scores["step"].map(control_signed)
    crossing = first_crossing(scores["step"].to_numpy(), scores["fingerprint"].to_numpy(), threshold, persist=persist)
    return FingerprintTiming(key, scores, threshold, method, crossing, list(selection), list(measurement))


def behaviour_crossing(em_rates: pd.DataFrame, em: str, control: str, persist: int = 1) -> int | None:
    """First step at which the EM condition's misalignment rate rises above the control's beyond
    their intervals (EM's lower bound > control's upper bound at the same step), for ``persist``
    consecutive evaluated steps. em_rates: columns condition, step, low, high."""
    em_rows = em_rates[em_rates["condition"] == em].set_index("step")
    control_rows = em_rates[em_rates["condition"] == control].set_index("step")
    steps = sorted(set(em_rows.index) & set(control_rows.index))
    if not steps:
        return None
    margin = np.array([em_rows.loc[step, "low"] - control_rows.loc[step, "high"] for step in steps])
    return first_crossing(np.array(steps), margin, 0.0, persist=persist)


def lead_time_sentence(fingerprint_step: int | None, behaviour_step: int | None) -> str:
    if behaviour_step is None and fingerprint_step is None:
        return "Neither the fingerprint nor behaviour crossed its threshold: no lead time can be reported."
    if behaviour_step is None:
        return (f"The fingerprint crossed its threshold at step {fingerprint_step}, but the EM rate never rose "
                "above the control's beyond the intervals, so no lead time can be reported.")
    if fingerprint_step is None:
        return (f"Behaviour rose above the control at step {behaviour_step}, but the fingerprint never crossed "
                "its threshold: no early warning on this run.")
    lead = behaviour_step - fingerprint_step
    relation = "before" if lead > 0 else ("at the same step as" if lead == 0 else "after")
    return (f"The fingerprint crossed at step {fingerprint_step}, {relation} behaviour (step {behaviour_step}): "
            f"a lead time of {lead} steps.")


# -- monitor -------------------------------------------------------------------------------------
def raw_activation_drift(mean_activations: dict[tuple[str, int], dict[int, "object"]], layer: int) -> pd.DataFrame:
    """Mean raw activation at ``layer`` minus the condition's step-0 mean, one row per checkpoint
    (columns condition, step, dim_0..dim_{hidden-1})."""
    rows = []
    for (condition, step), layers in sorted(mean_activations.items()):
        base = mean_activations[(condition, 0)][layer]
        rows.append({"condition": condition, "step": step, **{
            f"dim_{index}": value for index, value in enumerate((layers[layer] - base).tolist())}})
    return pd.DataFrame(rows)


def monitor_feature_sets(
    features: pd.DataFrame,
    raw_drift: pd.DataFrame | None,
    alignment_traits: Sequence[str],
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, object | None]]:
    """Named feature sets with an optional in-fold transformer: the trait library, the 7
    alignment traits, and the baselines (|PC1| drift, activation-norm drift, random 7-D
    directions and PCA-7 of raw activation drift). ``features`` and ``raw_drift`` rows align."""
    trait_columns = [column for column in features.columns if column != "assistant_axis"]
    sets: dict[str, tuple[np.ndarray, object | None]] = {
        f"trait library ({len(trait_columns)} traits)": (features[trait_columns].to_numpy(), None),
        "|PC1| of trait drift": (features[trait_columns].to_numpy(), monitor_lib.AbsProjection()),
    }
    aligned = [trait for trait in alignment_traits if trait in features.columns]
    if aligned:
        sets[f"alignment traits ({len(aligned)})"] = (features[aligned].to_numpy(), None)
    if raw_drift is not None:
        raw = raw_drift.to_numpy(dtype=float)
        sets["activation-norm drift"] = (monitor_lib.norm_drift(raw).reshape(-1, 1), None)
        sets["random 7-D directions"] = (monitor_lib.random_direction_features(raw, k=7, seed=seed), None)
        sets["PCA-7 of raw activations"] = (raw, monitor_lib.pca_features(k=min(7, raw.shape[0] - 1, raw.shape[1])))
    return sets


def evaluate_monitors(
    feature_sets: dict[str, tuple[np.ndarray, object | None]],
    labels: np.ndarray,
    groups: pd.DataFrame,
    models: Sequence[str] = ("logistic", "random_forest", "ridge"),
    seed: int = 0,
    n_boot: int = 1000,
) -> pd.DataFrame:
    """Leave-one-group-out AUROC, FNR and FPR (bootstrap 95% intervals) per feature set and model."""
    rows = []
    for name, (matrix, feature_step) in feature_sets.items():
        for model in models:
            result = monitor_lib.leave_one_group_out_eval(matrix, labels, groups, model=model, seed=seed,
                                                          n_boot=n_boot, feature_step=feature_step)
            rows.append({
                "features": name, "model": model, "n_rows": result["n_rows"], "n_dangerous": result["n_positive"],
                "folds": result["n_folds"],
                "auroc": result["auroc"], "auroc_low": result["auroc_ci"][0], "auroc_high": result["auroc_ci"][1],
                "fnr": result["fnr"], "fnr_low": result["fnr_ci"][0], "fnr_high": result["fnr_ci"][1],
                "fpr": result["fpr"], "fpr_low": result["fpr_ci"][0], "fpr_high": result["fpr_ci"][1],
                "undefined": "; ".join(f"{key}: {why}" for key, why in result["undefined"].items()),
            })
    return pd.DataFrame(rows)


# -- the notebook's stage functions --------------------------------------------------------------
@dataclass
class RunTables:
    """One run's measured tables."""

    run_dir: "Path"
    seed: int
    projections: pd.DataFrame       # condition, step, trait, layer, prompt, value, act_norm
    drift: pd.DataFrame             # condition, step, trait, drift, base_norm, drift_pct_of_norm
    rates: pd.DataFrame             # condition, step, em_rate_of_*, *_low, *_high, coherence_rate, mean_aligned, ...
    mean_activations: dict          # (condition, step) -> {layer: [hidden]}
    pairs: dict[str, str]


@dataclass
class FindingsInputs:
    main: RunTables
    extra: list[RunTables]
    alignment_traits: list[str]
    judge_validity: pd.DataFrame | None

    @property
    def projections(self) -> pd.DataFrame:
        return self.main.projections

    def summary(self) -> str:
        lines = [f"main run {self.main.run_dir}: conditions {sorted(self.main.projections['condition'].unique())}, "
                 f"{self.main.projections['step'].nunique()} projected steps, "
                 f"{len(self.main.rates)} (condition, step) behaviour evaluations; pairs {self.main.pairs}"]
        lines += [f"extra run {run.run_dir}: {len(run.rates)} behaviour evaluations" for run in self.extra]
        return "\n".join(lines)


def load_behaviour_rates(run_dir, behavior_section, conditions: Sequence[str]) -> pd.DataFrame:
    """EM rates per (condition, step) from notebook 04's answer and score parts."""
    from pathlib import Path

    from .behavior import em_rates, merge_scores, read_checkpoint_tables, share_base

    behavior_dir = Path(run_dir) / "behavior"
    answers = read_checkpoint_tables(behavior_dir / "answers")
    scores = read_checkpoint_tables(behavior_dir / "scores")
    if answers.empty or scores.empty:
        raise FileNotFoundError(f"no behaviour answers or scores under {behavior_dir}: run notebook 04 first")
    scored = share_base(merge_scores(answers, scores), list(conditions))
    return em_rates(scored, aligned_threshold=behavior_section.aligned_threshold,
                    coherent_threshold=behavior_section.coherent_threshold)


def load_run_tables(config, run_dir=None) -> RunTables:
    from pathlib import Path

    from .core.artifacts import read_json
    from .core.checkpoints import Checkpoint
    from .project import load_mean_activations

    run_dir = Path(run_dir or config.run_dir)
    folder = run_dir / "projections"
    if not (folder / "projections.parquet").is_file():
        raise FileNotFoundError(f"no projections in {folder}: run notebook 03 first")
    projections = pd.read_parquet(folder / "projections.parquet")
    drift_table = pd.read_parquet(folder / "drift.parquet")
    manifest = read_json(folder / "manifest.json")
    checkpoints = [Checkpoint(condition, int(step), None)
                   for condition, step in projections[["condition", "step"]].drop_duplicates().itertuples(index=False)]
    mean_activations = load_mean_activations(folder / "parts", checkpoints)
    conditions = sorted(projections["condition"].unique())
    rates = load_behaviour_rates(run_dir, config.behavior, conditions)
    return RunTables(run_dir, config.finetune.seed, projections, drift_table, rates, mean_activations,
                     dict(manifest.get("pairs", {})))


def load_inputs(config) -> FindingsInputs:
    from pathlib import Path

    from .trait_library import load_builtin_library

    main = load_run_tables(config)
    extra = []
    for path in config.findings.extra_runs:
        run_manifest = Path(path) / "manifest.json"
        seed = config.finetune.seed
        if run_manifest.is_file():
            import json

            seed = json.loads(run_manifest.read_text()).get("params", {}).get("finetune", {}).get("seed", seed)
        tables = load_run_tables(config, path)
        tables.seed = seed
        extra.append(tables)
    library = load_builtin_library()
    alignment = [trait.name for trait in library.all_traits if trait.polarity is not None]
    validity_path = Path(config.run_dir) / "behavior" / "judge_validity.csv"
    validity = pd.read_csv(validity_path) if validity_path.is_file() else None
    return FindingsInputs(main, extra, alignment, validity)


@dataclass
class PairTiming:
    fingerprint: FingerprintTiming
    behaviour_step: int | None
    rates: pd.DataFrame
    sentence: str


def fingerprint_and_behaviour(inputs: FindingsInputs, settings, seed: int = 0) -> dict[tuple[str, str], PairTiming]:
    result = {}
    trait_rows = inputs.main.projections[inputs.main.projections["trait"] != "assistant_axis"]
    rate = settings.em_rate
    renamed = inputs.main.rates.rename(columns={f"{rate}_low": "low", f"{rate}_high": "high"})
    for em, control in inputs.main.pairs.items():
        timing = fingerprint_timing(trait_rows, em, control, k=settings.n_key_traits, method=settings.threshold_method,
                                    n_perm=settings.n_perm, alpha=settings.alpha, spread_k=settings.spread_k,
                                    persist=settings.persist, seed=seed)
        behaviour_step = behaviour_crossing(renamed, em, control, persist=settings.persist)
        pair_rates = inputs.main.rates[inputs.main.rates["condition"].isin([em, control])]
        result[(em, control)] = PairTiming(timing, behaviour_step, pair_rates,
                                           lead_time_sentence(timing.crossing_step, behaviour_step))
    return result


def timing_table(timings: dict[tuple[str, str], PairTiming]) -> pd.DataFrame:
    rows = []
    for (em, control), timing in timings.items():
        fingerprint = timing.fingerprint
        lead = (timing.behaviour_step - fingerprint.crossing_step
                if timing.behaviour_step is not None and fingerprint.crossing_step is not None else None)
        rows.append({"em": em, "control": control, "key_traits": ", ".join(fingerprint.key_traits["trait"]),
                     "threshold": fingerprint.threshold, "threshold_method": fingerprint.threshold_method,
                     "fingerprint_crossing_step": fingerprint.crossing_step,
                     "behaviour_crossing_step": timing.behaviour_step, "lead_time_steps": lead,
                     "n_measurement_prompts": len(fingerprint.measurement_prompts)})
    return pd.DataFrame(rows)


def plot_timing(timing: PairTiming, rate_column: str):
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 6), sharex=True)
    scores = timing.fingerprint.scores
    top.plot(scores["step"], scores["fingerprint"], marker="o", color="C3", label="fingerprint (EM − control)")
    top.plot(scores["step"], scores["control_signed_drift"], marker=".", color="C7", label="control's own signed drift")
    top.axhline(timing.fingerprint.threshold, color="C3", ls="--", lw=1, label="threshold")
    if timing.fingerprint.crossing_step is not None:
        top.axvline(timing.fingerprint.crossing_step, color="C3", ls=":", lw=1)
    top.set(ylabel="signed drift over key traits", title="Fingerprint and behaviour over training")
    top.legend(fontsize=8)
    for index, (condition, rows) in enumerate(timing.rates.groupby("condition", sort=True)):
        rows = rows.sort_values("step")
        bottom.plot(rows["step"], rows[rate_column], marker="o", color=f"C{index}", label=condition)
        bottom.fill_between(rows["step"], rows[f"{rate_column}_low"], rows[f"{rate_column}_high"], alpha=0.15,
                            color=f"C{index}")
    if timing.behaviour_step is not None:
        bottom.axvline(timing.behaviour_step, color="C0", ls=":", lw=1)
    bottom.set(xlabel="training step", ylabel=f"{rate_column} (Wilson 95%)")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    return fig


@dataclass
class MonitorEvaluation:
    results: pd.DataFrame
    table: object | None           # monitor.MonitorTable
    feature_names: list[str]
    description: str


def monitor_rows(runs: Sequence[RunTables], rate_column: str, relative_to: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drift profiles and danger-scaled EM rates (:func:`danger_scale`) of every evaluated *trained*
    checkpoint, keyed by dataset and seed.

    Step 0 is left out: it is the same untouched base model in every run, so its drift is zero by
    construction and, relative to the base, it is never dangerous. Kept once per run it would hand every
    feature set free AUROC (anything that grows with training separates it from the rest), and the
    monitor's question is which fine-tuned checkpoints turned dangerous.
    """
    drift_rows, rate_rows = [], []
    for run in runs:
        evaluated = run.rates[["condition", "step", rate_column]].rename(columns={rate_column: "em_rate"})
        evaluated = evaluated[evaluated["step"].isin(run.drift["step"].unique())]
        drift_part = run.drift.merge(evaluated[["condition", "step"]], on=["condition", "step"])
        drift_rows.append(drift_part.assign(dataset=drift_part["condition"], seed=run.seed)
                          [["dataset", "seed", "step", "trait", "drift_pct_of_norm"]])
        rate_rows.append(evaluated.assign(dataset=evaluated["condition"], seed=run.seed)[["dataset", "seed", "step", "em_rate"]])
    drift, rates = pd.concat(drift_rows, ignore_index=True), pd.concat(rate_rows, ignore_index=True)
    rates = danger_scale(rates, relative_to)  # needs the step-0 rows, so before they go
    return (drift[drift["step"] > 0].reset_index(drop=True), rates[rates["step"] > 0].reset_index(drop=True))


def danger_scale(rate_rows: pd.DataFrame, relative_to: str) -> pd.DataFrame:
    """EM rates as the danger label reads them: unchanged (``"zero"``), or minus the rate of the same
    run's base model (``"base"``: its step-0 row), so that a judge's false-positive floor or a small
    model's base rate does not make every checkpoint, base included, "dangerous"."""
    if relative_to == "zero":
        return rate_rows
    if relative_to != "base":
        raise ValueError(f"danger_relative_to must be 'zero' or 'base', got {relative_to!r}")
    base = rate_rows[rate_rows["step"] == 0].groupby(["dataset", "seed"])["em_rate"].first()
    keys = pd.MultiIndex.from_frame(rate_rows[["dataset", "seed"]])
    missing = sorted(set(keys) - set(base.index))
    if missing:
        raise ValueError(f"danger_relative_to='base' needs a step-0 EM rate for every run; none for {missing[:3]}")
    return rate_rows.assign(em_rate=rate_rows["em_rate"].to_numpy() - base.reindex(keys).to_numpy())


def monitor_evaluation(inputs: FindingsInputs, settings, seed: int = 0) -> MonitorEvaluation:
    runs = [inputs.main, *inputs.extra]
    drift_rows, rate_rows = monitor_rows(runs, settings.em_rate, settings.danger_relative_to)
    table = monitor_lib.build_monitor_table(drift_rows, rate_rows, danger_threshold=settings.danger_threshold,
                                            value_column="drift_pct_of_norm")
    groups = table.groups
    layer_counts = inputs.main.projections.groupby("layer")["trait"].nunique()
    layer = int(layer_counts.idxmax())
    raw = []
    for run in runs:
        raw_run = raw_activation_drift(run.mean_activations, layer).assign(seed=run.seed)
        raw.append(raw_run)
    raw_table = pd.concat(raw, ignore_index=True).rename(columns={"condition": "dataset"})
    raw_table = groups.merge(raw_table, on=["dataset", "seed", "step"], how="left")
    raw_matrix = raw_table[[column for column in raw_table.columns if column.startswith("dim_")]]
    sets = monitor_feature_sets(table.features, raw_matrix, inputs.alignment_traits, seed=seed)
    # Held-out datasets are the monitor's question, so a fold holds out a dataset with all its seeds
    # (holding out one (dataset, seed) would train on the same dataset's other seed). With several
    # seeds a second scheme holds out a whole seed: does the monitor carry over to a new training run?
    schemes = {"dataset": ["dataset"]}
    if groups["seed"].nunique() > 1:
        schemes["seed"] = ["seed"]
    per_scheme = []
    for name, columns in schemes.items():
        scheme_results = evaluate_monitors(sets, table.labels, groups[columns], models=settings.monitor_models,
                                           seed=seed, n_boot=settings.n_boot)
        scheme_results.insert(0, "held_out", name)
        per_scheme.append(scheme_results)
    results = pd.concat(per_scheme, ignore_index=True)
    n_groups = len(groups[["dataset", "seed"]].drop_duplicates())
    description = (f"{len(table.labels)} evaluated trained checkpoints (the base model, drift 0 by construction, left "
                   f"out) from {n_groups} (dataset, seed) runs, "
                   f"{int(table.labels.sum())} dangerous ({settings.em_rate}"
                   f"{' minus the base model' if settings.danger_relative_to == 'base' else ''} > "
                   f"{settings.danger_threshold}); "
                   f"raw-activation baselines read layer {layer}. Folds hold out one dataset with all its seeds"
                   f"{' and, separately, one seed with all its datasets' if 'seed' in schemes else ''}.")
    return MonitorEvaluation(results, table, list(table.features.columns), description)


def plot_monitor(results: pd.DataFrame):
    import matplotlib.pyplot as plt
    import seaborn as sns

    shown = results.dropna(subset=["auroc"])
    fig, ax = plt.subplots(figsize=(8, 1 + 0.35 * len(shown)))
    held_out = shown["held_out"] if "held_out" in shown else pd.Series("", index=shown.index)
    labels = [f"{features} · {model}" + (f" · held out: {scheme}" if scheme else "")
              for features, model, scheme in zip(shown["features"], shown["model"], held_out)]
    palette = dict(zip(held_out.unique(), sns.color_palette()))
    ax.barh(labels, shown["auroc"], color=held_out.map(palette).tolist())
    ax.errorbar(shown["auroc"], range(len(shown)), xerr=[shown["auroc"] - shown["auroc_low"],
                                                          shown["auroc_high"] - shown["auroc"]],
                fmt="none", ecolor="black", capsize=2, lw=1)
    ax.axvline(0.5, color="grey", ls="--", lw=1)
    ax.set(xlim=(0, 1), xlabel="held-out AUROC (95% bootstrap)", title="Dangerous-checkpoint monitors")
    fig.tight_layout()
    return fig


def trait_behaviour_spearman(inputs: FindingsInputs, settings) -> pd.DataFrame:
    runs = [inputs.main, *inputs.extra]
    rows, behaviour_rows = [], []
    for run in runs:
        merged = run.drift.merge(run.rates, on=["condition", "step"])
        if merged.empty:
            continue
        # Step 0 is the one base model, copied into every condition: count it once, not once per condition.
        first_condition = sorted(merged["condition"].unique())[0]
        merged = merged[(merged["step"] > 0) | (merged["condition"] == first_condition)]
        wide = merged.pivot_table(index=["condition", "step"], columns="trait", values="drift_pct_of_norm")
        wide.index = [f"{run.run_dir.name}/{condition}/{step}" for condition, step in wide.index]
        rows.append(wide)
        behaviour = run.rates.set_index(["condition", "step"])[[settings.em_rate, "mean_aligned", "coherence_rate"]]
        behaviour.index = [f"{run.run_dir.name}/{condition}/{step}" for condition, step in behaviour.index]
        behaviour_rows.append(behaviour.loc[wide.index])
    if not rows or sum(len(frame) for frame in rows) < 4:
        return pd.DataFrame()
    return monitor_lib.spearman_matrix(pd.concat(rows), pd.concat(behaviour_rows))


def plot_spearman(spearman: pd.DataFrame, k: int = 15):
    import matplotlib.pyplot as plt
    import seaborn as sns

    grid = spearman.pivot_table(index="trait", columns="behaviour", values="rho")
    first = grid.columns[0]
    chosen = grid[first].abs().sort_values(ascending=False).head(k).index
    fig, ax = plt.subplots(figsize=(6, 1 + 0.3 * len(chosen)))
    sns.heatmap(grid.loc[chosen], cmap="RdBu_r", center=0, vmin=-1, vmax=1, annot=True, fmt=".2f", ax=ax,
                cbar_kws={"label": "Spearman rho"})
    ax.set(title="Trait drift vs behaviour across checkpoints", xlabel="", ylabel="")
    fig.tight_layout()
    return fig


def trait_explorer(projections: pd.DataFrame):
    """An ipywidgets browser of any trait's trajectory for any conditions (mean ± 95% CI over prompts)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    import seaborn as sns

    traits = sorted(projections["trait"].unique())
    conditions = sorted(projections["condition"].unique())
    trait_box = widgets.Dropdown(options=traits, value=traits[0], description="trait")
    condition_box = widgets.SelectMultiple(options=conditions, value=tuple(conditions), description="conditions")

    def draw(trait, chosen):
        rows = projections[(projections["trait"] == trait) & projections["condition"].isin(chosen)]
        fig, ax = plt.subplots(figsize=(7, 3.8))
        sns.lineplot(data=rows, x="step", y="value", hue="condition", marker="o", errorbar=("ci", 95), ax=ax)
        ax.set(title=f"{trait}: projection over training", xlabel="training step", ylabel="projection (mean, 95% CI)")
        plt.show()

    return widgets.interactive(draw, trait=trait_box, chosen=condition_box)


def save_findings_tables(out_dir, fingerprint_timing: pd.DataFrame, monitor_results: pd.DataFrame,
                         spearman: pd.DataFrame) -> list:
    """The report's tables as CSV files for writeups and later analysis: fingerprint_timing.csv
    (:func:`timing_table`), monitor_results.csv and trait_behaviour_spearman.csv (atomic writes)."""
    from pathlib import Path

    from .core.artifacts import atomic_write_text

    tables = {"fingerprint_timing": fingerprint_timing, "monitor_results": monitor_results,
              "trait_behaviour_spearman": spearman}
    return [atomic_write_text(Path(out_dir) / f"{stem}.csv", table.to_csv(index=False)) for stem, table in tables.items()]


def save_monitor_artifacts(inputs: FindingsInputs, monitor: MonitorEvaluation, timings, out_dir) -> None:
    """What the live monitor of notebook 01 reads: the fingerprint (key traits, signs, a drift
    threshold) and, when the labels allow, a logistic monitor fitted on all evaluated checkpoints."""
    from pathlib import Path

    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .core.artifacts import atomic_path, atomic_write_json

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
    if labels.any() and not labels.all():
        pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        pipeline.fit(monitor.table.features.to_numpy(), labels)
        pipeline.feature_names_ = list(monitor.table.features.columns)
        with atomic_path(out_dir / "monitor.joblib") as temporary:
            joblib.dump(pipeline, temporary)


def limitations(inputs: FindingsInputs, timings, monitor: MonitorEvaluation) -> list[str]:
    """Limitations written from what was measured, not boilerplate."""
    notes = []
    rates = inputs.main.rates
    for (em, control), timing in timings.items():
        peak = rates[rates["condition"] == em]["em_rate_of_all"].max()
        control_peak = rates[rates["condition"] == control]["em_rate_of_all"].max()
        if timing.behaviour_step is None:
            notes.append(f"The EM rate of {em} (peak {peak:.1%} of all answers) never exceeded {control}'s "
                         f"(peak {control_peak:.1%}) beyond the Wilson intervals, so no lead time is reported.")
        if timing.fingerprint.crossing_step is None:
            notes.append(f"The {em} fingerprint never crossed its {timing.fingerprint.threshold_method} threshold "
                         f"({timing.fingerprint.threshold:.3g}).")
    base_rates = rates[rates["step"] == 0]["em_rate_of_all"]
    if len(base_rates) and base_rates.iloc[0] > 0.05:
        notes.append(f"The base model's own answers were judged misaligned at {base_rates.iloc[0]:.1%} (of all answers): "
                     "part of every EM rate here is the small model's rambling or the judge's false positives, so "
                     "differences from the control and from step 0 carry the signal, not the level.")
    n_answers = rates["n_answers"]
    notes.append(f"Behaviour rests on {int(n_answers.min())}-{int(n_answers.max())} free-form answers per checkpoint; "
                 "rates below a few percent cannot be told apart at this sample size.")
    validity = inputs.judge_validity
    if validity is None or validity.empty:
        notes.append("The judge's validity was not measured in this run (behavior.validate_judge off or not available).")
    else:
        for row in validity.to_dict("records"):
            name = row.get("judge", "judge")
            notes.append(f"Judge {name}: AUROC {row.get('auroc', float('nan')):.2f} and accuracy "
                         f"{row.get('accuracy', float('nan')):.2f} on the held-out labelled answers; EM rates are only "
                         "as valid as this judge.")
    undefined = monitor.results[monitor.results["undefined"] != ""]
    if len(undefined):
        notes.append(f"{len(undefined)} of {len(monitor.results)} monitor evaluations have undefined metrics "
                     f"({undefined['undefined'].iloc[0]}): {monitor.description}")
    n_prompts = inputs.main.projections["prompt"].nunique()
    notes.append(f"Trait projections use {n_prompts} projection prompts; the fingerprint is measured on half of them.")
    return notes


def _stage_figures(run_dir) -> list:
    """PNG figures of notebooks 00-04, in notebook order."""
    from pathlib import Path

    run_dir = Path(run_dir)
    found = []
    for folder in sorted(path for path in run_dir.iterdir() if path.is_dir() and path.name not in ("notebooks", "findings")):
        found += sorted(folder.rglob("*.png"))
    return [path for path in found if "/parts/" not in str(path) and "/checkpoints/" not in str(path)]


def write_report(config, inputs: FindingsInputs, timings, monitor: MonitorEvaluation, spearman: pd.DataFrame, out_dir):
    """``findings/report.md`` and ``findings/report.html``."""
    import json
    from pathlib import Path

    from .core.artifacts import provenance
    from .report import Report

    out_dir = Path(out_dir)
    run_dir = Path(config.run_dir)
    report = Report(f"Trait-space findings: run '{config.run_name}'")
    conditions = sorted(inputs.main.projections["condition"].unique())
    report.text(f"Model `{config.model.source}`; conditions {', '.join(conditions)}; "
                f"{inputs.main.projections['step'].nunique()} checkpoints projected on "
                f"{inputs.main.projections['trait'].nunique()} directions; params hash `{config.params_hash()}`.")
    report.heading("Fingerprint and lead time")
    for (em, control), timing in timings.items():
        report.text(f"**{em} vs {control}.** {timing.sentence}")
        if (out_dir / "figures" / f"timing__{em}.png").is_file():
            report.figure(out_dir / "figures" / f"timing__{em}.png", f"{em}: fingerprint (top) and EM rate (bottom)")
    report.table(timing_table(timings), "Fingerprint and behaviour crossings")
    report.heading("Top trait shifts (EM minus control, final step)")
    for path in sorted((run_dir / "projections").glob("top_shifts__*.csv")):
        top = pd.read_csv(path)
        report.table(top.head(config.project.top_k)[["trait", "differential", "ci_low", "ci_high", "q_value", "direction"]],
                     f"{path.stem.replace('top_shifts__', '').replace('__vs__', ' vs ')}: 95% bootstrap intervals, BH q-values")
    for path in sorted((run_dir / "projections").glob("decomposition__*.csv")):
        decomposition = pd.read_csv(path)
        report.table(decomposition.tail(1), f"{path.stem}: shared vs specific drift at the final step")
    report.heading("Behaviour")
    shown_columns = [column for column in ("condition", "step", "n_answers", "em_rate_of_all", "em_rate_of_all_low",
                                           "em_rate_of_all_high", "em_rate_of_coherent", "n_coherent", "coherence_rate")
                     if column in inputs.main.rates]
    report.table(inputs.main.rates[shown_columns], "EM rate per checkpoint: of all answers (model-organisms convention) and "
                 "of coherent answers (EM-paper convention), Wilson 95% intervals")
    if inputs.judge_validity is not None:
        report.table(inputs.judge_validity, "Judge validity on the held-out labelled answers")
    report.heading("Monitor")
    report.text(monitor.description)
    report.table(monitor.results.drop(columns=["undefined"]), "Monitors and baselines on held-out datasets (held_out: dataset) and held-out seeds (held_out: seed)")
    if (out_dir / "figures" / "monitor_auroc.png").is_file():
        report.figure(out_dir / "figures" / "monitor_auroc.png", "Monitor AUROC with 95% intervals")
    if len(spearman):
        report.table(spearman.sort_values("p_value").head(15), "Strongest trait-behaviour Spearman correlations")
    report.heading("Figures from notebooks 00-04")
    for path in _stage_figures(run_dir):
        report.figure(path, f"{path.parent.name}/{path.stem}".replace("__", " · ").replace("_", " "))
    report.heading("Limitations")
    report.bullets(limitations(inputs, timings, monitor))
    report.heading("Parameters and provenance")
    report.code(json.dumps({"params": config.resolved(), **provenance()}, indent=2, default=str))
    return report.write(out_dir)
