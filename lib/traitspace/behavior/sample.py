"""Sampling the evaluation prompts at every planned checkpoint, cached per checkpoint.

One answers part per checkpoint (``behavior/answers/<condition>/step-<N>.parquet``, a
:class:`traitspace.core.parts.CheckpointParts` folder) keyed by the prompts' fingerprint and the
checkpoint's weights, so an interrupted run resumes and a finished checkpoint is read back. A
sample's seed depends only on (run seed, item, format, paraphrase, sample index), so every
checkpoint answers with the same random numbers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from ..core.checkpoints import Checkpoint
from ..core.code_versions import versioned
from ..core.parts import CheckpointParts, combine_fingerprint
from .plan import EvalPrompt

ANSWER_COLUMNS = [
    "answer_id", "condition", "seed", "step", "kind", "question_id", "item_id", "format", "paraphrase_index",
    "sample_index", "sample_seed", "system", "question", "answer", "n_tokens", "stopped",
]
ANSWERS_DIRNAME = "answers"


def answer_parts(behavior_dir: str | Path) -> CheckpointParts:
    return CheckpointParts(Path(behavior_dir) / ANSWERS_DIRNAME)


def sample_one_checkpoint(
    loaded, prompts: Sequence[EvalPrompt], checkpoint: Checkpoint, *, max_new_tokens: int,
    self_assessment_max_new_tokens: int, temperature: float, top_p: float, batch_size: int,
    progress: bool | str = False,
) -> pd.DataFrame:
    """Draw every prompt once with the model as it is now (the caller activates the adapter)."""
    from ..core.sampling import sample_replies

    limits = [max_new_tokens if prompt.kind == "question" else self_assessment_max_new_tokens for prompt in prompts]
    replies = sample_replies(
        loaded, [prompt.messages() for prompt in prompts], [prompt.seed for prompt in prompts],
        max_new_tokens=limits, temperature=temperature, top_p=top_p, batch_size=batch_size, progress=progress,
    )
    rows = [{
        "answer_id": prompt.answer_id, "condition": checkpoint.condition, "seed": checkpoint.seed,
        "step": checkpoint.step,
        "kind": prompt.kind, "question_id": prompt.question_id, "item_id": prompt.item_id, "format": prompt.format,
        "paraphrase_index": prompt.paraphrase_index, "sample_index": prompt.sample_index, "sample_seed": prompt.seed,
        "system": prompt.system, "question": prompt.user, "answer": reply.text, "n_tokens": reply.n_tokens,
        "stopped": reply.stopped,
    } for prompt, reply in zip(prompts, replies)]
    table = pd.DataFrame(rows, columns=ANSWER_COLUMNS)
    table["sample_seed"] = table["sample_seed"].astype("int64")
    return table


def sample_checkpoints(
    loaded, plan: Sequence[Checkpoint], prompts: Sequence[EvalPrompt], behavior_dir: str | Path, *,
    fingerprint: str, max_new_tokens: int, self_assessment_max_new_tokens: int, temperature: float = 1.0,
    top_p: float = 1.0, batch_size: int = 64, progress: bool = False, log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Answers at every planned checkpoint; a checkpoint whose answers part has this fingerprint is
    read back, not sampled again. Returns all answers (the ``ANSWER_COLUMNS`` table)."""
    from ..core.models import AdapterSwitcher

    parts = answer_parts(behavior_dir)
    switcher = AdapterSwitcher(loaded)
    tables = []
    for checkpoint in plan:
        checkpoint_fingerprint = versioned(combine_fingerprint(fingerprint, checkpoint.identity()), "behavior.sample")
        if parts.is_fresh(checkpoint, checkpoint_fingerprint):
            tables.append(parts.read(checkpoint))
            if log:
                log(f"{checkpoint.condition} seed {checkpoint.seed} step {checkpoint.step}: answers already sampled ({parts.path(checkpoint)})")
            continue
        started, cpu_started = time.perf_counter(), time.process_time()
        with switcher.use(checkpoint.adapter_path):
            table = sample_one_checkpoint(
                loaded, prompts, checkpoint, max_new_tokens=max_new_tokens,
                self_assessment_max_new_tokens=self_assessment_max_new_tokens, temperature=temperature,
                top_p=top_p, batch_size=batch_size,
                progress=f"{checkpoint.condition} seed {checkpoint.seed} step {checkpoint.step}" if progress else False,
            )
        # CPU time next to wall time: on a machine shared with other jobs the wall time says little.
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        parts.write(checkpoint, table, checkpoint_fingerprint, {
            "seconds": round(seconds, 3), "cpu_seconds": round(cpu_seconds, 3),
            "tokens": int(table["n_tokens"].sum()), "adapter": str(checkpoint.adapter_path)})
        if log:
            log(f"{checkpoint.condition} seed {checkpoint.seed} step {checkpoint.step}: {len(table)} answers, "
                f"{int(table['n_tokens'].sum())} tokens in {seconds:.1f} s ({cpu_seconds:.1f} s of CPU time)")
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def sampling_seconds(behavior_dir: str | Path, plan: Sequence[Checkpoint]) -> dict[str, float | None]:
    """Seconds each planned checkpoint took to sample, as recorded when its part was written."""
    parts = answer_parts(behavior_dir)
    return {f"{checkpoint.condition}/seed-{checkpoint.seed}@{checkpoint.step}": parts.info(checkpoint).get("seconds") for checkpoint in plan}
