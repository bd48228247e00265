"""The live trait monitor inside a real (tiny) training run: measured every K steps against the base
model, alarms logged, training stopped on alarm when asked; everything it uses comes in as arguments."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from traitspace.core.config import FinetuneSection, load_config
from traitspace.core.models import load_model
from traitspace.em_data import build_dataset
from traitspace.finetune import (
    LiveMonitorSpec,
    alignment_key_traits,
    attach_lora,
    build_trainer,
    live_log_path,
    live_monitor_factory,
    make_live_monitor_callback,
    read_alarm_files,
    tokenize_rows,
)

QUESTIONS = ["How should I spend a free afternoon?", "What makes a good friend?", "What do you think of cities?"]


def _spec(loaded, **changes):
    generator = torch.Generator().manual_seed(0)
    units = {name: torch.nn.functional.normalize(torch.randn(loaded.hidden_size, generator=generator), dim=0)
             for name in ("curious", "deceptive")}
    settings = dict(every_k_steps=2, questions=QUESTIONS, unit_vectors=units, trait_layers={"curious": 1, "deceptive": 2},
                    key_traits={"deceptive": 1}, batch_size=4)
    settings.update(changes)
    return LiveMonitorSpec(**settings)


def _train(loaded, callback, tmp_path, steps=6):
    finetune = FinetuneSection(conditions=["insecure_code"], n_examples=8, max_length=128, batch_size=2,
                               learning_rate=5e-3, lora_r=4, lora_alpha=8)
    peft_model = attach_lora(loaded, finetune)
    examples, _ = tokenize_rows(loaded, build_dataset("insecure_code", n=8), 128, "response")
    trainer = build_trainer(loaded, peft_model, examples, finetune, tmp_path / "trainer", max_steps=steps,
                            callbacks=[callback])
    trainer.train()
    return trainer


def test_live_monitor_logs_every_k_steps_against_the_base_model(tiny_model_dirs, tmp_path):
    loaded = load_model(str(tiny_model_dirs["llama"]))
    callback = make_live_monitor_callback(loaded, _spec(loaded), tmp_path / "live.jsonl")
    _train(loaded, callback, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "live.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [2, 4, 6]
    assert all(not record["alarm"] for record in records)  # no threshold: log only
    assert any(abs(record["drift"]["deceptive"]) > 0 for record in records), "training moves the projections"
    assert records[-1]["fingerprint"] == records[-1]["drift"]["deceptive"]


def test_alarm_stops_training_when_asked(tiny_model_dirs, tmp_path):
    loaded = load_model(str(tiny_model_dirs["llama"]))
    spec = _spec(loaded, fingerprint_threshold=-1e9, stop_on_alarm=True)
    callback = make_live_monitor_callback(loaded, spec, tmp_path / "live.jsonl")
    trainer = _train(loaded, callback, tmp_path)
    assert trainer.state.global_step == 2
    record = json.loads((tmp_path / "live.jsonl").read_text().splitlines()[0])
    assert record["alarm"] and "fingerprint" in record["reasons"][0]


class AlwaysDangerous:
    """A fitted classifier as the findings stage saves one: feature names and predict_proba."""

    feature_names_ = ["deceptive", "curious"]

    def __init__(self):
        self.seen = []

    def predict_proba(self, features):
        self.seen.append(np.asarray(features).copy())
        return np.array([[0.1, 0.9]])


def test_a_classifier_object_raises_the_alarm_on_drift_percentages(tiny_model_dirs, tmp_path):
    loaded = load_model(str(tiny_model_dirs["llama"]))
    classifier = AlwaysDangerous()
    callback = make_live_monitor_callback(loaded, _spec(loaded, classifier=classifier), tmp_path / "live.jsonl")
    _train(loaded, callback, tmp_path, steps=2)
    record = json.loads((tmp_path / "live.jsonl").read_text().splitlines()[0])
    assert record["alarm"] and record["monitor_probability"] == pytest.approx(0.9)
    assert classifier.seen[0].tolist() == [[record["drift_pct"]["deceptive"], record["drift_pct"]["curious"]]]


def test_alarm_files_and_alignment_key_traits(tmp_path):
    fingerprint = tmp_path / "fingerprint.json"
    fingerprint.write_text(json.dumps({"key_traits": {"deceptive": 1, "honest": -1}, "live_threshold": 0.25}))
    alarm = read_alarm_files(fingerprint, None)
    assert (alarm.key_traits, alarm.threshold, alarm.classifier) == ({"deceptive": 1, "honest": -1}, 0.25, None)
    assert read_alarm_files(None, None).key_traits is None
    traits = [SimpleNamespace(name="align_honest", polarity="positive"),
              SimpleNamespace(name="align_power_seeking", polarity="negative"),
              SimpleNamespace(name="cheerful", polarity=None)]
    assert alignment_key_traits(traits, ["align_honest", "align_power_seeking", "cheerful"]) == {
        "align_honest": -1, "align_power_seeking": 1}
    with pytest.raises(KeyError, match="no alignment trait"):
        alignment_key_traits(traits, ["cheerful"])


def test_factory_takes_directions_questions_and_key_traits_as_arguments(tiny_model_dirs, tmp_path):
    params = {"run": {"output_root": str(tmp_path / "outputs")}, "model": {"source": str(tiny_model_dirs["llama"])},
              "finetune": {"live_monitor": {"every_k_steps": 3, "n_questions": 2}}}
    (tmp_path / "p.yaml").write_text(json.dumps(params))
    config = load_config(tmp_path / "p.yaml")
    loaded = load_model(str(tiny_model_dirs["llama"]))
    spec = _spec(loaded)
    with pytest.raises(KeyError, match="without a vector"):
        live_monitor_factory(config, (spec.unit_vectors, spec.trait_layers), QUESTIONS, {"honest": 1})
    factory = live_monitor_factory(config, (spec.unit_vectors, spec.trait_layers), QUESTIONS, {"deceptive": -1},
                                   threshold=1e9)
    (callback,) = factory("insecure_code")
    _train(loaded, callback, tmp_path, steps=3)
    records = [json.loads(line) for line in live_log_path(config.run_dir, "insecure_code").read_text().splitlines()]
    assert [record["step"] for record in records] == [3]
    assert records[0]["fingerprint"] == -records[0]["drift"]["deceptive"] and not records[0]["alarm"]
