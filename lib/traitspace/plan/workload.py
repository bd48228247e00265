"""What each stage of a run computes, counted from the params alone: rows, sequences and tokens.

No model and no tokenizer: token counts are text lengths divided by :data:`CHARS_PER_TOKEN` plus
:data:`TEMPLATE_TOKENS_PER_MESSAGE` for the chat template's markers, an approximation stated in the
plan's output (byte-pair tokenizers of English prose and code give about 3.5-4.5 characters per token).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from ..core.config import RunConfig

CHARS_PER_TOKEN = 4.0
TEMPLATE_TOKENS_PER_MESSAGE = 6  # e.g. "<|im_start|>user\n" ... "<|im_end|>\n"


def text_tokens(*texts: str | None) -> int:
    """Approximate tokens of a conversation made of these messages (None or NaN: no message)."""
    present = [text for text in texts if isinstance(text, str)]
    return sum(math.ceil(len(text) / CHARS_PER_TOKEN) for text in present) + TEMPLATE_TOKENS_PER_MESSAGE * len(present)


@dataclass(frozen=True)
class Training:
    """Fine-tuning: every condition once per training seed (a trail)."""

    trails: int
    rows_per_trail: float  # mean over conditions
    tokens_per_row: float  # mean, after cutting at max_length
    epochs: float
    batch_size: int
    grad_accum: int
    max_length: int
    longest_row: int  # tokens of the longest row after the cut: the padded length of the worst batch
    checkpoints_per_trail: int

    @property
    def tokens(self) -> float:
        return self.trails * self.rows_per_trail * self.epochs * self.tokens_per_row

    @property
    def optimizer_steps(self) -> int:
        return math.ceil(self.rows_per_trail / (self.batch_size * self.grad_accum)) * math.ceil(self.epochs)


@dataclass(frozen=True)
class Forward:
    """Forward passes over whole sequences (capture, projection, log-likelihoods)."""

    what: str
    sequences: int
    tokens_per_sequence: float
    batch_size: int

    @property
    def tokens(self) -> float:
        return self.sequences * self.tokens_per_sequence


@dataclass(frozen=True)
class Sampling:
    """Generation: a prompt read once (prefill), then up to ``new_tokens`` decoded one at a time."""

    what: str
    sequences: int
    prompt_tokens: float  # mean per sequence
    new_tokens: int  # the cap (random-weight models and long answers reach it)
    batch_size: int

    @property
    def decode_steps(self) -> int:
        return math.ceil(self.sequences / self.batch_size) * self.new_tokens


@dataclass(frozen=True)
class StageWork:
    stage: str
    title: str
    parts: list[Training | Forward | Sampling] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def training_work(config: RunConfig) -> Training:
    from ..finetune.data import condition_sources, load_condition_rows
    from ..finetune.trainer import save_schedule

    settings = config.finetune
    rows_per_condition, lengths = [], []
    for condition in condition_sources(settings):
        rows = load_condition_rows(settings, condition)
        rows_per_condition.append(len(rows))
        lengths += [min(settings.max_length, text_tokens(*(message["content"] for message in row["messages"])))
                    for row in rows]
    steps = math.ceil(_mean(rows_per_condition) / (settings.batch_size * settings.grad_accum)) * math.ceil(settings.epochs)
    return Training(
        trails=len(rows_per_condition) * len(settings.seeds), rows_per_trail=_mean(rows_per_condition),
        tokens_per_row=_mean(lengths), epochs=settings.epochs, batch_size=settings.batch_size,
        grad_accum=settings.grad_accum, max_length=settings.max_length, longest_row=max(lengths, default=0),
        checkpoints_per_trail=len(save_schedule(settings, max(steps, 1))),
    )


def plan_work(config: RunConfig) -> list[StageWork]:
    """Every GPU-using stage's work under ``config``, in notebook order."""
    from ..behavior.plan import build_eval_prompts, load_eval_questions
    from ..behavior.preference import behaviour_pairs, load_preference_pairs
    from ..extract.plan import build_plan
    from ..library import load_self_assessment
    from ..library.traits import load_library

    training = training_work(config)
    trained_checkpoints = training.trails * training.checkpoints_per_trail  # + the base model, once
    stages: list[StageWork] = []

    check = config.model_check
    stages.append(StageWork("00", "model check", [
        Sampling("replies with and without a system prompt", 2 * len(check.chat_prompts),
                 _mean([text_tokens(check.demo_system_prompt, prompt) for prompt in check.chat_prompts]),
                 check.max_new_tokens, len(check.chat_prompts) * 2),
        Forward("contrast personas, every layer captured",
                len(check.contrast_system_prompts) * len(check.contrast_questions),
                _mean([text_tokens(system, question) for system in check.contrast_system_prompts.values()
                       for question in check.contrast_questions]), config.capture.batch_size),
    ]))

    stages.append(StageWork("01", "fine-tune", [training], [
        f"{training.trails} trails (conditions x training seeds), {training.optimizer_steps} optimizer steps and "
        f"{training.checkpoints_per_trail} checkpoints each"]))

    extract = config.extract
    rows = build_plan(load_library(extract.library), extract)
    prompt_tokens = _mean([text_tokens(system, question) for system, question in zip(rows["system"], rows["question"])])
    parts: list[Training | Forward | Sampling] = []
    if extract.mode == "response":
        parts.append(Sampling("answers under each persona prompt", len(rows), prompt_tokens, extract.max_new_tokens,
                              extract.batch_size))
        parts.append(Forward("capture over prompt + answer", len(rows), prompt_tokens + extract.max_new_tokens,
                             extract.batch_size))
    else:
        parts.append(Forward("capture of every prompt", len(rows), prompt_tokens, extract.batch_size))
    stages.append(StageWork("02", "extract traits", parts, [
        f"{rows['owner'].nunique()} directions, {len(rows)} conversations"
        + ("; shared system-prompt prefixes are counted in full (an upper bound)" if extract.share_prefixes else "")]))

    project = config.project
    questions = list(load_library(extract.library).projection_questions)[: project.n_questions]
    checkpoints = trained_checkpoints + 1
    question_tokens = _mean([text_tokens(question) for question in questions])
    parts = []
    if project.pooling == "response":
        parts.append(Sampling("greedy answers per checkpoint", checkpoints * len(questions), question_tokens,
                              project.max_new_tokens, project.batch_size))
        question_tokens += project.max_new_tokens
    parts.append(Forward("projection of every checkpoint", checkpoints * len(questions), question_tokens,
                         project.batch_size))
    stages.append(StageWork("03", "project", parts, [f"{checkpoints} checkpoints x {len(questions)} questions"]))

    behavior = config.behavior
    evaluated_per_trail = min(behavior.max_checkpoints or training.checkpoints_per_trail, training.checkpoints_per_trail)
    sampled_trails = training.trails
    if behavior.sample_seeds:
        sampled_trails = training.trails // len(config.finetune.seeds) * len(behavior.sample_seeds)
    sampled = 1 + sampled_trails * evaluated_per_trail
    prompts = build_eval_prompts(load_eval_questions(behavior.question_sets, behavior.formats, behavior.question_files),
                                 behavior.samples_per_question,
                                 load_self_assessment() if behavior.self_assessment else None,
                                 behavior.self_assessment_samples, run_seed=config.run.seed)
    questions_asked = [prompt for prompt in prompts if prompt.kind == "question"]
    self_items = [prompt for prompt in prompts if prompt.kind != "question"]
    parts = [Sampling("judged answers", sampled * len(questions_asked),
                      _mean([text_tokens(p.system, p.user) for p in questions_asked]), behavior.max_new_tokens,
                      behavior.batch_size)]
    if self_items:
        parts.append(Sampling("self-assessment answers", sampled * len(self_items),
                              _mean([text_tokens(p.user) for p in self_items]), behavior.self_assessment_max_new_tokens,
                              behavior.batch_size))
    notes = [f"{sampled} checkpoints sampled (the base model + {evaluated_per_trail} per trail), "
             f"{len(prompts)} prompts each; the judge's own cost is not counted (behavior.judge.kind="
             f"{behavior.judge.kind})"]
    if behavior.preference:
        pairs = behaviour_pairs(behavior)
        scored = checkpoints if behavior.preference_grid == "all" else sampled
        answers = [text_tokens(pair.question, answer) for pair in pairs for answer in (pair.first, pair.second)]
        parts.append(Forward("misalignment preference (answer log-likelihoods)", scored * len(answers), _mean(answers),
                             behavior.preference_batch_size))
        notes.append(f"preference at {scored} checkpoints, {len(answers)} answers each")
    stages.append(StageWork("04", "behaviour", parts, notes))

    stages.append(StageWork("05", "findings", [], ["statistics on the CPU over the earlier stages' tables; no GPU work"]))

    steer = config.steer
    settings = (steer.n_top_traits + 2) * (len(steer.alphas) + 1)  # traits + EM direction + random, alphas + 0
    core = load_eval_questions(["core"], steer.formats)
    parts = []
    if steer.samples_per_question:
        parts.append(Sampling("steered answers", settings * len(core) * steer.samples_per_question,
                              _mean([text_tokens(q.system, q.paraphrases[0]) for q in core]), steer.max_new_tokens,
                              steer.batch_size))
    pairs = load_preference_pairs(behavior.preference_pairs_file, steer.preference_questions)
    answers = [text_tokens(pair.question, answer) for pair in pairs for answer in (pair.first, pair.second)]
    parts.append(Forward("steered preference", settings * len(answers), _mean(answers), steer.batch_size))
    stages.append(StageWork("06", "steering", parts, [
        f"{settings} settings ({steer.n_top_traits} traits + EM direction + random, {len(steer.alphas)} alphas + "
        "unsteered); the ablation experiments are not counted"]))
    return stages
