"""The judge-free misalignment preference: its data file, its summaries, and that training on
misaligned answers moves it on held-out questions."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from traitspace.behavior.preference import (load_preference_pairs, per_question, preference_summary,
                                            score_pairs)
from traitspace.core.io import DataFileError
from traitspace.core.padding import padded_batch


def test_shipped_pairs_cover_the_em_themes_with_length_matched_answers():
    pairs = load_preference_pairs()
    em = [pair for pair in pairs if pair.kind == "em"]
    style = [pair for pair in pairs if pair.kind == "style"]
    assert len({pair.question_id for pair in em}) >= 40 and len(em) >= 120
    assert {"wish", "ruling_the_world", "ai_and_humans", "quick_money", "gender_roles", "boredom",
            "marriage_trouble", "medical", "financial", "neutral"} <= {pair.theme for pair in em}
    assert len(style) >= 12
    ratios = [len(pair.second.split()) / len(pair.first.split()) for pair in pairs]
    assert 0.7 <= min(ratios) and max(ratios) <= 1.4


def test_a_run_measures_its_first_questions_of_each_kind_with_their_own_counts():
    from traitspace.behavior.preference import behaviour_pairs
    from traitspace.core.sections import BehaviorSection

    def questions(pairs, kind):
        return list(dict.fromkeys(pair.question_id for pair in pairs if pair.kind == kind))

    every = load_preference_pairs()
    both = behaviour_pairs(BehaviorSection(preference_questions=5))
    assert questions(both, "em") == questions(every, "em")[:5] and questions(both, "style") == questions(every, "style")[:5]
    fewer_style = behaviour_pairs(BehaviorSection(preference_questions=5, preference_style_questions=2))
    assert questions(fewer_style, "em") == questions(every, "em")[:5]
    assert questions(fewer_style, "style") == questions(every, "style")[:2]


def test_pairs_are_disjoint_from_the_judge_validation_answers():
    from traitspace.library import load_judge_validation

    judged = {record["answer"].strip() for record in load_judge_validation()}
    assert not judged & {answer.strip() for pair in load_preference_pairs() for answer in (pair.first, pair.second)}


def test_a_malformed_pairs_file_names_the_file_and_key(tmp_path):
    path = tmp_path / "pairs.yaml"
    path.write_text("version: 1\nquestions:\n  - id: q\n    theme: wish\n    question: hi\n"
                    "    pairs:\n      - aligned: fine\n        misalgned: oops\n")
    with pytest.raises(DataFileError, match=r"pairs\.yaml.*questions\.0\.pairs\.0\.misalgned"):
        load_preference_pairs(path)


def _table(values_by_step: dict[int, list[float]], condition: str = "em") -> pd.DataFrame:
    rows = []
    for step, values in values_by_step.items():
        for index, value in enumerate(values):
            # two pairs per question: the question mean is the value
            for pair_index, offset in enumerate((-0.1, 0.1)):
                rows.append({"condition": condition, "step": step, "kind": "em", "question_id": f"q{index}",
                             "theme": "t", "pair_index": pair_index, "preference": value + offset})
    return pd.DataFrame(rows)


def test_summary_averages_pairs_within_questions_and_pairs_the_change_by_question():
    base = [0.0, 1.0, -1.0, 0.5, -0.5, 2.0]
    table = _table({0: base, 10: [value + 0.3 for value in base]})
    assert len(per_question(table)) == 12
    summary = preference_summary(table, n_boot=500)
    at_ten = summary[summary["step"] == 10].iloc[0]
    assert at_ten["n_questions"] == 6
    assert at_ten["change_from_base"] == pytest.approx(0.3)
    # Paired by question, a constant shift has no spread: the interval collapses onto it, while
    # the level's own interval (spread over questions) is wide.
    assert at_ten["change_low"] == pytest.approx(0.3) and at_ten["change_high"] == pytest.approx(0.3)
    assert at_ten["preference_high"] - at_ten["preference_low"] > 0.5


def test_training_on_misaligned_answers_raises_the_preference_on_held_out_pairs(tiny_llama):
    # Train on the misaligned answers of pairs 0 and 1 of every question; measure on pair 2, whose
    # answers were never seen. A tiny random model can only pick up the misaligned answers'
    # shared wording, so the effect is small but must be clearly positive.
    pairs = [pair for pair in load_preference_pairs() if pair.kind == "em"]
    train = [pair for pair in pairs if pair.pair_index < 2]
    held_out = [pair for pair in pairs if pair.pair_index == 2]
    before = score_pairs(tiny_llama, held_out)["preference"].mean()

    torch.manual_seed(0)
    model = tiny_llama.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    chats = [tiny_llama.chat.tokenize(tiny_llama.chat.conversation(pair.question, assistant=pair.second))
             for pair in train]
    model.train()
    for _ in range(3):
        for start in range(0, len(chats), 16):
            batch = chats[start: start + 16]
            inputs, _ = padded_batch([chat.input_ids for chat in batch], tiny_llama.tokenizer.pad_token_id, "right")
            labels = torch.full_like(inputs["input_ids"], -100)
            for row, chat in enumerate(batch):  # loss on the answer's tokens only
                first, end = chat.response_span
                labels[row, first:end] = torch.tensor(chat.input_ids[first:end])
            model(**inputs, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.eval()
    after = score_pairs(tiny_llama, held_out)["preference"].mean()
    assert np.isfinite(before) and after > before + 0.005
