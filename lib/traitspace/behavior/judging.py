"""Judging the free-form answers (alignment and coherence, 0-100) per checkpoint, cached like the
answers (``behavior/scores/<condition>/step-<N>.parquet``), and joining scores to answers.

A checkpoint's cache key is the judge settings plus a hash of its answers, so re-sampled answers
are judged again and unchanged ones are not.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ..core.checkpoints import BASE_CONDITION, Checkpoint
from ..core.code_versions import versioned
from ..core.parts import CheckpointParts, combine_fingerprint

SCORE_COLUMNS = ["answer_id", "condition", "seed", "step", "judge", "aligned", "aligned_label", "coherent", "coherent_label"]
SCORES_DIRNAME = "scores"


def score_parts(behavior_dir: str | Path) -> CheckpointParts:
    return CheckpointParts(Path(behavior_dir) / SCORES_DIRNAME)


def judge_fingerprint(judge_name: str, judge_section) -> str:
    """The judge's cache key: its name and every setting of the judge section."""
    return combine_fingerprint(judge_name, judge_section.model_dump_json())


def score_answers(answers: pd.DataFrame, judge) -> pd.DataFrame:
    """Alignment and coherence scores of the free-form answers (kind == "question")."""
    from ..judges import JudgeItem

    questions = answers[answers["kind"] == "question"]
    items = [JudgeItem(question, answer) for question, answer in zip(questions["question"], questions["answer"])]
    aligned = judge.score(items, "aligned") if items else []
    coherent = judge.score(items, "coherent") if items else []
    if len(aligned) != len(items) or len(coherent) != len(items):
        raise RuntimeError(f"judge {judge.name!r} returned {len(aligned)}/{len(coherent)} scores for {len(items)} answers")
    return pd.DataFrame({
        "answer_id": questions["answer_id"].to_numpy(),
        "condition": questions["condition"].to_numpy(),
        "seed": questions["seed"].to_numpy(),
        "step": questions["step"].to_numpy(),
        "judge": judge.name,
        "aligned": [np.nan if score.score is None else float(score.score) for score in aligned],
        "aligned_label": [score.label for score in aligned],
        "coherent": [np.nan if score.score is None else float(score.score) for score in coherent],
        "coherent_label": [score.label for score in coherent],
    }, columns=SCORE_COLUMNS)


def score_checkpoints(
    answers: pd.DataFrame, judge, behavior_dir: str | Path, *, fingerprint: str,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Judge scores for every checkpoint in ``answers``, cached per checkpoint like the answers.

    ``fingerprint`` names the judge settings; each checkpoint's cache key adds a hash of the
    answers themselves, so re-sampled answers are judged again and unchanged ones are not.
    """
    parts = score_parts(behavior_dir)
    tables = []
    for (condition, seed, step), group in answers.groupby(["condition", "seed", "step"], sort=False):
        # Only (condition, seed, step) is known here: the part is keyed by it (step 0 = the shared base).
        checkpoint = Checkpoint(str(condition), int(step), None, int(seed))
        questions = group[group["kind"] == "question"]
        content = hashlib.sha256(pd.util.hash_pandas_object(
            questions[["answer_id", "question", "answer"]], index=False).to_numpy().tobytes()).hexdigest()
        checkpoint_fingerprint = versioned(combine_fingerprint(fingerprint, content), "behavior.judge")
        if parts.is_fresh(checkpoint, checkpoint_fingerprint):
            tables.append(parts.read(checkpoint))
            continue
        started = time.perf_counter()
        table = score_answers(group, judge)
        seconds = time.perf_counter() - started
        parts.write(checkpoint, table, checkpoint_fingerprint, {"seconds": round(seconds, 3), "judge": judge.name})
        if log:
            log(f"{condition} seed {seed} step {step}: judged {len(table)} answers in {seconds:.1f} s")
        tables.append(table)
    if not tables:
        return pd.DataFrame(columns=SCORE_COLUMNS)
    return pd.concat(tables, ignore_index=True)


def merge_scores(answers: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """Free-form answers with their judge scores, one row per answer (an answer id is unique within
    a checkpoint, so the key is condition, seed, step and answer id)."""
    questions = answers[answers["kind"] == "question"]
    return questions.merge(scores, on=["condition", "seed", "step", "answer_id"], how="left", validate="one_to_one")


def read_checkpoint_tables(folder: str | Path) -> pd.DataFrame:
    """Every part under ``folder`` (``<condition>/step-*.parquet``) as one table."""
    return CheckpointParts(folder).read_all()


def share_base(table: pd.DataFrame, trails: Sequence[tuple[str, int]]) -> pd.DataFrame:
    """Rows of the base model (condition "base", step 0) copied to step 0 of each trail (condition,
    seed), so each trail's curve starts at the shared base model. With no trails the table is unchanged."""
    if not trails:
        return table
    base = table[table["condition"] == BASE_CONDITION]
    copies = [base.assign(condition=condition, seed=seed) for condition, seed in trails]
    return pd.concat([table[table["condition"] != BASE_CONDITION], *copies], ignore_index=True)
