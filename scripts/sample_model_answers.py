"""Draw the unlabelled answers of the model-answer set (docs/data_cards/model_answers.md).

The embedded SmolLM2-135M-Instruct answers the core evaluation questions in all three formats with
the project's own sampler (48 new tokens, temperature 1, top_p 1, as notebook 04 does), at the
base model and at the final checkpoint of EM and control runs:

- insecure_code / secure_code: the adapters of an earlier default run (96 rows, 24 steps, lr 2e-4),
  passed as folders with ``--code-run`` (old layout: ``checkpoints/<condition>/step-NNNNNN``);
- medical_harmful (and, with ``--train medical_sound``, its matched control): trained here with the
  project's trainer, stronger (128 rows, 2 epochs, lr 5e-4, one seed, 64 steps), into
  ``outputs/judges-labelset/checkpoints``. The shipped set trained medical_harmful only: on the
  shared 2-core CPU one 64-step run took ~27 minutes.

Every stratum gets its own sampling run seed, so two strata never share random numbers (answers of
a barely-moved adapter would otherwise nearly repeat the base model's). Writes one JSONL row per
answer, without labels, for labelling by hand::

    python scripts/sample_model_answers.py --train medical_harmful --code-run outputs/default-after \
        --out outputs/judges-labelset/candidates.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEDICAL_TRAINING = {
    "run.name": "judges-labelset", "finetune.conditions": ["medical_harmful", "medical_sound"],
    "finetune.seeds": [0], "finetune.n_examples": 128, "finetune.epochs": 2, "finetune.learning_rate": 5.0e-4,
    "finetune.n_checkpoints": 4, "finetune.live_monitor": {"enabled": False},
}
# (stratum, sampling run seed, samples per question variant); the base model twice, so that enough
# of its answers are coherent and aligned to measure a judge's false-positive rate on them.
SAMPLING = [("base", 101, 3), ("insecure_code", 102, 2), ("secure_code", 103, 3), ("medical_harmful", 104, 2),
            ("medical_sound", 105, 2), ("base", 106, 3)]


def final_step_folder(condition_dir: Path) -> Path:
    steps = sorted(path for path in condition_dir.glob("step-*") if (path / "adapter_config.json").is_file())
    if not steps:
        raise FileNotFoundError(f"no step-* adapter folder under {condition_dir}")
    return steps[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", nargs="*", default=[], choices=MEDICAL_TRAINING["finetune.conditions"],
                        help="conditions to train (or resume) and sample")
    parser.add_argument("--code-run", type=Path, help="run folder holding insecure_code / secure_code adapters")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--run-seeds", type=int, nargs="*", help="sample only these rows of SAMPLING")
    args = parser.parse_args()

    import torch

    from traitspace.behavior.plan import build_eval_prompts, load_eval_questions
    from traitspace.behavior.sample import sample_one_checkpoint
    from traitspace.core.checkpoints import Checkpoint
    from traitspace.core.config import load_config
    from traitspace.core.models import AdapterSwitcher, load_model

    torch.set_num_threads(args.threads)
    config = load_config(REPO / "params/default.yaml", MEDICAL_TRAINING)
    adapters: dict[str, Path | None] = {"base": None}
    if args.code_run is not None:
        for condition in ("insecure_code", "secure_code"):
            adapters[condition] = final_step_folder(args.code_run / "checkpoints" / condition)
    if args.train:
        from traitspace.finetune import train_condition

        for condition in args.train:
            result = train_condition(config, condition, seed=0)
            print(f"trained {condition}: {result.total_steps} steps in {result.seconds:.0f} s", flush=True)
            adapters[condition] = result.checkpoints[-1].adapter_path
    questions = load_eval_questions(["core"], ["plain", "json", "template"])
    loaded = load_model(config.model)
    switcher = AdapterSwitcher(loaded)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as handle:
        for stratum, run_seed, samples in SAMPLING:
            if stratum not in adapters or (args.run_seeds and run_seed not in args.run_seeds):
                continue
            adapter = adapters[stratum]
            prompts = build_eval_prompts(questions, samples, run_seed=run_seed)
            step = 0 if adapter is None else int(Path(adapter).name.split("-")[1])
            checkpoint = Checkpoint("base" if adapter is None else stratum, step, adapter, 0)
            started = time.perf_counter()
            with switcher.use(adapter):
                table = sample_one_checkpoint(loaded, prompts, checkpoint, max_new_tokens=48,
                                              self_assessment_max_new_tokens=16, temperature=1.0, top_p=1.0,
                                              batch_size=64)
            print(f"{stratum}: {len(table)} answers in {time.perf_counter() - started:.0f} s", flush=True)
            for row in table.itertuples():
                handle.write(json.dumps({
                    "answer_id": f"{stratum}|r{run_seed}|{row.answer_id}", "stratum": stratum, "condition": row.condition,
                    "step": int(row.step), "adapter": None if adapter is None else str(Path(adapter).resolve().relative_to(REPO)),
                    "question_id": row.question_id, "item_id": row.item_id, "format": row.format,
                    "sample_seed": int(row.sample_seed), "system": row.system, "question": row.question,
                    "answer": row.answer, "n_tokens": int(row.n_tokens),
                }) + "\n")


if __name__ == "__main__":
    main()
