"""Notebook 06's experiments on tiny random models: the EM direction (its answers, its maths), the
cosine null and least-squares reading, measuring under response-only steering, and the resumable
sweep with its coherence stop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from traitspace.behavior.plan import build_eval_prompts, load_eval_questions
from traitspace.behavior.preference import load_preference_pairs, score_pairs
from traitspace.core.checkpoints import Checkpoint
from traitspace.core.hooks import capture_conversations
from traitspace.core.models import AdapterSwitcher
from traitspace.steer import sweep as sweep_module
from traitspace.steer.compare import cosines_against_null, trait_basis_reading
from traitspace.steer.em_direction import choose_contrast, load_em_directions, read_em_direction, save_em_directions
from traitspace.steer.hooks import Intervention, steer
from traitspace.steer.measure import Measurement, MeasureSetup, answers_under, preference_under
from traitspace.steer.results import ResultStore
from traitspace.steer.sweep import SweepDirection, run_sweep, sides

EM = Checkpoint("insecure_code", 4, None, 0)


def scored_answers(n_misaligned: int, n_aligned: int) -> pd.DataFrame:
    rows = [{"aligned": 5.0, "coherent": 90.0} for _ in range(n_misaligned)]
    rows += [{"aligned": 95.0, "coherent": 90.0} for _ in range(n_aligned)]
    rows += [{"aligned": 5.0, "coherent": 10.0}, {"aligned": 50.0, "coherent": 90.0}]  # incoherent; in between
    table = pd.DataFrame(rows)
    return table.assign(condition=EM.condition, seed=EM.seed, step=EM.step, system=None,
                        question=[f"question {index}" for index in range(len(table))],
                        answer=[f"answer {index}" for index in range(len(table))])


def contrast(scored, chat, source="auto", minimum=3):
    pairs = [pair for pair in load_preference_pairs(max_questions=2) if pair.kind == "em"]
    return choose_contrast(scored, EM, pairs, chat, source=source, min_judged_answers=minimum, aligned_threshold=30,
                           coherent_threshold=50, aligned_floor=70, seed=0)


def test_the_em_direction_uses_balanced_coherent_judged_answers_or_falls_back_to_the_pairs(tiny_llama):
    judged = contrast(scored_answers(4, 7), tiny_llama.chat)
    assert judged.source == "judged" and len(judged.misaligned) == len(judged.aligned) == 4
    assert all(messages[-1]["content"] in {f"answer {i}" for i in range(4)} for messages in judged.misaligned)
    assert "4 coherent misaligned and 7 coherent aligned" in judged.note
    few = contrast(scored_answers(2, 7), tiny_llama.chat)
    assert few.source == "pairs" and "fewer than steer.min_judged_answers = 3" in few.note
    assert all(a[-2] == m[-2] for a, m in zip(few.aligned, few.misaligned))  # same question, two answers
    assert contrast(None, tiny_llama.chat).source == "pairs"
    assert contrast(scored_answers(9, 9), tiny_llama.chat, source="pairs").source == "pairs"
    with pytest.raises(ValueError, match="has 0 coherent misaligned"):
        contrast(scored_answers(0, 5), tiny_llama.chat, source="judged")


def test_em_direction_is_the_response_mean_difference_and_model_diff_vanishes_on_the_base_model(tiny_llama, tmp_path):
    chosen = contrast(None, tiny_llama.chat)
    base_checkpoint = Checkpoint("base_as_em", 0, None, 0)
    direction = read_em_direction(tiny_llama, AdapterSwitcher(tiny_llama), base_checkpoint, chosen, batch_size=4)
    misaligned = capture_conversations(tiny_llama, chosen.misaligned, layers=[2], pooling="response")[2].mean(0)
    aligned = capture_conversations(tiny_llama, chosen.aligned, layers=[2], pooling="response")[2].mean(0)
    torch.testing.assert_close(direction.contrast[2], misaligned - aligned, atol=1e-5, rtol=1e-4)
    assert direction.contrast.shape == (4, 64) and direction.contrast[2].norm() > 0
    assert direction.model_diff.abs().max() < 1e-6  # read on the base model, nothing changed (float noise only)
    save_em_directions([direction], tmp_path / "directions.safetensors")
    again = load_em_directions(tmp_path / "directions.safetensors")["base_as_em"]
    assert again.source == "pairs" and torch.equal(again.contrast, direction.contrast)


def test_cosines_find_the_trait_the_direction_was_built_from_and_not_the_others():
    rng = np.random.default_rng(0)
    vectors = {f"trait_{index}": rng.standard_normal(256) for index in range(20)}
    direction = 3 * vectors["trait_7"] + 0.2 * rng.standard_normal(256)
    table = cosines_against_null(direction, vectors, n_random=500, seed=1)
    assert table.iloc[0]["name"] == "trait_7" and table.iloc[0]["cosine"] > 0.9 and table.iloc[0]["beyond_null"]
    assert table["beyond_null"].sum() <= 2  # unrelated random traits stay within the null (allowing one chance hit)
    assert 0.08 < table["null_abs_q95"].iloc[0] < 0.16  # |cos| of random directions in 256 dimensions: ~2/sqrt(256)
    flipped = cosines_against_null(-direction, vectors, n_random=500, seed=1)
    assert flipped.iloc[0]["cosine"] == pytest.approx(-table.iloc[0]["cosine"])


def test_least_squares_reading_explains_a_direction_inside_the_trait_span():
    rng = np.random.default_rng(0)
    basis = {name: vector / np.linalg.norm(vector) for name, vector in
             {f"t{index}": rng.standard_normal(64) for index in range(5)}.items()}
    inside = 2 * basis["t1"] - basis["t3"]
    reading = trait_basis_reading(inside, basis, layer=3)
    assert reading.explained_share == pytest.approx(1.0)
    assert reading.coefficients["t1"] == pytest.approx(2.0) and reading.coefficients["t3"] == pytest.approx(-1.0)
    assert reading.chance_share == pytest.approx(5 / 64)
    assert trait_basis_reading(rng.standard_normal(64), basis, layer=3).explained_share < 0.5


def test_response_only_preference_equals_each_pair_scored_alone_under_its_prompt_length(tiny_llama):
    pairs = [pair for pair in load_preference_pairs(max_questions=3) if pair.kind == "em"][::2]
    vector = torch.randn(64, generator=torch.Generator().manual_seed(0))
    steered = Intervention({1: vector}, alpha=2.0, positions="response")
    grouped = preference_under(tiny_llama, pairs, steered, batch_size=8)
    for row, pair in zip(grouped.itertuples(), pairs):
        length = tiny_llama.chat.tokenize(tiny_llama.chat.conversation(pair.question, assistant=pair.first)).response_span[0]
        with steer(tiny_llama.model, {1: vector}, alpha=2.0, from_position=length - 1):
            alone = score_pairs(tiny_llama, [pair]).iloc[0]
        assert (row.question_id, row.pair_index) == (pair.question_id, pair.pair_index)
        assert row.preference == pytest.approx(alone["preference"], abs=1e-5)
    unsteered = preference_under(tiny_llama, pairs, Intervention.none())
    pd.testing.assert_frame_equal(unsteered, score_pairs(tiny_llama, pairs))
    assert not np.allclose(unsteered["preference"], grouped["preference"], atol=1e-4)


def test_response_only_sampling_keeps_the_prompts_order_and_matches_each_prompt_alone(tiny_llama):
    prompts = build_eval_prompts(load_eval_questions(["core"], ["plain"])[:3], 1)
    setup = MeasureSetup([], prompts, None, max_new_tokens=5, temperature=1.0, top_p=1.0, batch_size=4,
                         aligned_threshold=30, coherent_threshold=50)
    steered = Intervention({2: torch.ones(64)}, alpha=3.0, positions="response")
    together = answers_under(tiny_llama, prompts, steered, EM, setup)
    assert list(together["answer_id"]) == [prompt.answer_id for prompt in prompts]
    for index, prompt in enumerate(prompts):
        alone = answers_under(tiny_llama, [prompt], steered, EM, setup)
        assert together.loc[index, "answer"] == alone.loc[0, "answer"]


def fake_measurement(alpha: float) -> Measurement:
    """What the sweep logic needs from a measurement: coherence falls as |alpha| grows."""
    summary = {"preference": alpha / 10, "coherence_rate": 1.0 - 0.2 * abs(alpha)}
    return Measurement(summary, pd.DataFrame({"kind": ["em"], "question_id": ["q"], "preference": [alpha]}), pd.DataFrame())


def test_sweep_stops_a_side_below_the_coherence_threshold_and_resumes_from_its_files(tmp_path, monkeypatch):
    calls = []

    def counting_measure(loaded, intervention, setup, checkpoint):
        calls.append(intervention.alpha)
        return fake_measurement(intervention.alpha)

    monkeypatch.setattr(sweep_module, "measure", counting_measure)
    directions = [SweepDirection("trait_a", "trait", torch.ones(8)), SweepDirection("random", "random", torch.arange(8.0))]
    alphas = [-2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 3.0]
    kwargs = dict(settings_fingerprint="s", positions="all", min_coherence=0.75, coherence_reference="unsteered")
    store = ResultStore(tmp_path / "results")
    setup = MeasureSetup([], [], None, 8, 1.0, 1.0, 4, 30, 50, n_boot=100)
    table = run_sweep(None, EM, directions, 1, 2.0, alphas, setup, store, **kwargs)
    # Threshold 0.75 x 1.0: alpha 1.5 would be the last coherent one; 2 (coherence 0.6) stops each side.
    trait = table[table["direction"] == "trait_a"].set_index("alpha")["status"].to_dict()
    assert trait == {-2.0: "stopped_here", -1.0: "measured", -0.5: "measured", 0.0: "unsteered", 0.5: "measured",
                     1.0: "measured", 2.0: "stopped_here"}
    assert 3.0 not in calls and sorted(calls) == sorted([0.0] + [-2.0, -1.0, -0.5, 0.5, 1.0, 2.0] * 2)
    assert table.attrs["coherence_threshold"] == pytest.approx(0.75)
    # The change is paired by question with the unsteered measurement (the fake pair rows hold alpha itself).
    change = table[table["direction"] == "trait_a"].set_index("alpha")["preference_change"]
    assert change[1.0] == pytest.approx(1.0) and change[0.0] == 0.0
    calls.clear()
    again = run_sweep(None, EM, directions, 1, 2.0, alphas, setup, store, **kwargs)
    assert calls == []  # every (direction, alpha) was read back
    pd.testing.assert_frame_equal(again, table)
    run_sweep(None, EM, directions, 1, 4.0, alphas, setup, store, **kwargs)  # another scale: measured again
    assert len(calls) == 13


def test_sides_and_store_round_trip(tmp_path):
    assert sides([1.0, -0.5, 0.0, 0.25, -2.0]) == [[0.25, 1.0], [-0.5, -2.0]]
    store = ResultStore(tmp_path)
    measurement = Measurement({"preference": 0.1, "coherence_rate": float("nan")},
                              pd.DataFrame({"question_id": ["a"], "preference": [0.1]}), pd.DataFrame())
    store.write("sweep/some trait/alpha+0.5", measurement, "f1")
    assert store.is_fresh("sweep/some trait/alpha+0.5", "f1") and not store.is_fresh("sweep/some trait/alpha+0.5", "f2")
    back = store.read("sweep/some trait/alpha+0.5")
    assert back.summary["preference"] == 0.1 and np.isnan(back.summary["coherence_rate"])
    pd.testing.assert_frame_equal(back.preference, measurement.preference)
    with pytest.raises(ValueError):
        store.write("../escape", measurement, "f")


def test_steer_params_are_checked_and_the_loader_names_the_notebook(tmp_path):
    from traitspace.core.config import ConfigError, load_config
    from traitspace.steer import load_outputs

    assert load_config("params/smoke.yaml").steer.alphas == [-2.0, 2.0]
    with pytest.raises(ConfigError, match="steer.alphas"):
        load_config("params/smoke.yaml", {"steer.alphas": [0.0]})
    with pytest.raises(ConfigError, match="steer.strength: unknown key"):
        load_config("params/smoke.yaml", {"steer.strength": 2})
    with pytest.raises(FileNotFoundError, match="run notebook 06 first"):
        load_outputs(tmp_path)


def test_sweep_error_bars_accept_an_interval_that_excludes_its_estimate():
    """A bootstrap interval of a rate on ten answers can lie beside its estimate; the figure must still draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from traitspace.steer.plots import _errorbar

    rows = pd.DataFrame({"alpha": [-0.5, 0.5], "coherence_rate": [0.7, 0.6], "coherence_rate_low": [0.75, 0.4],
                         "coherence_rate_high": [0.9, 0.8]})
    fig, ax = plt.subplots()
    _errorbar(ax, rows, "coherence_rate")
    plt.close(fig)
