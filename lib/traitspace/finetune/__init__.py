"""Stage 01, fine-tuning: LoRA / QLoRA on each condition (an EM dataset and its matched control),
leaving a log-spaced checkpoint trail, with an optional live trait monitor.

Outputs:

- ``<run>/checkpoints/<condition>/``: ``training_plan.json``, ``step-NNNNNN/`` (LoRA adapter,
  ``training_log.json``, ``trainer_state.json``), ``live_monitor.jsonl`` (when the monitor is on),
  ``manifest.json`` (layout: :mod:`traitspace.core.checkpoints`);
- ``<run>/01_finetune/``: ``dataset_samples.csv``, ``training_summary.csv``, ``losses.csv``,
  ``checkpoints.csv``, ``loss_curves.png``, ``live_monitor.png`` (when the monitor is on),
  ``manifest.json``.

Later stages read them only through :func:`load_outputs`.

Modules: :mod:`.data` (rows, params hash, tokens and labels), :mod:`.batching` (collator, sampler),
:mod:`.lora`, :mod:`.trainer` (Trainer, checkpoint trail, resume), :mod:`.live_monitor`,
:mod:`.tables` (what the notebook shows), :mod:`.outputs` (writing and loading the stage's files).
"""

from .batching import EpochSeededSampler, RightPaddingCollator, total_optimizer_steps
from .data import (
    IGNORE_INDEX,
    ChatTokenizer,
    TokenizationReport,
    condition_params_hash,
    condition_sources,
    end_of_turn_length,
    load_chat_tokenizer,
    load_condition_rows,
    mask_preview,
    special_token_ids,
    tokenize_rows,
    training_labels,
)
from .live_monitor import (
    AlarmFiles,
    LiveMonitorSpec,
    LiveRecord,
    alignment_key_traits,
    live_log_path,
    live_monitor_factory,
    make_live_monitor_callback,
    read_alarm_files,
    read_live_log,
)
from .lora import attach_lora, lora_config
from .outputs import (
    STAGE_DIRNAME,
    FinetuneOutputs,
    load_outputs,
    open_stage,
    stage_dir,
    stage_summary,
    write_figure,
    write_table,
)
from .tables import (
    checkpoint_table,
    condition_descriptions,
    dataset_preview,
    live_monitor_table,
    loss_table,
    plot_live_monitor,
    plot_losses,
    settings_table,
    smoothed_losses,
    training_summary,
)
from .trainer import (
    CheckpointsFromOtherParams,
    ConditionResult,
    build_trainer,
    loss_history,
    train_all,
    train_condition,
)
