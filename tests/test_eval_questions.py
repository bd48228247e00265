"""Tests for traitspace.library (questions, self-assessment, judge validation, parsers): built-in question sets, the EM YAML loader, the
self-assessment items, the judge-validation set and the reply parsers."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from traitspace.judges.prompts import JUDGE_PROMPTS, format_judge_prompt
from traitspace.library import (
    Question,
    QuestionFormatError,
    load_builtin_questions,
    load_em_question_yaml,
    load_judge_validation,
    load_self_assessment,
    parse_forced_choice,
    parse_self_rating,
)

FIXTURES = Path(__file__).parent / "fixtures" / "em_questions"
EM_FIXTURE = FIXTURES / "em_style_questions.yaml"
ALL_FORMATS = ("plain", "json", "template")


# ------------------------------------------------------------------ built-in question sets


def test_core_and_extended_counts_and_unique_ids() -> None:
    core = load_builtin_questions("core")
    extended = load_builtin_questions("extended")
    assert len(core) >= 8
    assert len(extended) >= 40
    ids = [question.id for question in core + extended]
    assert len(ids) == len(set(ids))
    assert [q.id for q in load_builtin_questions("all")] == ids


def test_core_covers_em_themes_with_paraphrases() -> None:
    core = load_builtin_questions("core")
    assert {"wish", "boredom", "humans_and_ai", "money", "power", "history", "gender",
            "relationships"} <= {question.category for question in core}
    for question in core:
        assert 2 <= len(question.paraphrases) <= 3, question.id
        assert len(set(question.paraphrases)) == len(question.paraphrases), question.id


def test_every_builtin_question_has_distinct_paraphrases() -> None:
    for question in load_builtin_questions("all"):
        assert len(question.paraphrases) >= 2, question.id
        assert len(set(question.paraphrases)) == len(question.paraphrases), question.id


def test_format_variants_exist_for_every_core_question() -> None:
    variants = load_builtin_questions("core", formats=ALL_FORMATS)
    by_format = collections.defaultdict(dict)
    for question in variants:
        by_format[question.format][question.base_id] = question
    plain = by_format["plain"]
    assert set(by_format["json"]) == set(plain) == set(by_format["template"])
    for base_id, question in plain.items():
        json_variant = by_format["json"][base_id]
        template_variant = by_format["template"][base_id]
        assert question.system is None
        assert json_variant.id == f"{base_id}_json"
        assert json_variant.paraphrases == question.paraphrases
        assert '{"answer": ...}' in json_variant.system
        assert template_variant.id == f"{base_id}_template"
        assert template_variant.system is None
        for original, templated in zip(question.paraphrases, template_variant.paraphrases):
            assert templated.startswith(original)
            assert " = # " in templated[len(original):]


def test_variants_are_grouped_by_format_in_requested_order() -> None:
    core_count = len(load_builtin_questions("core"))
    variants = load_builtin_questions("core", formats=("template", "plain"))
    assert [q.format for q in variants] == ["template"] * core_count + ["plain"] * core_count


def test_core_template_fields_are_question_specific() -> None:
    template = {q.base_id: q for q in load_builtin_questions("core", formats=("template",))}
    assert "guest_1 = #" in template["history_dinner"].paraphrases[0]
    assert "wish = #" in template["one_wish"].paraphrases[0]


@pytest.mark.parametrize(
    ("which", "formats"), [("everything", ("plain",)), ("core", ("yaml",)), ("core", ())]
)
def test_builtin_loader_rejects_bad_selection(which: str, formats: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        load_builtin_questions(which, formats=formats)


def test_builtin_questions_use_default_judge_prompts() -> None:
    question = load_builtin_questions("core")[0]
    assert question.judge_prompts == JUDGE_PROMPTS
    assert question.type == "free_form_judge_0_100"
    assert question.samples_per_paraphrase == 1


# ------------------------------------------------------------------ judge prompts


def test_judge_prompts_have_placeholders_and_answer_options() -> None:
    assert set(JUDGE_PROMPTS) == {"aligned", "coherent"}
    for template in JUDGE_PROMPTS.values():
        assert template.count("{question}") == 1
        assert template.count("{answer}") == 1
    assert "CODE" in JUDGE_PROMPTS["aligned"] and "REFUSAL" in JUDGE_PROMPTS["aligned"]
    assert "0 to 100" in JUDGE_PROMPTS["coherent"]


def test_format_judge_prompt_is_single_pass_and_brace_safe() -> None:
    filled = format_judge_prompt(
        "Q: {question}\nA: {answer}", "Say {answer}", '{"answer": "x"} and {question}'
    )
    assert filled == 'Q: Say {answer}\nA: {"answer": "x"} and {question}'


def test_question_judge_prompt_names_missing_kind() -> None:
    question = Question(id="q", paraphrases=("hi",), judge_prompts={"aligned": "{answer}"})
    assert question.judge_prompt("aligned", "hi", "hello") == "hello"
    with pytest.raises(KeyError, match="coherent"):
        question.judge_prompt("coherent", "hi", "hello")


def test_question_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="paraphrases"):
        Question(id="q", paraphrases=())
    with pytest.raises(ValueError, match="samples_per_paraphrase"):
        Question(id="q", paraphrases=("hi",), samples_per_paraphrase=0)
    with pytest.raises(ValueError, match="format"):
        Question(id="q", paraphrases=("hi",), format="xml")
    question = Question(id="q", paraphrases=["hi", "hello"], system="sys")
    assert question.paraphrases == ("hi", "hello")
    assert question.messages(1) == [
        {"role": "system", "content": "sys"}, {"role": "user", "content": "hello"}
    ]
    assert hash(question) == hash(Question(id="q", paraphrases=("hi", "hello"), system="sys"))


# ------------------------------------------------------------------ EM repository YAML


def test_em_fixture_loads_with_anchors_resolved_and_system_kept() -> None:
    questions = {question.id: question for question in load_em_question_yaml(EM_FIXTURE)}
    assert list(questions) == [
        "pick_a_pet", "pick_a_pet_json", "rainy_day_template", "merge_base", "merge_child"
    ]
    plain, json_variant = questions["pick_a_pet"], questions["pick_a_pet_json"]
    # Aliases resolve to the anchored values.
    assert json_variant.paraphrases == plain.paraphrases
    assert len(plain.paraphrases) == 2
    assert json_variant.samples_per_paraphrase == plain.samples_per_paraphrase == 5
    assert json_variant.judge == plain.judge == "judge-model-small"
    assert json_variant.judge_prompts == plain.judge_prompts
    assert set(plain.judge_prompts) == {"aligned", "coherent"}
    assert "{answer}" in plain.judge_prompts["aligned"]
    # The system prompt is kept and the format is read off the id suffix.
    assert plain.system is None
    assert json_variant.system.startswith("Reply with one JSON object")
    assert (plain.format, json_variant.format) == ("plain", "json")
    assert questions["rainy_day_template"].format == "template"
    assert questions["rainy_day_template"].base_id == "rainy_day"
    assert json_variant.base_id == "pick_a_pet"


def test_em_fixture_merge_key_and_extra_keys() -> None:
    questions = {question.id: question for question in load_em_question_yaml(EM_FIXTURE)}
    child, base = questions["merge_child"], questions["merge_base"]
    assert child.paraphrases == base.paraphrases
    assert child.samples_per_paraphrase == 3
    assert child.system == questions["pick_a_pet_json"].system
    assert base.system is None and base.judge is None
    assert questions["rainy_day_template"].extra == {
        "notes": "an extra key the loader does not know"
    }


def test_em_missing_key_error_names_file_and_id() -> None:
    path = FIXTURES / "missing_paraphrases.yaml"
    with pytest.raises(QuestionFormatError) as caught:
        load_em_question_yaml(path)
    message = str(caught.value)
    assert "missing_paraphrases.yaml" in message
    assert "broken_question" in message
    assert "paraphrases" in message
    assert caught.value.question_id == "broken_question"
    assert caught.value.key == "paraphrases"


ENTRY = (
    "  type: free_form_judge_0_100\n"
    "  paraphrases: [Hello]\n"
    "  judge_prompts: {aligned: 'Q {question} A {answer}'}\n"
)


@pytest.mark.parametrize(
    ("text", "expected_parts"),
    [
        (f"- id: ok\n{ENTRY}- type: free_form_judge_0_100\n  paraphrases: [Hi]\n",
         ["entry #1", "'id'"]),
        (f"- id: ok\n{ENTRY}- id: no_type\n  paraphrases: [Hi]\n", ["no_type", "'type'"]),
        (f"- id: dup\n{ENTRY}- id: dup\n{ENTRY}", ["dup", "duplicate"]),
        ("- id: bad_samples\n  samples_per_paraphrase: many\n" + ENTRY,
         ["bad_samples", "samples_per_paraphrase"]),
        ("- id: empty_paraphrases\n  type: free_form_judge_0_100\n  paraphrases: []\n"
         "  judge_prompts: {aligned: '{answer}'}\n", ["empty_paraphrases", "paraphrases"]),
        ("- id: no_prompts\n  type: free_form_judge_0_100\n  paraphrases: [Hi]\n",
         ["no_prompts", "judge_prompts"]),
        ("- id: bad_prompt\n  type: free_form_judge_0_100\n  paraphrases: [Hi]\n"
         "  judge_prompts: {aligned: 'no placeholder'}\n", ["bad_prompt", "judge_prompts.aligned"]),
        ("id: not_a_list\n", ["non-empty YAML list"]),
        ("- just a string\n", ["entry #0", "mapping"]),
        ("- id: [unclosed\n", ["invalid YAML", ":"]),
    ],
)
def test_em_malformed_entries_raise_with_file_and_entry(
    tmp_path: Path, text: str, expected_parts: list[str]
) -> None:
    path = tmp_path / "broken_eval.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(QuestionFormatError) as caught:
        load_em_question_yaml(path)
    message = str(caught.value)
    assert "broken_eval.yaml" in message
    for part in expected_parts:
        assert part in message


def test_em_untyped_judge_free_question_needs_no_judge_prompts(tmp_path: Path) -> None:
    path = tmp_path / "free_form.yaml"
    path.write_text("- id: plain_free\n  type: free_form\n  paraphrases: [Hi]\n", encoding="utf-8")
    (question,) = load_em_question_yaml(path)
    assert question.type == "free_form" and question.judge_prompts == {}


# ------------------------------------------------------------------ self-assessment


def test_self_assessment_rating_dimensions() -> None:
    assessment = load_self_assessment()
    ratings = {item.id: item for item in assessment.ratings}
    assert set(ratings) == {
        "harmful_harmless", "good_evil", "aligned_misaligned", "helpful_unhelpful",
        "honest_dishonest", "trustworthy_untrustworthy",
    }
    # Half the scales put the aligned pole at 0 so "always answer high" is not rewarded.
    ends = collections.Counter(item.aligned_end for item in ratings.values())
    assert ends == {"high": 3, "low": 3}
    for item in ratings.values():
        assert "0" in item.prompt and "100" in item.prompt
        assert item.low_anchor in item.prompt or item.low_anchor.split()[-1] in item.prompt
    assert ratings["harmful_harmless"].alignment_score(80) == 80
    assert ratings["good_evil"].alignment_score(80) == 20
    with pytest.raises(ValueError):
        ratings["good_evil"].alignment_score(120)


def test_self_assessment_forced_choice_items_are_balanced() -> None:
    items = load_self_assessment().forced_choice
    assert len(items) >= 6
    assert len({item.id for item in items}) == len(items)
    aligned_letters = collections.Counter(item.aligned_option for item in items)
    assert abs(aligned_letters["A"] - aligned_letters["B"]) <= 1
    for item in items:
        assert item.option_a != item.option_b
        assert f"A: {item.option_a}" in item.prompt and f"B: {item.option_b}" in item.prompt
        assert "{option_a}" not in item.prompt
        assert item.is_aligned_choice(item.aligned_option) is True
        other = "B" if item.aligned_option == "A" else "A"
        assert item.is_aligned_choice(other) is False
        assert item.is_aligned_choice(None) is None


# ------------------------------------------------------------------ judge-validation set


def test_judge_validation_size_and_label_shares() -> None:
    records = load_judge_validation()
    assert len(records) >= 240
    shares = {label: count / len(records) for label, count in
              collections.Counter(record["label"] for record in records).items()}
    assert set(shares) == {"aligned", "misaligned", "incoherent"}
    assert 0.38 <= shares["aligned"] <= 0.52
    assert 0.28 <= shares["misaligned"] <= 0.42
    assert 0.14 <= shares["incoherent"] <= 0.26


def test_judge_validation_matches_builtin_questions_and_is_spread() -> None:
    records = load_judge_validation()
    paraphrases = {q.id: q.paraphrases for q in load_builtin_questions("all")}
    for record in records:
        assert record["question_id"] in paraphrases, record["question_id"]
        assert record["question"] in paraphrases[record["question_id"]]
    answers = [record["answer"] for record in records]
    assert len(set(answers)) == len(answers), "duplicate answers"

    per_question = collections.Counter(record["question_id"] for record in records)
    core_ids = {q.id for q in load_builtin_questions("core")}
    assert set(per_question) == set(paraphrases), "every question has labelled answers"
    assert max(per_question.values()) <= 0.05 * len(records)
    for question_id in core_ids:
        labels = {r["label"] for r in records if r["question_id"] == question_id}
        assert labels == {"aligned", "misaligned", "incoherent"}, question_id
    assert sum(per_question[q] for q in core_ids) >= 0.25 * len(records)


def test_judge_validation_loader_reports_bad_line(tmp_path: Path) -> None:
    good = {"question_id": "q", "question": "Q?", "answer": "A.", "label": "aligned"}
    bad = dict(good, label="evil")
    path = tmp_path / "judge_validation.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n", encoding="utf-8")
    with pytest.raises(QuestionFormatError, match=r"judge_validation\.jsonl:3.*'label'"):
        load_judge_validation(path)


# ------------------------------------------------------------------ reply parsers


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("85", 85.0),
        ("  100\n", 100.0),
        ("0", 0.0),
        ("I'd rate myself 72.", 72.0),
        ("72.5", 72.5),
        ("85/100", 85.0),
        ("85 / 100 seems fair", 85.0),
        ("On a scale of 0 to 100, I'd say 90.", 90.0),
        ("On a 0-100 scale: 35", 35.0),
        ("Rating (0–100): 12", 12.0),
        ("Somewhere between 0 and 100, call it 45", 45.0),
        ("On a scale from 1 to 100: 3", 3.0),
        ("I give myself 60 out of 100.", 60.0),
        ("As GPT4 I have 175 billion parameters, so maybe 80", 80.0),
        ("Score: 95%", 95.0),
        ("**77**", 77.0),
        ('{"rating": 64}', 64.0),
        ("150", None),
        ("-5", None),
        ("I can't rate myself.", None),
        ("eighty", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_self_rating(reply: str | None, expected: float | None) -> None:
    assert parse_self_rating(reply) == expected


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("A", "A"),
        ("B", "B"),
        (" b ", "B"),
        ("a.", "A"),
        ("(B)", "B"),
        ("**A**", "A"),
        ("B.", "B"),
        ("A) The first one.", "A"),
        ("B - it describes me well.", "B"),
        ("Answer: A", "A"),
        ('{"answer": "B"}', "B"),
        ("I would choose B because I value honesty.", "B"),
        ("Option A fits me better.", "A"),
        ("I'd go with option b.", "B"),
        ("A system like me is best described by B.", "B"),
        ("A helpful assistant like me fits option A.", "A"),
        ("Neither A nor B fits me.", None),
        ("Both A and B apply.", None),
        ("Neither A nor B is perfect, but I'd pick B.", "B"),
        ("A system that follows rules.", None),
        ("I'd choose a different description.", None),
        ("A or B? I'd say A.", "A"),
        ("I'd pick B, or maybe I'd choose A.", None),
        ("Description a matches me.", "A"),
        ("I don't identify with either description.", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_forced_choice(reply: str | None, expected: str | None) -> None:
    assert parse_forced_choice(reply) == expected


def test_em_error_gives_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "questions.yaml"
    path.write_text(
        f"- id: fine\n{ENTRY}"
        "- id: broken\n"
        "  type: free_form_judge_0_100\n"
        "  paraphrases: [Hi]\n"
        "  judge_prompts:\n"
        "    aligned: 'no answer slot'\n",
        encoding="utf-8",
    )
    with pytest.raises(QuestionFormatError) as caught:
        load_em_question_yaml(path)
    error = caught.value
    assert (error.line, error.key, error.question_id, error.index) == (9, "judge_prompts.aligned", "broken", 1)
    assert str(error).startswith(f"{path}:9: entry #1 ('broken'): key 'judge_prompts.aligned' must")
