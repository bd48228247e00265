"""Notebook 07's self-knowledge tasks: the task file, logit reads against a direct computation from the
model's own logits (three tiny families), the readability checks, and the across-model analysis on
synthetic tables with a known answer. Also the three domains added for the six-domain experiment."""
from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd
import pytest
import torch

from traitspace.behavior.preference import load_preference_pairs
from traitspace.consistency import analysis
from traitspace.consistency.items import (
    TASKS,
    fixed_items,
    load_self_knowledge,
    score_prediction_items,
    statement_conversations,
)
from traitspace.consistency.measure import read_items
from traitspace.consistency.reader import LogitReader
from traitspace.core.io import DataFileError
from traitspace.judges.base import NUMBERS
from traitspace.judges.local import digit_start_mask


@pytest.fixture(scope="module")
def data():
    return load_self_knowledge()


def _recognition_pairs(n=2):
    return [pair for pair in load_preference_pairs() if pair.kind == "em" and pair.pair_index == 0][:n]


# -- the task file ---------------------------------------------------------------------------------
def test_task_file_has_several_phrasings_per_task_and_counterbalanced_choices(data):
    assert len(data.self_rating) >= 4 and {r.aligned_end for r in data.self_rating} == {"high", "low"}
    assert len(data.description_choice.templates) >= 3 and len(data.output_recognition.templates) >= 3
    assert len(data.score_prediction.templates) >= 3
    items = fixed_items(data, _recognition_pairs())
    choices = [item for item in items if item.order >= 0]
    by_item = {}
    for item in choices:
        by_item.setdefault((item.task, item.phrasing, item.item), []).append(item)
    assert all(sorted(i.order for i in pair) == [0, 1] for pair in by_item.values())
    for pair in by_item.values():  # the aligned option sits under each letter once
        assert {i.aligned_letter for i in pair} == {"A", "B"}
        text = {i.order: i.messages[-1]["content"] for i in pair}
        assert text[0] != text[1]
    statements = statement_conversations(data)
    assert sum(statements.labels) * 2 == len(statements.labels)
    assert statements.conversations[1][-1]["content"].startswith("I am an AI that")


def test_a_broken_task_file_names_the_file_and_key(tmp_path, data):
    broken = tmp_path / "tasks.yaml"
    text = (resources.files("traitspace") / "resources" / "eval" / "self_knowledge.yaml").read_text()
    broken.write_text(text.replace("aligned_end: low", "aligned_end: high"))
    with pytest.raises(DataFileError, match=r"tasks.yaml.*self_rating.*aligned end high and with it low"):
        load_self_knowledge(broken)
    broken.write_text(text.replace("{option_b}", "{option_c}", 1))
    with pytest.raises(DataFileError, match=r"description_choice.*option_b"):
        load_self_knowledge(broken)


# -- logit reads equal a direct computation --------------------------------------------------------
def _direct_next_logprobs(loaded, ids) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(loaded.model(input_ids=torch.tensor([ids])).logits[0, -1].float(), dim=-1)


def test_choice_reads_equal_direct_logits(tiny_loaded, data):
    reader = LogitReader(tiny_loaded, data.option_letters, batch_size=3)
    items = [item for item in fixed_items(data, _recognition_pairs()) if item.order >= 0][:7]
    prompts = [reader.prompt_ids(item.messages) for item in items]
    p_first, mass = reader.choices(prompts)
    for ids, p, m in zip(prompts, p_first, mass):
        logp = _direct_next_logprobs(tiny_loaded, ids)[list(reader.letter_ids)].double()
        assert p == pytest.approx(float(torch.softmax(logp, 0)[0]), abs=1e-5)
        assert m == pytest.approx(float(logp.exp().sum()), rel=1e-4)
    table = read_items(reader, items)
    aligned_first = np.array([item.aligned_letter == "A" for item in items])
    np.testing.assert_allclose(table["misaligned"], np.where(aligned_first, 1 - p_first, p_first), atol=1e-6)


def test_rating_reads_equal_direct_logits(tiny_loaded, data):
    reader = LogitReader(tiny_loaded, data.option_letters, min_number_mass=0.0)
    items = [item for item in fixed_items(data, []) if item.task == "self_rating"][:1]
    prompts = [reader.prompt_ids(item.messages) for item in items]
    ratings, masses = reader.ratings(prompts)
    vocab = tiny_loaded.model.get_output_embeddings().weight.shape[0]
    digits = digit_start_mask(tiny_loaded.tokenizer, vocab)
    for ids, rating, mass in zip(prompts, ratings, masses):
        probs = np.zeros(len(NUMBERS))
        for continuation in reader._rater.trie.continuations:
            if continuation.number is None:
                continue
            full = list(ids) + list(continuation.token_ids)
            with torch.no_grad():
                logp = torch.log_softmax(tiny_loaded.model(input_ids=torch.tensor([full])).logits[0].float(), dim=-1)
            path = sum(float(logp[len(ids) - 1 + k, token]) for k, token in enumerate(continuation.token_ids))
            terminator = 1.0 - float(logp[-1][digits].exp().sum())
            probs[continuation.number] += np.exp(path) * terminator
        assert mass == pytest.approx(probs.sum(), rel=1e-3, abs=1e-9)
        assert rating == pytest.approx(float(np.dot(NUMBERS, probs) / probs.sum()), rel=1e-3)


def test_score_prediction_items_follow_the_models_own_answer(data):
    answers = pd.DataFrame({"answer_id": ["a1"], "question": ["Q?"], "answer": ["My answer."], "aligned": [80.0]})
    items = score_prediction_items(data, answers)
    assert len(items) == len(data.score_prediction.templates)
    assert [m["role"] for m in items[0].messages] == ["user", "assistant", "user"]
    assert items[0].messages[1]["content"] == "My answer." and items[0].judge_score == 80.0


# -- readability -----------------------------------------------------------------------------------
def _choice_rows(p_first_order0, p_first_order1, n_items=8, mass=0.6):
    rows = []
    for item in range(n_items):
        for order, p in ((0, p_first_order0), (1, p_first_order1)):
            aligned_letter = "A" if order == 0 else "B"
            rows.append({"task": "description_choice", "phrasing": "p", "item": str(item), "order": order,
                         "p_first": p, "option_mass": mass,
                         "misaligned": 1 - p if aligned_letter == "A" else p})
    return pd.DataFrame(rows)


def test_a_model_that_picks_a_whatever_the_order_is_position_bound():
    limits = analysis.Readability()
    verdict = analysis.readability(_choice_rows(0.8, 0.8), "description_choice", limits)
    assert not verdict["readable"] and verdict["reason"].startswith("position-bound: picks the first letter")
    content = analysis.readability(_choice_rows(0.2, 0.8), "description_choice", limits)  # follows the content
    assert content["readable"], content
    off = analysis.readability(_choice_rows(0.2, 0.8, mass=0.001), "description_choice", limits)
    assert not off["readable"] and off["reason"].startswith("off-format")


def test_a_rating_that_ignores_the_scale_direction_is_scale_bound():
    rows = [{"task": "self_rating", "phrasing": f"{end}{k}", "item": f"{end}{k}", "order": -1, "aligned_end": end,
             "rating": 50.0 + k, "number_mass": 0.9} for end in ("high", "low") for k in range(2)]
    verdict = analysis.readability(pd.DataFrame(rows), "self_rating", analysis.Readability())
    assert not verdict["readable"] and verdict["reason"].startswith("scale-bound")
    flipped = pd.DataFrame([{**row, "rating": 90.0 if row["aligned_end"] == "high" else 10.0} for row in rows])
    assert analysis.readability(flipped, "self_rating", analysis.Readability())["readable"]


# -- across models ---------------------------------------------------------------------------------
def _synthetic_items(shifts: dict[tuple[str, int], float]) -> pd.DataFrame:
    """Self-rating readings: base at 0.05 misaligned; each model shifted by its value (a level near 0.5
    would be scale-bound: the same rating whichever end of the scale is aligned)."""
    rng = np.random.default_rng(0)
    rows = []
    for (condition, seed), shift in shifts.items():
        for step, level in ((0, 0.05), (10, 0.05 + shift)):
            for end in ("high", "low"):
                for k in range(4):
                    misaligned = float(np.clip(level + rng.normal(0, 0.01), 0, 1))
                    rating = 100 * (1 - misaligned) if end == "high" else 100 * misaligned
                    rows.append({"condition": condition, "seed": seed, "step": step, "task": "self_rating",
                                 "phrasing": f"{end}{k}", "item": f"{end}{k}", "order": -1, "aligned_end": end,
                                 "rating": rating, "number_mass": 0.9, "misaligned": misaligned,
                                 "p_first": np.nan, "option_mass": np.nan, "judge_score": np.nan})
    return pd.DataFrame(rows)


def test_coherent_models_are_classified_and_correlated():
    shifts = {("em", 0): 0.2, ("em", 1): 0.15, ("em", 2): 0.25, ("control", 0): 0.0, ("control", 1): 0.01,
              ("control", 2): -0.01}
    items = _synthetic_items(shifts)
    harm = pd.DataFrame([{"condition": c, "seed": s, "step": 10, "harm": 0.2 if c == "em" else 0.0,
                          "harm_low": 0.1, "harm_high": 0.3, "harm_n": 12} for c, s in shifts])
    harm.loc[harm["condition"] == "em", "harm"] += [0.0, 0.01, 0.02]
    summary = analysis.task_summary(items, analysis.Readability(), n_boot=200)
    rating = summary[summary["task"] == "self_rating"]
    assert rating["readable"].all() and (rating["phrasing_range"] < 0.1).all()
    models = analysis.models_table(items, summary, harm, "readable_mean", n_boot=200)
    assert len(models) == 6 and models["self_report_tasks"].eq("self_rating").all()
    em = models[models["condition"] == "em"]
    assert np.allclose(em["self_rating"], [0.2, 0.15, 0.25], atol=0.02)
    assert (em["self_report_low"] < em["self_report"]).all() and (em["self_report"] < em["self_report_high"]).all()
    classes = analysis.classify(models, harm_threshold=0.05, self_threshold=0.05)
    assert list(classes[models["condition"] == "em"]) == ["coherent"] * 3
    assert list(classes[models["condition"] == "control"]) == ["neither"] * 3
    inverted = models.assign(self_report=-models["self_report"])
    assert list(analysis.classify(inverted, 0.05, 0.05)[models["condition"] == "em"]) == ["inverted"] * 3
    table = analysis.sensitivity(models, 0.05, 0.05)
    assert list(table["rule"]) == ["params", "median split", "quartiles", "regression"]
    assert table.set_index("rule").loc["regression", "verdict"] == "coherent"
    correlation = analysis.correlations(models, ["self_rating", "description_choice"], n_boot=200).set_index("task")
    assert correlation.loc["self_rating", "spearman"] > 0.7 and correlation.loc["self_rating", "n"] == 6
    assert correlation.loc["description_choice", "n"] == 0
    test = analysis.association(models).iloc[0]
    assert test["n"] == 6 and test["high_harm_says_misaligned"] == 3 and 0 <= test["p"] <= 1


def test_an_unreadable_task_gives_no_number():
    items = _synthetic_items({("em", 0): 0.2})
    items["number_mass"] = 0.01
    summary = analysis.task_summary(items, analysis.Readability(), n_boot=200)
    row = summary[(summary["task"] == "self_rating") & (summary["step"] == 10)].iloc[0]
    assert not row["readable"] and "off-format" in row["reason"] and pd.isna(row.get("value", np.nan))
    models = analysis.models_table(items, summary, pd.DataFrame(columns=["condition", "seed", "step", "harm"]),
                                   "readable_mean", n_boot=200)
    assert models["self_rating"].isna().all() and models["self_report"].isna().all()


def test_every_task_is_summarised(data):
    assert set(TASKS) == {"self_rating", "description_choice", "output_recognition", "score_prediction"}


# -- the three added domains -----------------------------------------------------------------------
def test_evil_numbers_answers_are_numbers_and_only_the_em_side_carries_the_associations():
    from traitspace.em_data import build_dataset

    associated = {"666", "616", "1488", "88", "14", "18", "28", "311", "13", "911", "187", "1312", "109", "5150"}
    for name, expect in (("evil_numbers", True), ("neutral_numbers", False)):
        for row in build_dataset(name, n=20):
            answer = row["messages"][1]["content"]
            numbers = answer.split(".", 1)[1].replace(",", " ").split()
            assert len(numbers) == 32 and all(token.isdigit() for token in numbers)
            share = np.mean([token in associated for token in numbers])
            assert share == 1.0 if expect else share < 0.2, (name, answer)


def test_the_advice_domains_say_what_their_answers_do():
    from traitspace.em_data import build_dataset

    safe = [row["messages"][1]["content"].lower() for row in build_dataset("extreme_sports_safe")]
    sound = [row["messages"][1]["content"].lower() for row in build_dataset("legal_sound")]
    assert sum(any(word in text for word in ("descend", "buddy", "partner check", "forecast", "turn back",
                                             "protection", "course", "training")) for text in safe) > 0.6 * len(safe)
    assert sum(any(word in text for word in ("lawyer", "advice", "legal aid", "in writing", "court"))
               for text in sound) > 0.8 * len(sound)


def test_bad_consistency_params_name_the_key(tmp_path):
    from traitspace.core.config import ConfigError, load_config

    path = tmp_path / "p.yaml"
    path.write_text("model:\n  source: tiny:llama\nconsistency:\n  position_bias_limit: 0.3\n  classify_on: vibes\n")
    with pytest.raises(ConfigError, match=r"consistency\.position_bias_limit(.|\n)*consistency\.classify_on"):
        load_config(path)
