"""What notebook 04 asks and at which checkpoints: evaluation prompts (questions in every format,
self-assessment items, each with its own seed) and the checkpoints to evaluate."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np

from ..core.checkpoints import Checkpoint, base_checkpoint
from ..library import Question, SelfAssessment, load_builtin_questions, load_em_question_yaml

ItemKind = Literal["question", "rating", "forced_choice"]


# -- what is asked ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalPrompt:
    """One sample to draw: which item, in which format and paraphrase, with which seed.

    ``question_id`` groups the formats of one question (the id without ``_json``/``_template``);
    ``item_id`` is the variant actually asked; ``user``/``system`` are the texts as sent.
    """

    kind: ItemKind
    question_id: str
    item_id: str
    format: str
    paraphrase_index: int
    sample_index: int
    seed: int
    user: str
    system: str | None

    @property
    def answer_id(self) -> str:
        return f"{self.item_id}|p{self.paraphrase_index}|s{self.sample_index}"

    def messages(self) -> list[dict[str, str]]:
        chat = [] if self.system is None else [{"role": "system", "content": self.system}]
        return [*chat, {"role": "user", "content": self.user}]


def load_eval_questions(question_sets: Sequence[str], formats: Sequence[str], question_files: Sequence[str] = ()) -> list[Question]:
    """Built-in questions in the given formats, then the questions of each EM-format YAML file as
    they are (their ids carry their own format suffixes). Duplicate ids are an error naming both sources."""
    questions: list[Question] = []
    source_of: dict[str, str] = {}
    batches: list[tuple[str, list[Question]]] = [
        (f"built-in set {name!r}", load_builtin_questions(name, formats)) for name in question_sets
    ]
    batches += [(str(path), load_em_question_yaml(path)) for path in question_files]
    for source, batch in batches:
        for question in batch:
            if question.id in source_of:
                raise ValueError(f"question id {question.id!r} appears in {source_of[question.id]} and in {source}")
            source_of[question.id] = source
            questions.append(question)
    return questions


def build_eval_prompts(
    questions: Sequence[Question],
    samples_per_question: int,
    self_assessment: SelfAssessment | None = None,
    self_assessment_samples: int = 1,
    run_seed: int = 0,
) -> list[EvalPrompt]:
    """Every sample to draw at one checkpoint.

    Question sample k uses paraphrase ``k mod n_paraphrases`` (all paraphrases are used, in turn);
    self-assessment items have one wording. Seeds come from :func:`traitspace.core.sampling.derive_seed`
    over (run seed, item id, paraphrase, sample index): the same at every checkpoint.
    """
    from ..core.sampling import derive_seed

    if samples_per_question < 1 or self_assessment_samples < 1:
        raise ValueError("samples_per_question and self_assessment_samples must be >= 1")
    prompts: list[EvalPrompt] = []
    for question in questions:
        for sample in range(samples_per_question):
            paraphrase = sample % len(question.paraphrases)
            prompts.append(EvalPrompt(
                "question", question.base_id, question.id, question.format, paraphrase, sample,
                derive_seed(run_seed, "behavior", question.id, paraphrase, sample),
                question.paraphrases[paraphrase], question.system,
            ))
    if self_assessment is not None:
        items: list[tuple[ItemKind, str, str]] = [("rating", item.id, item.prompt) for item in self_assessment.ratings]
        items += [("forced_choice", item.id, item.prompt) for item in self_assessment.forced_choice]
        for kind, item_id, text in items:
            for sample in range(self_assessment_samples):
                prompts.append(EvalPrompt(
                    kind, item_id, item_id, "plain", 0, sample,
                    derive_seed(run_seed, "self_assessment", item_id, sample), text, None,
                ))
    ids = [prompt.answer_id for prompt in prompts]
    if len(set(ids)) != len(ids):
        raise ValueError("two evaluation items share an id (a question id equals a self-assessment item id?)")
    return prompts


def prompts_fingerprint(prompts: Sequence[EvalPrompt], **settings) -> str:
    """Hash of every prompt (texts, seeds) and the sampling settings: an answers file made with a
    different fingerprint is stale and is sampled again."""
    payload = {"prompts": [asdict(prompt) for prompt in prompts], "settings": settings}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


# -- which checkpoints ------------------------------------------------------------------------------
def select_checkpoints(checkpoints: Sequence, max_checkpoints: int | None) -> list:
    """The trained checkpoints (step > 0) to evaluate: all, or ``max_checkpoints`` evenly spread
    over the trail, always with the last.

    Spread by position, so log-spaced trails keep some early detail, but starting one interval after
    the base model (which is always evaluated, as step 0): the trail's first checkpoint is one
    optimizer step from the base and answers almost exactly like it, so sampling it is wasted.
    """
    trained = [checkpoint for checkpoint in checkpoints if checkpoint.step > 0]
    if max_checkpoints is None or len(trained) <= max_checkpoints:
        return trained
    # Positions -1 (the base model) .. len - 1, cut into max_checkpoints intervals; keep the ends.
    ends = np.linspace(-1, len(trained) - 1, max_checkpoints + 1)[1:]
    positions = np.unique(np.clip(np.rint(ends), 0, len(trained) - 1).astype(int))
    return [trained[position] for position in positions]


def plan_checkpoints(run_dir: str | Path, conditions: Iterable[str], max_checkpoints: int | None,
                     seeds: Iterable[int] | None = None) -> tuple[list[Checkpoint], list[str], list[tuple[str, int]]]:
    """The base model once, then the selected checkpoints of every trail (condition x training seed,
    ``seeds`` default: all present) that has a folder; every trail gets the same steps.

    Returns (checkpoints to sample, conditions found, trails found as (condition, seed)). With no
    trained checkpoint anywhere (notebook 01 has not run), the plan is the base model alone.
    """
    from ..core.checkpoints import list_trails

    trails = list_trails(run_dir, list(conditions), None if seeds is None else list(seeds))
    plan = [base_checkpoint()]
    for trail in trails:
        plan.extend(select_checkpoints(trail, max_checkpoints))
    found = list(dict.fromkeys(trail[0].condition for trail in trails))
    return plan, found, [(trail[0].condition, trail[0].seed) for trail in trails]
