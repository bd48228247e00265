"""A trait-drift monitor that runs *during* fine-tuning.

Every K optimizer steps the callback projects the model being trained onto the trait directions with
the projection questions (one batched capture, no LM head, early exit after the deepest needed
layer; :func:`traitspace.core.traits.project_at_layers`, the one projection), logs the drift profile
(projection minus the base model's, raw and as a percentage of the base activation norm) and a
fingerprint (:func:`traitspace.core.trajectory.fingerprint_of` over the key traits, in the raw units of
the findings stage's ``fingerprint.json`` threshold), and raises an alarm when the fingerprint
crosses its threshold or a fitted classifier calls the checkpoint dangerous. An alarm is logged and
can stop training.

Everything the monitor needs is an argument: the directions, the questions, the key traits with
their signs, the threshold and the classifier. It never extracts vectors and never reads another
stage's run folder; the caller (notebook 01) decides where they come from.
:func:`read_alarm_files` reads the fingerprint and monitor files named in the params.

The base model's projections (step 0) are measured once with the adapter disabled, so drift is
always against the untouched model, also after a resume.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..core.artifacts import atomic_write_text
from ..core.checkpoints import trail_dir
from ..core.hooks import capture_pooled
from ..core.io import read_jsonl
from ..core.traits import project_at_layers
from ..core.trajectory import fingerprint_of

LIVE_LOG_FILE = "live_monitor.jsonl"


@dataclass
class LiveMonitorSpec:
    every_k_steps: int
    questions: Sequence[str]
    unit_vectors: dict[str, torch.Tensor]      # trait -> unit direction [hidden] at its layer
    trait_layers: dict[str, int]
    key_traits: dict[str, int]                 # trait -> sign (+1: moving towards it is the EM direction)
    fingerprint_threshold: float | None = None  # raw projection units; None: log only
    classifier: Any = None                     # fitted pipeline with feature_names_ (drift % per trait) and predict_proba
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


@dataclass
class AlarmFiles:
    """What the params' ``fingerprint_file`` and ``monitor_file`` hold (None where not given)."""

    key_traits: dict[str, int] | None = None
    threshold: float | None = None
    classifier: Any = None


def read_alarm_files(fingerprint_file: str | Path | None, monitor_file: str | Path | None) -> AlarmFiles:
    """Key traits, signs and live threshold from a fingerprint JSON (``key_traits``: trait -> sign,
    ``live_threshold``), and the fitted classifier from a joblib file; either path may be None."""
    alarm = AlarmFiles()
    if fingerprint_file:
        fingerprint = json.loads(Path(fingerprint_file).read_text())
        alarm.key_traits = {trait: int(sign) for trait, sign in fingerprint["key_traits"].items()}
        alarm.threshold = float(fingerprint["live_threshold"])
    if monitor_file:
        import joblib

        alarm.classifier = joblib.load(monitor_file)
    return alarm


def alignment_key_traits(traits: Iterable, names: Sequence[str]) -> dict[str, int]:
    """The alignment traits among ``names``, signed so that drifting towards a negative-polarity trait
    (power-seeking, sycophancy, deception) or away from a positive one (honesty, helpfulness,
    harmlessness, corrigibility) counts as positive. ``traits``: library entries (``name``, ``polarity``)."""
    available = set(names)
    key_traits = {trait.name: (1 if trait.polarity == "negative" else -1)
                  for trait in traits if trait.polarity is not None and trait.name in available}
    if not key_traits:
        raise KeyError("finetune.live_monitor: no fingerprint_file given and no alignment trait was extracted "
                       "(extract.include_alignment or extract.traits)")
    return key_traits


def live_log_path(run_dir: str | Path, condition: str, seed: int = 0) -> Path:
    """Where a trail's live-monitor records are written (beside its checkpoints)."""
    return trail_dir(run_dir, condition, seed) / LIVE_LOG_FILE


def make_live_monitor_callback(loaded, spec: LiveMonitorSpec, log_path: str | Path):
    """A transformers TrainerCallback for ``spec``; records are rewritten atomically to ``log_path``
    (JSON lines) after every measurement. ``loaded`` needs ``chat`` and ``tokenizer`` only."""
    from transformers import TrainerCallback

    chats = [loaded.chat.tokenize(loaded.chat.conversation(question)) for question in spec.questions]
    names = list(spec.unit_vectors)
    layers = sorted({spec.trait_layers[name] for name in names})
    directions = {name: spec.unit_vectors[name].float() for name in names}
    classifier = spec.classifier
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
        _, values, norms = project_at_layers(activations, directions, spec.trait_layers)
        projections = dict(zip(names, values.mean(axis=0).tolist()))
        mean_norms = dict(zip(names, norms.mean(axis=0).tolist()))
        return projections, mean_norms

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


def _directions(vectors) -> tuple[dict[str, torch.Tensor], dict[str, int], str | None]:
    """``(unit vectors, layers, pooling or None)`` from a ``TraitVectors`` or a pair of mappings."""
    if hasattr(vectors, "unit") and hasattr(vectors, "layer_of"):
        units = {name: vectors.unit(name).float() for name in vectors.names}
        return units, {name: vectors.layer_of(name) for name in vectors.names}, vectors.info.get("pooling")
    units, layers = vectors
    return {name: torch.as_tensor(unit).float() for name, unit in units.items()}, dict(layers), None


def live_monitor_factory(
    config,
    vectors,
    questions: Sequence[str],
    key_traits: Mapping[str, int],
    threshold: float | None = None,
    classifier: Any = None,
) -> Callable[[str, int], list]:
    """``callback_factory`` for :func:`traitspace.finetune.train_all`: one live monitor per trail,
    logging to :func:`live_log_path`.

    ``vectors`` is a ``TraitVectors`` (its pooling is used) or ``(unit_vectors, trait_layers)``;
    ``questions`` are cut to ``finetune.live_monitor.n_questions``; ``key_traits`` (trait -> sign)
    and ``threshold`` define the fingerprint alarm (None: log only), ``classifier`` the monitor alarm.
    K, stopping on alarm and the capture batch size come from ``config``.
    """
    from .data import load_chat_tokenizer

    settings = config.finetune.live_monitor
    unit_vectors, trait_layers, pooling = _directions(vectors)
    missing = sorted(set(key_traits) - set(unit_vectors))
    if missing:
        raise KeyError(f"finetune.live_monitor: key traits without a vector in this run: {missing}")
    spec = LiveMonitorSpec(
        every_k_steps=settings.every_k_steps,
        questions=list(questions[: settings.n_questions]),
        unit_vectors=unit_vectors,
        trait_layers=trait_layers,
        key_traits=dict(key_traits),
        fingerprint_threshold=threshold,
        classifier=classifier,
        stop_on_alarm=settings.stop_on_alarm,
        pooling=pooling or "last_prompt",
        batch_size=config.capture.batch_size,
    )
    chat_tokenizer = load_chat_tokenizer(config.model)

    def factory(condition: str, seed: int = 0):
        return [make_live_monitor_callback(chat_tokenizer, spec, live_log_path(config.run_dir, condition, seed))]

    return factory


def read_live_log(path: str | Path):
    """The live monitor's records as a DataFrame (step, fingerprint, alarm, drift.<trait> ...); empty
    when the monitor never wrote (it was off, or the condition trained before it was enabled)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        return pd.DataFrame()
    return pd.json_normalize(read_jsonl(path))
