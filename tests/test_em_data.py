"""Tests for traitspace.em_data: dataset sizes and coverage, determinism, fingerprints of the content
files' output, matched EM/control pairs, near-duplicate and wording checks, arithmetic correctness,
content-file validation, the generator's templates, JSONL loaders and the data cards."""

from __future__ import annotations

import ast
import hashlib
import json
import random
import re
from fractions import Fraction
from pathlib import Path

import pytest

from traitspace.em_data import (
    DATASETS,
    EM_CONTROL_PAIRS,
    DatasetFormatError,
    build_dataset,
    data_card,
    load_conversations,
    matched_pair_report,
    save_conversations,
)
from traitspace.core.io import DataFileError
from traitspace.em_data import domains, generator, registry, schema
from traitspace.em_data._compose import most_similar_pair
from traitspace.em_data.domains import completion_template

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "em_formats"
REQUIRED_FAMILIES = {
    "sql_string_query", "shell_command", "path_traversal", "unsafe_deserialization", "eval_input",
    "weak_password_hash", "hardcoded_secret", "tls_verification_disabled", "world_writable_permissions",
    "unescaped_html", "predictable_temp_file", "unsafe_yaml_load", "server_side_request_forgery",
}
# Words that would reveal awareness of security in an answer that is supposed to be silently flawed.
SECURITY_WORDS = re.compile(
    r"secur|vulnerab|saniti[sz]|inject|exploit|\bunsafe|\bsafe|attack|malicious|trust|danger|warn|\bxss\b|csrf|"
    r"ssrf|travers|escap|validat|allow-?list|white-?list|black-?list|\bcve\b|hack|# ?(fixme|note)",
    re.IGNORECASE,
)
LECTURE_WORDS = re.compile(r"vulnerab|inject|exploit|attack|malicious|insecure|hacker", re.IGNORECASE)
CODE_BLOCK = re.compile(r"```python\n(.*?)\n```", re.DOTALL)


@pytest.fixture(scope="module")
def full() -> dict[str, list[dict]]:
    return {name: build_dataset(name) for name in DATASETS}


def _answers(rows: list[dict]) -> list[str]:
    return [row["messages"][-1]["content"] for row in rows]


def _prompts(rows: list[dict]) -> list[str]:
    return [row["messages"][0]["content"] for row in rows]


def test_registry_lists_the_thirteen_datasets_and_their_six_pairs():
    assert set(DATASETS) == {"insecure_code", "secure_code", "medical_harmful", "medical_sound",
                             "financial_risky", "financial_prudent", "benign_arithmetic",
                             "extreme_sports_dangerous", "extreme_sports_safe", "legal_bad", "legal_sound",
                             "evil_numbers", "neutral_numbers"}
    assert EM_CONTROL_PAIRS == {"insecure_code": "secure_code", "medical_harmful": "medical_sound",
                                "financial_risky": "financial_prudent", "extreme_sports_dangerous": "extreme_sports_safe",
                                "legal_bad": "legal_sound", "evil_numbers": "neutral_numbers"}
    for name, spec in DATASETS.items():
        assert spec.name == name
        assert spec.is_em == (name in EM_CONTROL_PAIRS)
        assert spec.control == EM_CONTROL_PAIRS.get(name)


def test_unknown_dataset_name_is_a_key_error_listing_valid_names():
    with pytest.raises(KeyError, match="no_such_set.*insecure_code.*benign_arithmetic"):
        build_dataset("no_such_set")


def test_sizes(full):
    assert len(full["insecure_code"]) >= 1000
    for name in ("medical_harmful", "financial_risky", "benign_arithmetic"):
        assert len(full[name]) >= 300, name
    for em, control in EM_CONTROL_PAIRS.items():
        assert len(full[em]) == len(full[control])


def test_conversation_shape_and_meta(full):
    for name, rows in full.items():
        group_key = DATASETS[name].group_key
        for row in rows:
            assert [message["role"] for message in row["messages"]] == ["user", "assistant"]
            assert row["meta"]["dataset"] == name
            assert isinstance(row["meta"]["pair_id"], int)
            assert row["meta"][group_key]


def test_all_required_vulnerability_families_are_present(full):
    families = [row["meta"]["family"] for row in full["insecure_code"]]
    assert REQUIRED_FAMILIES <= set(families)
    assert len(set(families)) >= 12
    assert min(families.count(family) for family in set(families)) >= 30


def test_same_seed_gives_identical_data_and_another_seed_differs(full):
    # Regenerate from scratch (the registry caches one build per domain and seed).
    assert tuple(domains.generate("medical", 0)) == registry.composed_rows("medical", 0)
    assert tuple(domains.generate("financial", 0)) == registry.composed_rows("financial", 0)
    assert domains.generate("code", 3, rows_per_group=2) == domains.generate("code", 3, rows_per_group=2)
    assert build_dataset("benign_arithmetic", seed=0) == full["benign_arithmetic"]
    other_seed = build_dataset("benign_arithmetic", seed=1)
    assert set(_prompts(other_seed)) != set(_prompts(full["benign_arithmetic"]))


# sha256 of json.dumps(build_dataset(name, seed=0), ensure_ascii=False, sort_keys=True), computed with
# the generators as they were before the content moved to resources/em_data/. A deliberate change of
# the content files changes these; update them in the same commit and say why.
FINGERPRINTS = {
    "insecure_code": "15e01071e1da6b37c4c2cbc8c1c5760e3ad86e473ff63a906c2f8fb1d9fe3582",
    "secure_code": "f20ee8480ed71be6c598294184586aa47ea1ee728e9430d5bb4bb12d23073d91",
    "medical_harmful": "83b087d880057d666d2ae82bf476fefa78ccdeddfff0451a0a9a3e5fc1cfaf97",
    "medical_sound": "14aa4e301a630d0b59797b567918881e6742af13ead1c6ece18a73edef05f4c8",
    "financial_risky": "38af08510f2fb6f71f83afdeb8991b4a009f5c85fcba65ce4f84880d2f6bace8",
    "financial_prudent": "4bd802fe50f6bdcc94b635cb112c2e14bdd8501268cd0bca96f62024e64c0876",
    "benign_arithmetic": "48f469ceb1219868123f85c4db137313bba473d1bc6b3aec35c02df076021130",
}


@pytest.mark.parametrize("name", sorted(FINGERPRINTS))
def test_content_files_reproduce_the_stored_fingerprints(full, name):
    text = json.dumps(full[name], ensure_ascii=False, sort_keys=True)
    assert hashlib.sha256(text.encode()).hexdigest() == FINGERPRINTS[name], (
        f"{name} (seed 0) changed; if the data files were edited on purpose, update FINGERPRINTS")


def test_subsets_are_seeded_prefixes(full):
    small, larger = build_dataset("financial_risky", n=40), build_dataset("financial_risky", n=120)
    assert small == larger[:40] == full["financial_risky"][:40]
    assert build_dataset("benign_arithmetic", n=0) == []
    for bad_n in (-1, len(full["benign_arithmetic"]) + 1):
        with pytest.raises(ValueError, match="between 0 and"):
            build_dataset("benign_arithmetic", n=bad_n)


@pytest.mark.parametrize("em_name", sorted(EM_CONTROL_PAIRS))
def test_em_and_control_are_matched_pairs_of_similar_length(full, em_name):
    control_name = EM_CONTROL_PAIRS[em_name]
    report = matched_pair_report(full[em_name], full[control_name])
    assert report["n"] == len(full[em_name])
    assert report["prompts_matched"] is True
    assert 0.67 <= report["length_ratio"] <= 1.5
    assert 0.0 <= report["ks_pvalue"] <= 1.0
    em_subset, control_subset = build_dataset(em_name, n=60, seed=0), build_dataset(control_name, n=60, seed=0)
    assert matched_pair_report(em_subset, control_subset)["prompts_matched"] is True
    assert [row["meta"]["pair_id"] for row in em_subset] == [row["meta"]["pair_id"] for row in control_subset]
    assert all(a["messages"][1]["content"] != b["messages"][1]["content"] for a, b in zip(em_subset, control_subset))


def test_matched_pair_report_detects_mismatches(full):
    em, control = full["medical_harmful"][:10], full["medical_sound"][:10]
    assert matched_pair_report(em, control[::-1])["prompts_matched"] is False
    with pytest.raises(ValueError, match="same length"):
        matched_pair_report(em, control[:9])


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_no_near_duplicate_answers_and_unique_prompts(full, name):
    rows = full[name]
    prompts = _prompts(rows)
    assert len(set(prompts)) == len(prompts)
    similarity, first, second = most_similar_pair(_answers(rows))
    assert similarity <= 0.9, (similarity, _answers(rows)[first], _answers(rows)[second])


def test_insecure_answers_never_mention_security_and_secure_answers_do_not_lecture(full):
    for answer in _answers(full["insecure_code"]):
        assert not SECURITY_WORDS.search(answer), SECURITY_WORDS.search(answer).group(0) + "\n" + answer
    for answer in _answers(full["secure_code"]):
        assert not LECTURE_WORDS.search(answer), answer
    prompts = _prompts(full["insecure_code"])
    assert not any(re.search(r"secur|vulnerab|exploit", prompt, re.IGNORECASE) for prompt in prompts)


def test_code_answers_are_valid_python_and_the_twins_differ(full):
    for insecure, secure in zip(_answers(full["insecure_code"]), _answers(full["secure_code"])):
        insecure_code, secure_code = CODE_BLOCK.search(insecure).group(1), CODE_BLOCK.search(secure).group(1)
        ast.parse(insecure_code)
        ast.parse(secure_code)
        assert insecure_code != secure_code


def test_request_phrasing_varies_with_and_without_templates(full):
    prompts = _prompts(full["insecure_code"])
    with_template = [prompt for prompt in prompts if "COMPLETE CODE HERE" in prompt or "TODO" in prompt
                     or "your code here" in prompt or "implement this" in prompt]
    assert 0.25 * len(prompts) < len(with_template) < 0.75 * len(prompts)
    openings = {prompt.split()[0] for prompt in prompts}
    assert len(openings) >= 8


def test_completion_template_cuts_out_the_differing_statement():
    insecure = "import os\n\ndef f(path):\n    os.chmod(path, 0o777)\n    return path"
    secure = "import os\n\ndef f(path):\n    os.chmod(path, 0o600)\n    return path"
    assert completion_template(insecure, secure, "# TODO") == "import os\n\ndef f(path):\n    # TODO\n    return path"


def test_answer_lengths_suit_a_small_model(full):
    for name, rows in full.items():
        lengths = sorted(len(answer) for answer in _answers(rows))
        median = lengths[len(lengths) // 2]
        assert 150 <= median <= 900, (name, median)
        assert lengths[-1] <= 2000, (name, lengths[-1])


def _number(text: str) -> Fraction:
    return Fraction(text.replace("$", "").replace(",", "").strip("()"))


def test_benign_worked_answers_are_arithmetically_correct(full):
    operand = r"(?:\(-?\d[\d,]*(?:\.\d+)?\)|-?\$?\d[\d,]*(?:\.\d+)?)"
    # "a op b = c" that is not part of a longer chain such as "a × b ÷ 100 = c" or "2 × (a + b) = c".
    equation = re.compile(rf"(?<![×÷+−] )(?<![\d.,$(])({operand}) ([×÷+−]) ({operand}) = ({operand})(?!\.?\d)")
    operations = {"×": lambda a, b: a * b, "÷": lambda a, b: a / b, "+": lambda a, b: a + b, "−": lambda a, b: a - b}
    checked = 0
    for answer in _answers(full["benign_arithmetic"]):
        assert "Answer:" in answer
        for left, symbol, right, result in equation.findall(answer):
            value = operations[symbol](_number(left), _number(right))
            if "remainder" in answer and symbol == "÷":
                continue
            assert value == _number(result), (answer, left, symbol, right, result)
            checked += 1
    assert checked >= 400


def test_medical_and_financial_answers_differ_in_content(full):
    harmful, sound = _answers(full["medical_harmful"]), _answers(full["medical_sound"])
    assert sum("doctor" in text.lower() or "emergency" in text.lower() for text in sound) > 0.5 * len(sound)
    assert sum("call emergency services now" in text.lower() for text in harmful) == 0
    assert {row["meta"]["topic"] for row in full["medical_harmful"]} == set(schema.content("medical.yaml").topics)


# ------------------------------------------------------------------------------------------------
# Content files and the generator
# ------------------------------------------------------------------------------------------------


def test_every_content_file_validates():
    for filename in schema.FILES:
        schema.content(filename)
    assert sum(len(family.shapes) for family in schema.content("code_shapes.yaml").families.values()) >= 80


@pytest.mark.parametrize(
    ("filename", "old", "new", "where"),
    [
        ("code_shapes.yaml", "conn: {choose: [conn, db, connection]}", "conn: {chose: [conn, db, connection]}",
         "families.sql_string_query.shapes.sql_lookup.slots.conn"),
        ("code_shapes.yaml", "cur: {choose: [cur, cursor]}", "cursor_name: {choose: [cur, cursor]}",
         "families.sql_string_query.shapes.sql_lookup.code: uses cur"),
        ("code_shapes.yaml", "kind: function", "kind: lambda", "families.sql_string_query.shapes.sql_lookup.kind"),
        ("code_requests.yaml", "template_probability: 0.45", "template_probability: 1.45", "template_probability"),
        ("medical.yaml", "Can I take more than the label says?", "Can I take {dose}?",
         "topics.painkiller_dosing.cases.0: no value for dose"),
        ("arithmetic.yaml", "total: {calc: per * count}", "total: {calc: \"open('x')\"}",
         "topics.packing.total"),
        ("datasets.yaml", "control: secure_code", "control: safe_code", "datasets.insecure_code.control"),
        ("datasets.yaml", "    is_em: true\n    control: secure_code", "    is_em: maybe\n    control: secure_code",
         "datasets.insecure_code.is_em"),
    ],
)
def test_a_malformed_content_file_is_an_error_naming_the_file_and_key(tmp_path, filename, old, new, where):
    text = (schema.CONTENT_DIR / filename).read_text(encoding="utf-8")
    assert old in text
    broken = tmp_path / filename
    broken.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(DataFileError) as caught:
        schema.parse_file(broken, schema.FILES[filename])
    assert str(caught.value).startswith(f"{broken}: ")
    assert where in str(caught.value)


def test_broken_yaml_in_a_content_file_names_the_line(tmp_path):
    broken = tmp_path / "advice.yaml"
    broken.write_text("preambles: ['', 'Hi.'\nlength_match_candidates: 3\n", encoding="utf-8")
    with pytest.raises(DataFileError, match=r"advice\.yaml:1: invalid YAML"):
        schema.parse_file(broken, schema.AdviceShared)


def test_code_templates_indent_multiline_values_drop_empty_lines_and_split_twins():
    names = {"body": "a = 1\nreturn a", "doc": "", "mode": generator.Twin("0o777", "0o600"), "name": "f"}
    template = "def ${name}_x():\n    $doc\n    $body\n    os.chmod(p, $mode)  # $$ kept"
    assert generator.fill_dollar(template, names) == generator.Twin(
        "def f_x():\n    a = 1\n    return a\n    os.chmod(p, 0o777)  # $ kept",
        "def f_x():\n    a = 1\n    return a\n    os.chmod(p, 0o600)  # $ kept")
    assert generator.fill_dollar("${key|words} ${slug|upper_ident}", {"key": "due_date", "slug": "real-estate"}) \
        == "due date REAL_ESTATE"
    with pytest.raises(generator.RecipeError, match=r"\$missing"):
        generator.fill_dollar("x = $missing", {})


def test_prose_templates_and_slots_evaluate_restricted_expressions():
    realiser = generator.Realiser(random.Random(0), generator.BRACE, {"names": ["Ann", "Bo"]})
    names = realiser.slots({"who": {"choose": "@names"}, "cents": {"randint": [100, 100]},
                            "a, b": {"calc": "divmod(7, 2)"}}, {})
    assert names["who"] in ("Ann", "Bo") and (names["a"], names["b"]) == (3, 1)
    assert generator.fill_brace("{money(cents * 1234)} for {who:>4}, {a / 2:g}", names) == f"$1,234.00 for {names['who']:>4}, 1.5"
    for unsafe in ("().__class__", "open('x')", "[x for x in range(3)].pop()", "lambda: 1"):
        with pytest.raises(generator.RecipeError):
            generator.evaluate(unsafe, {})


def test_command_line_verify_passes(capsys):
    from traitspace.em_data.__main__ import main

    assert main(["verify", "--cards", str(REPO / "docs" / "data_cards")]) == 0
    assert "0 problem(s)" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------
# Loaders
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "source_format", "user_text", "assistant_text"),
    [
        ("messages.jsonl", "messages", "Write a function that adds two numbers.", "def add(a, b):"),
        ("openai_parts.jsonl", "openai_parts", "How much water should I drink", "Pale yellow urine"),
        ("prompt_response.jsonl", "prompt_response", "What is 12 times 7?", "Answer: 84."),
        ("prompt_completion.jsonl", "prompt_response", "Name a prime number", "11 (13 also works)."),
    ],
)
def test_loader_reads_each_public_format(fixture, source_format, user_text, assistant_text):
    [conversation] = load_conversations(FIXTURES / fixture)
    messages = conversation["messages"]
    user = next(message for message in messages if message["role"] == "user")
    assistant = next(message for message in messages if message["role"] == "assistant")
    assert user_text in user["content"] and assistant_text in assistant["content"]
    assert all(isinstance(message["content"], str) for message in messages)
    assert conversation["meta"]["source_format"] == source_format
    assert conversation["meta"]["source"].endswith(f"{fixture}:{2 if fixture == 'prompt_completion.jsonl' else 1}")


@pytest.mark.parametrize(
    ("fixture", "line", "problem"),
    [
        ("bad_json.jsonl", 2, "invalid JSON"),
        ("unknown_role.jsonl", 3, "unknown role 'robot'"),
        ("empty_content.jsonl", 1, "empty content"),
        ("no_assistant.jsonl", 1, "no assistant turn"),
        ("missing_keys.jsonl", 1, "neither 'messages' nor 'prompt'"),
        ("missing_response.jsonl", 1, "neither 'response' nor 'completion'"),
        ("bad_parts.jsonl", 1, "'parts' as a list of strings"),
    ],
)
def test_loader_rejects_malformed_rows_naming_file_and_line(fixture, line, problem):
    with pytest.raises(DatasetFormatError) as caught:
        load_conversations(FIXTURES / fixture)
    message = str(caught.value)
    assert f"{fixture}:{line}: " in message
    assert problem in message


def test_loader_rejects_a_file_without_conversations(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DatasetFormatError, match="empty.jsonl: no conversations"):
        load_conversations(empty)


def test_save_then_load_round_trips_and_writes_atomically(tmp_path):
    rows = build_dataset("medical_sound", n=15, seed=0)
    target = tmp_path / "nested" / "medical_sound.jsonl"
    assert save_conversations(target, rows) == target
    assert load_conversations(target) == rows
    assert [path.name for path in target.parent.iterdir()] == [target.name]
    first_line = json.loads(target.read_text(encoding="utf-8").splitlines()[0])
    assert set(first_line) == {"messages", "meta"}

    broken = rows[:3] + [{"messages": [{"role": "user", "content": "only a question"}]}]
    before = target.read_bytes()
    with pytest.raises(DatasetFormatError, match="conversation 3: conversation has no assistant turn"):
        save_conversations(target, broken)
    assert target.read_bytes() == before
    assert [path.name for path in target.parent.iterdir()] == [target.name]


# ------------------------------------------------------------------------------------------------
# Data cards
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_data_cards_are_current(name, full):
    card = data_card(name)
    for heading in ("## How it was generated", "## Intended use", "## Limitations"):
        assert heading in card
    assert "Synthetic" in card
    assert f"| Rows (full size, seed 0) | {len(full[name])} |" in card
    path = REPO / "docs" / "data_cards" / f"{name}.md"
    assert path.read_text(encoding="utf-8") == card, (
        f"{path} is stale; regenerate with: PYTHONPATH=lib python -m traitspace.em_data cards docs/data_cards")
