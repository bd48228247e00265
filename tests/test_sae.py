"""Stage 09's SAE: the trainer recovers planted features and resumes exactly; SAE Lens folders round-trip;
the diff reads answer tokens only; the pure analysis and the monitor baseline's in-fold selection."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from traitspace.sae import SaeFormatError, SparseAutoencoder, TrainSettings, load_saelens, save_saelens, train_sae
from traitspace.sae import train as train_module
from traitspace.sae.activations import capture_tokens, response_spans
from traitspace.sae.analysis import changes_from_base, chance_abs_cosine, em_minus_control, top_features
from traitspace.sae.diff import feature_statistics, measure_checkpoint
from traitspace.sae.model import reconstruction_quality
from traitspace.sae.monitor import TopChangedFeatures, feature_matrix
from traitspace.sae.saelens_format import layer_of_hook


def planted_data(n: int = 6000, n_features: int = 32, dimension: int = 16, active: int = 2, seed: int = 1):
    """Vectors that are sparse sums of a planted unit dictionary ``[n_features, dimension]`` plus an offset."""
    generator = torch.Generator().manual_seed(seed)
    dictionary = torch.randn(n_features, dimension, generator=generator)
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    chosen = torch.rand(n, n_features, generator=generator).argsort(dim=1)[:, :active]
    coefficients = torch.zeros(n, n_features).scatter_(1, chosen, torch.rand(n, active, generator=generator) * 2 + 0.5)
    return coefficients @ dictionary + 0.01 * torch.randn(n, dimension, generator=generator) + 2.0, dictionary


def test_topk_sae_recovers_planted_sparse_features():
    data, dictionary = planted_data()
    result = train_sae(data, TrainSettings(d_sae=96, k=2, steps=600, batch_size=128, learning_rate=5e-3,
                                           dead_after_steps=10, seed=0))
    best = (dictionary @ result.sae.decoder_directions().T).max(dim=1).values
    assert (best > 0.9).float().mean() >= 0.9, best.sort().values
    quality = reconstruction_quality(result.sae, data)
    assert quality.variance_explained > 0.9 and quality.mean_l0 <= 2


def test_training_resumes_from_its_checkpoint_with_the_same_result(tmp_path, monkeypatch):
    data, _ = planted_data(n=600)
    settings = TrainSettings(d_sae=24, k=2, steps=20, batch_size=32, checkpoint_every=10, seed=3)
    uninterrupted = train_sae(data, settings)
    original_save, calls = train_module._save, []

    def save_then_crash(path, state):
        original_save(path, state)
        calls.append(state["step"])
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train_sae(data, settings, tmp_path / "checkpoint.pt")
    monkeypatch.setattr(train_module, "_save", original_save)
    assert calls == [10]
    resumed = train_sae(data, settings, tmp_path / "checkpoint.pt")
    assert resumed.resumed_from == 10 and len(resumed.losses) == 20
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        torch.testing.assert_close(getattr(resumed.sae, name), getattr(uninterrupted.sae, name))
    finished = train_sae(data, settings, tmp_path / "checkpoint.pt")
    assert finished.resumed_from == 20 and finished.seconds == 0
    # A checkpoint trained by another version of the training code is not resumed: it trains again.
    retrained = train_sae(data, settings, tmp_path / "checkpoint.pt", identity_extra={"code_version": 2})
    assert retrained.resumed_from == 0 and len(retrained.losses) == 20


@pytest.mark.parametrize("activation", ["topk", "relu", "jumprelu"])
def test_saelens_folder_round_trips(tmp_path, activation):
    sae = SparseAutoencoder(12, 40, k=5 if activation == "topk" else None, activation=activation, seed=2)
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_()
        if activation == "jumprelu":
            sae.threshold.uniform_(0, 0.5)
    save_saelens(sae, tmp_path / "sae", layer=3, model_name="tiny")
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["meta"]["hook_name"] == "blocks.3.hook_resid_post" and cfg["d_sae"] == 40
    loaded, layer, _ = load_saelens(tmp_path / "sae")
    assert layer == 3 and loaded.activation == activation and loaded.k == sae.k
    x = torch.randn(7, 12)
    torch.testing.assert_close(loaded.encode(x), sae.encode(x))
    torch.testing.assert_close(loaded(x), sae(x))


def test_saelens_folder_of_an_earlier_release_and_its_errors(tmp_path):
    sae = SparseAutoencoder(8, 16, k=4, seed=0)
    save_saelens(sae, tmp_path / "sae", layer=5)
    legacy = {"d_in": 8, "d_sae": 16, "hook_name": "blocks.5.hook_resid_pre", "hook_layer": 5,
              "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 4}, "apply_b_dec_to_input": True}
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(legacy))
    loaded, layer, _ = load_saelens(tmp_path / "sae")
    assert layer == 4 and loaded.activation == "topk" and loaded.k == 4   # resid_pre of block 5 = output of block 4
    assert layer_of_hook("model.layers.7") == 7
    with pytest.raises(SaeFormatError, match="not a residual-stream hook"):
        layer_of_hook("blocks.2.hook_mlp_out")
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps({**legacy, "normalize_activations": "expected_average_only_in"}))
    with pytest.raises(SaeFormatError, match="normalize_activations"):
        load_saelens(tmp_path / "sae")
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps({**legacy, "d_sae": 17}))
    with pytest.raises(SaeFormatError, match="W_enc has shape"):
        load_saelens(tmp_path / "sae")


def test_diff_reads_answer_tokens_only_and_matches_the_hidden_states(tiny_llama):
    loaded = tiny_llama
    conversations = [loaded.chat.conversation("Name a colour.", assistant="Blue, like the sea."),
                     loaded.chat.conversation("Say hi to me please, friend.", system="Be brief.", assistant="Hi!")]
    chats = [loaded.chat.tokenize(messages) for messages in conversations]
    spans = response_spans(chats)
    for chat, (start, end), messages in zip(chats, spans, conversations):
        assert end < len(chat.input_ids)  # the end-of-turn marker follows the answer and is not read
        assert loaded.tokenizer.decode(chat.input_ids[start:end]).strip() == messages[-1]["content"]
    layer = 1
    vectors, owner = capture_tokens(loaded, chats, spans, layer, batch_size=2)
    assert len(vectors) == sum(end - start for start, end in spans)
    for index, (chat, (start, end)) in enumerate(zip(chats, spans)):
        with torch.inference_mode():
            hidden = loaded.model(torch.tensor([chat.input_ids]), output_hidden_states=True).hidden_states[layer + 1][0]
        torch.testing.assert_close(vectors[torch.from_numpy(owner == index)], hidden[start:end].float(), atol=1e-4, rtol=1e-4)
    sae = SparseAutoencoder(loaded.hidden_size, 32, k=4, seed=0)
    measured = measure_checkpoint(loaded, sae, layer, conversations, batch_size=2)
    assert measured.quality["n_vectors"] == len(vectors)
    assert measured.per_answer_mean.shape == (2, 32)


def test_feature_statistics_per_token_and_per_answer():
    sae = SparseAutoencoder(2, 2, activation="relu", apply_b_dec_to_input=False)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(2))
        sae.b_enc.zero_()
    vectors = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    table, per_mean, per_max = feature_statistics(sae, vectors, np.array([0, 0, 1]), 2)
    assert table["mean_activation"].tolist() == pytest.approx([4 / 3, 2 / 3])
    assert table["frequency"].tolist() == pytest.approx([2 / 3, 1 / 3])
    torch.testing.assert_close(per_mean, torch.tensor([[2.0, 0.0], [0.0, 2.0]]))
    torch.testing.assert_close(per_max, torch.tensor([[3.0, 0.0], [0.0, 2.0]]))


def _stats(effect: float, n_features: int = 6, seeds=(0, 1, 2)) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"condition": "base", "seed": -1, "step": 0, "feature": f, "mean_activation": 1.0, "frequency": 0.1}
            for f in range(n_features)]
    for condition in ("em", "control"):
        for seed in seeds:
            for step in (5, 10):
                for feature in range(n_features):
                    shift = effect if (condition == "em" and feature == 4 and step == 10) else 0.0
                    rows.append({"condition": condition, "seed": seed, "step": step, "feature": feature,
                                 "mean_activation": 1.0 + shift + 0.01 * rng.standard_normal(),
                                 "frequency": 0.1 + 0.001 * rng.standard_normal()})
    return pd.DataFrame(rows)


def test_em_minus_control_finds_the_planted_feature_across_seeds():
    tested = em_minus_control(changes_from_base(_stats(0.5)), "em", "control")
    top = top_features(tested, 2)
    assert top["feature"].iloc[0] == 4 and top["sign"].iloc[0] == 1 and bool(top["significant"].iloc[0])
    assert top["ci_low"].iloc[0] > 0.4 and top["n_em_seeds"].iloc[0] == 3
    one_seed = em_minus_control(changes_from_base(_stats(0.5, seeds=(0,))), "em", "control")
    assert one_seed["feature"].iloc[0] == 4 and one_seed["p_value"].isna().all()
    assert 0.05 < chance_abs_cosine(576) < 0.1


def test_monitor_features_are_chosen_inside_the_fold_and_rows_must_exist():
    X = np.array([[0.0, 5.0, 1.0], [0.0, -5.0, 1.0], [9.0, 0.0, 0.0]])
    step = TopChangedFeatures(k=1).fit(X[:2])
    assert step.columns_.tolist() == [1] and step.transform(X).shape == (3, 1)
    changes = changes_from_base(_stats(0.5))
    groups = pd.DataFrame({"dataset": ["em", "control"], "seed": [0, 1], "step": [10, 10]})
    assert feature_matrix(changes, groups).shape == (2, 6)
    with pytest.raises(ValueError, match="no SAE features for monitor row"):
        feature_matrix(changes, groups.assign(step=[10, 99]))


def test_a_published_sae_is_used_instead_of_training(tmp_path, tiny_llama):
    from traitspace.core.config import ConfigError, load_config
    from traitspace.sae.stage import _get_sae

    published = SparseAutoencoder(tiny_llama.hidden_size, 24, k=3, seed=5)
    save_saelens(published, tmp_path / "published", layer=1)
    config = load_config("params/smoke.yaml", {"sae.published": str(tmp_path / "published")})
    sae, layer, quality, record = _get_sae(config, tiny_llama, tmp_path / "stage", "traits", None, None, None)
    assert layer == 1 and quality == [] and record["source"] == str(tmp_path / "published")
    torch.testing.assert_close(sae.W_dec, published.W_dec)
    assert not (tmp_path / "stage").exists()  # nothing captured, nothing trained
    wrong = SparseAutoencoder(tiny_llama.hidden_size + 1, 24, k=3)
    save_saelens(wrong, tmp_path / "wrong", layer=1)
    with pytest.raises(ValueError, match="the model has"):
        _get_sae(load_config("params/smoke.yaml", {"sae.published": str(tmp_path / "wrong")}), tiny_llama,
                 tmp_path / "stage", "traits", None, None, None)
    with pytest.raises(ConfigError, match="sae.published"):
        load_config("params/smoke.yaml", {"sae.published": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="sae.steps"):
        load_config("params/smoke.yaml", {"sae.steps": 0})


def test_diff_reads_every_seed_and_step_on_base_answers_and_only_sampled_ones_on_own_answers(tmp_path):
    """On the base model's answers only the weights differ, so every trail's checkpoints are diffed (the
    seed-level test and the monitor's rows need them); on own answers, only those notebook 04 sampled."""
    from traitspace.core.checkpoints import Checkpoint
    from traitspace.sae.stage import diffed_checkpoints

    trails = {(condition, seed): [Checkpoint(condition, 0, None, seed)]
              + [Checkpoint(condition, step, tmp_path / f"{condition}-{seed}-{step}", seed) for step in (2, 4)]
              for condition in ("em", "control", "other") for seed in (0, 1)}
    answers = pd.DataFrame({"condition": ["base", "em", "control"], "seed": [-1, 0, 0], "step": [0, 4, 4]})

    on_base = diffed_checkpoints(trails, answers, ["em", "control"], "base")
    assert [(c.condition, c.seed, c.step) for c in on_base] == [
        (condition, seed, step) for condition in ("control", "em") for seed in (0, 1) for step in (2, 4)]
    on_own = diffed_checkpoints(trails, answers, ["em", "control"], "own")
    assert [(c.condition, c.seed, c.step) for c in on_own] == [("control", 0, 4), ("em", 0, 4)]
