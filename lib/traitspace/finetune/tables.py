"""The tables and figures notebook 01 shows: the dataset preview, the training summary, the loss and
checkpoint tables, the loss curves and the live monitor's fingerprint curve.

Everything here reads the condition's rows or this stage's own files (the checkpoint trail's
training logs, the live monitor's log); nothing trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from ..core.artifacts import read_json
from ..core.checkpoints import ADAPTER_FILES, TRAINING_LOG_FILE, list_trails, read_training_log
from ..core.config import FinetuneSection
from .data import condition_sources, load_condition_rows
from .live_monitor import live_log_path, read_live_log

LOSS_COLUMNS = ["step", "epoch", "loss", "learning_rate", "grad_norm"]


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " ..."


def condition_descriptions(finetune: FinetuneSection) -> dict[str, str]:
    """Condition -> one line saying what its data is (the built-in dataset's description or the file)."""
    from ..em_data import DATASETS

    return {condition: DATASETS[source].description if source in DATASETS else f"user file {source}"
            for condition, source in condition_sources(finetune).items()}


def dataset_preview(finetune: FinetuneSection, n_rows: int = 3, answer_chars: int = 240) -> pd.DataFrame:
    """A few rows of every condition's data (user prompt, answer, meta) as one DataFrame."""
    records = []
    for condition in condition_sources(finetune):
        for row in load_condition_rows(finetune, condition)[:n_rows]:
            user = next((message["content"] for message in row["messages"] if message["role"] == "user"), "")
            answer = row["messages"][-1]["content"] if row["messages"][-1]["role"] == "assistant" else ""
            records.append({"condition": condition, "user": _shorten(user, answer_chars),
                            "assistant": _shorten(answer, answer_chars),
                            **{f"meta.{key}": value for key, value in row["meta"].items()}})
    return pd.DataFrame(records)


def settings_table(finetune: FinetuneSection) -> pd.DataFrame:
    """The fine-tuning settings every condition shares, one row per key."""
    settings = pd.Series(finetune.model_dump(mode="json"), name="value").to_frame()
    settings.loc["conditions", "value"] = str(condition_sources(finetune))
    return settings


def training_summary(results: Mapping[tuple[str, int], object]) -> pd.DataFrame:
    """One row per trail of :func:`traitspace.finetune.train_all`'s results: whether it trained
    now, its steps and examples, speed, padding share and final loss."""
    rows = []
    for (name, seed), result in results.items():
        summary = result.summary
        rows.append({
            "condition": name,
            "seed": seed,
            "trained now": result.trained_now,
            "started from step": result.resumed_from_step if result.trained_now else None,
            "steps": result.total_steps,
            "examples": summary["n_examples"],
            "answers cut at max_length": summary["tokenization"]["answers_cut"],
            "mean tokens / example": round(summary["tokenization"]["tokens"] / max(summary["n_examples"], 1)),
            "minutes": round(result.seconds / 60, 2),
            "tokens/s": summary["tokens_per_second_this_process"],
            "padding share": summary["padding_share_this_process"],
            "final loss": round(summary["final_loss"], 4),
        })
    return pd.DataFrame(rows)


def loss_table(run_dir: str | Path, conditions: Sequence[str]) -> pd.DataFrame:
    """Per-step training loss of each trail (from its latest checkpoint's training log)."""
    frames = []
    for trail in list_trails(run_dir, list(conditions)):
        condition, seed = trail[0].condition, trail[0].seed
        log = read_training_log(run_dir, condition, seed)
        frame = pd.DataFrame(log.get("losses", []), columns=LOSS_COLUMNS)
        frames.append(frame.assign(condition=condition, seed=seed))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def checkpoint_table(run_dir: str | Path, conditions: Sequence[str]) -> pd.DataFrame:
    """One row per checkpoint (step 0 = base model): step, epoch, loss at that step, folder, size."""
    records = []
    for trail in list_trails(run_dir, list(conditions)):
        for checkpoint in trail:
            record = {"condition": checkpoint.condition, "seed": checkpoint.seed, "step": checkpoint.step, "epoch": 0.0, "loss": None,
                      "path": "(base model)", "adapter_MB": 0.0}
            if checkpoint.adapter_path is not None:
                log = read_json(checkpoint.adapter_path / TRAINING_LOG_FILE)
                record.update(
                    epoch=round(float(log["epoch"]), 3),
                    loss=log["losses"][-1]["loss"] if log["losses"] else None,
                    path=str(checkpoint.adapter_path),
                    adapter_MB=round((checkpoint.adapter_path / ADAPTER_FILES[1]).stat().st_size / 2**20, 2),
                )
            records.append(record)
    return pd.DataFrame(records)


def smoothed_losses(losses: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``losses`` with a ``smoothed loss`` column (rolling mean per trail over ~a tenth of its
    steps) and the window used; the raw per-step loss is too noisy to compare two curves by eye."""
    n_trails = max(len(losses.groupby(["condition", "seed"])), 1) if len(losses) else 1
    window = max(len(losses) // (10 * n_trails), 1)
    smoothed = losses.copy()
    smoothed["smoothed loss"] = smoothed.groupby(["condition", "seed"])["loss"].transform(
        lambda column: column.rolling(window, min_periods=1).mean())
    return smoothed, window


def plot_losses(losses: pd.DataFrame, checkpoints: pd.DataFrame, loss_on: str):
    """Raw (faint) and smoothed loss per trail (colour: condition, line style: seed), a dot at every
    saved checkpoint."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    smoothed, window = smoothed_losses(losses)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    sns.lineplot(data=smoothed, x="step", y="loss", hue="condition", units="seed", estimator=None, alpha=0.25,
                 legend=False, ax=ax)
    sns.lineplot(data=smoothed, x="step", y="smoothed loss", hue="condition", style="seed", ax=ax)
    saved = checkpoints[checkpoints["step"] > 0].merge(smoothed, on=["condition", "seed", "step"], how="left")
    sns.scatterplot(data=saved, x="step", y="smoothed loss", hue="condition", legend=False, s=25, ax=ax)
    smoothing = f"rolling mean over {window} steps" if window > 1 else "per step"
    ax.set(title=f"Training loss on {loss_on} tokens ({smoothing})", xlabel="optimizer step", ylabel="loss")
    fig.tight_layout()
    return fig


def live_monitor_table(run_dir: str | Path, conditions: Sequence[str]) -> pd.DataFrame:
    """Every trail's live-monitor records (step, seconds, fingerprint, alarm, drift.<trait> ...)."""
    frames = [read_live_log(live_log_path(run_dir, trail[0].condition, trail[0].seed))
              .assign(condition=trail[0].condition, seed=trail[0].seed)
              for trail in list_trails(run_dir, list(conditions))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plot_live_monitor(live: pd.DataFrame):
    """The fingerprint measured during training, one line per trail (colour: condition, style: seed)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(7, 3.5))
    sns.lineplot(data=live, x="step", y="fingerprint", hue="condition", style="seed", marker="o", ax=ax)
    ax.set(title="Live monitor: fingerprint during training", xlabel="optimizer step",
           ylabel="mean signed drift over key traits")
    return fig
