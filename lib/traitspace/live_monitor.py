"""A trait-drift monitor that runs *during* fine-tuning.

Every K optimizer steps the callback projects the model being trained onto the trait vectors with
the projection questions (one batched capture, no LM head, early exit after the deepest needed
layer), logs the drift profile (projection minus the base model's, raw and as a percentage of the
base activation norm) and a fingerprint (mean signed raw drift over key traits, the units of
notebook 05's ``fingerprint.json`` threshold), and raises an alarm when
the fingerprint crosses its threshold or a trained monitor (a scikit-learn pipeline saved by
notebook 05) calls the checkpoint dangerous. An alarm is logged and can stop training.

The base model's projections (step 0) are measured once with the adapter disabled, so drift is
always against the untouched model, also after a resume.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .core.artifacts import atomic_write_text
from .core.hooks import capture_pooled
from .core.trajectory import fingerprint_of


@dataclass
class LiveMonitorSpec:
    every_k_steps: int
    questions: Sequence[str]
    unit_vectors: dict[str, torch.Tensor]      # trait -> unit direction [hidden] at its layer
    trait_layers: dict[str, int]
    key_traits: dict[str, int]                 # trait -> sign (+1: moving towards it is the EM direction)
    fingerprint_threshold: float | None = None  # raw projection units; None: log only
    monitor_path: str | None = None            # joblib pipeline from notebook 05 (features: drift % per trait)
    stop_on_alarm: bool = False
    pooling: str = "last_prompt"
    batch_size: int = 16


@dataclass
class LiveRecord:
    step: int
    seconds: float
    fingerprint: float
    monitor_probability: float | None
    alarm: bool
    reasons: list[str]
    drift: dict[str, float] = field(default_factory=dict)
    drift_pct: dict[str, float] = field(default_factory=dict)


def make_live_monitor_callback(loaded, spec: LiveMonitorSpec, log_path: str | Path):
    """A transformers TrainerCallback for ``spec``; records are rewritten atomically to ``log_path``
    (JSON lines) after every measurement."""
    from transformers import TrainerCallback

    chats = [loaded.chat.tokenize(loaded.chat.conversation(question)) for question in spec.questions]
    names = list(spec.unit_vectors)
    layers = sorted({spec.trait_layers[name] for name in names})
    directions = {name: spec.unit_vectors[name].float() for name in names}
    classifier = None
    if spec.monitor_path:
        import joblib

        classifier = joblib.load(spec.monitor_path)
    log_path = Path(log_path)

    def measure(model) -> tuple[dict[str, float], dict[str, float]]:
        """Mean projection per trait and mean activation norm at each trait's layer."""
        was_training = model.training
        model.eval()
        try:
            activations = capture_pooled(model, chats, layers, pooling=spec.pooling, batch_size=spec.batch_size,
                                         pad_token_id=loaded.tokenizer.pad_token_id)
        finally:
            model.train(was_training)
        projections = {name: float((activations[spec.trait_layers[name]] @ directions[name]).mean()) for name in names}
        norms = {name: float(activations[spec.trait_layers[name]].norm(dim=1).mean()) for name in names}
        return projections, norms

    class LiveTraitMonitor(TrainerCallback):
        def __init__(self):
            self.base: dict[str, float] | None = None
            self.base_norms: dict[str, float] | None = None
            self.records: list[LiveRecord] = []
            self.base_seconds = 0.0

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            started = time.perf_counter()
            with model.disable_adapter():
                self.base, self.base_norms = measure(model)
            self.base_seconds = time.perf_counter() - started
            return control

        @property
        def measure_seconds(self) -> float:
            """Seconds spent measuring: the base measurement and every check (each rounded to 1 ms)."""
            return self.base_seconds + sum(record.seconds for record in self.records)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % spec.every_k_steps != 0:
                return control
            started = time.perf_counter()
            projections, _ = measure(model)
            drift = {name: projections[name] - self.base[name] for name in names}
            drift_pct = {name: 100.0 * drift[name] / self.base_norms[name] for name in names}
            fingerprint = fingerprint_of(drift, spec.key_traits)
            reasons = []
            if spec.fingerprint_threshold is not None and fingerprint > spec.fingerprint_threshold:
                reasons.append(f"fingerprint {fingerprint:.3f} > {spec.fingerprint_threshold:.3f}")
            probability = None
            if classifier is not None:
                features = np.array([[drift_pct[name] for name in classifier.feature_names_]])
                probability = float(classifier.predict_proba(features)[0, 1])
                if probability > 0.5:
                    reasons.append(f"monitor P(dangerous) = {probability:.2f}")
            seconds = time.perf_counter() - started
            record = LiveRecord(state.global_step, round(seconds, 3), fingerprint, probability, bool(reasons), reasons,
                                drift, drift_pct)
            self.records.append(record)
            atomic_write_text(log_path, "".join(json.dumps(vars(item)) + "\n" for item in self.records))
            if reasons:
                print(f"[live monitor] ALARM at step {state.global_step}: {'; '.join(reasons)}", flush=True)
                if spec.stop_on_alarm:
                    control.should_training_stop = True
            return control

    return LiveTraitMonitor()


def live_monitor_factory(config, progress: bool = True):
    """``callback_factory`` for :func:`traitspace.train.train_all` from ``finetune.live_monitor``,
    or None when the monitor is off.

    The trait vectors come from the base model (notebook 02's stage, cached: enabling the monitor
    runs the extraction during notebook 01, and notebook 02 then reads the cache). Key traits and
    threshold come from a fingerprint file of an earlier run's findings; without one, the seven
    alignment traits are logged (signed so that drifting towards power-seeking, sycophancy or
    deception, or away from honesty, helpfulness, harmlessness or corrigibility, counts as positive)
    and no alarm can fire.
    """
    import json

    from .core.checkpoints import condition_dir
    from .extract import run_extraction
    from .train import load_chat_tokenizer
    from .trait_library import load_builtin_library

    settings = config.finetune.live_monitor
    if not settings.enabled:
        return None
    vectors = run_extraction(config, progress=progress)
    library = load_builtin_library()
    threshold = None
    if settings.fingerprint_file:
        fingerprint = json.loads(Path(settings.fingerprint_file).read_text())
        key_traits = {trait: int(sign) for trait, sign in fingerprint["key_traits"].items()}
        threshold = float(fingerprint["live_threshold"])
    else:
        # The alignment traits this run extracted (extract.traits may hold a subset).
        key_traits = {trait.name: (1 if trait.polarity == "negative" else -1)
                      for trait in library.all_traits if trait.polarity is not None and trait.name in vectors.names}
        if not key_traits:
            raise KeyError("finetune.live_monitor: no fingerprint_file given and no alignment trait was extracted "
                           "(extract.include_alignment or extract.traits)")
    missing = sorted(set(key_traits) - set(vectors.names))
    if missing:
        raise KeyError(f"finetune.live_monitor: key traits without a vector in this run: {missing}")
    spec = LiveMonitorSpec(
        every_k_steps=settings.every_k_steps,
        questions=list(library.projection_questions[: settings.n_questions]),
        unit_vectors={name: vectors.unit(name).float() for name in vectors.names},
        trait_layers={name: vectors.layer_of(name) for name in vectors.names},
        key_traits=key_traits,
        fingerprint_threshold=threshold,
        monitor_path=settings.monitor_file,
        stop_on_alarm=settings.stop_on_alarm,
        pooling=vectors.info.get("pooling", "last_prompt"),
        batch_size=config.capture.batch_size,
    )
    chat_tokenizer = load_chat_tokenizer(config.model)

    def factory(condition: str):
        return [make_live_monitor_callback(chat_tokenizer, spec,
                                           condition_dir(config.run_dir, condition) / "live_monitor.jsonl")]

    return factory


def read_live_log(path) -> "object":
    """The live monitor's records as a DataFrame (step, fingerprint, alarm, drift.<trait> ...)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        return pd.DataFrame()
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return pd.json_normalize(records)
