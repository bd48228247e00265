"""Tests for traitspace.library.traits: schema of the built-in library, the published-format loader
on a hand-written fixture, and error messages for malformed input."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from traitspace.core.io import DataFileError
from traitspace.library import (
    ALIGNMENT_PREFIX,
    TRAIT_CATEGORIES,
    Role,
    Trait,
    TraitLibrary,
    TraitLibraryError,
    load_assistant_axis_folder,
    load_builtin_library,
    load_library_folder,
)

FIXTURE = Path(__file__).parent / "fixtures" / "assistant_axis_format"
REQUIRED_PERSONA_TRAITS = (
    "skeptical", "cautious", "curious", "introspective", "empathetic", "philosophical",
    "exploratory", "efficient", "concise", "closure_seeking", "avoidant", "literal",
    "deceptive", "sycophantic",
)  # fmt: skip


@pytest.fixture(scope="module")
def library() -> TraitLibrary:
    return load_builtin_library()


# ---------------------------------------------------------------------------------------------
# Built-in library schema


def test_builtin_counts(library):
    assert len(library.persona_traits) == 240
    assert len(library.alignment_traits) == 7
    assert len(library.roles) >= 60
    assert len(library.default_prompts) >= 5
    assert len(library.extraction_questions) >= 40
    assert len(library.projection_questions) >= 50


def test_builtin_persona_names_unique_snake_case_and_cover_required(library):
    names = library.persona_trait_names
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", n) for n in names)
    assert set(REQUIRED_PERSONA_TRAITS) <= set(names)


def test_builtin_persona_categories_are_balanced(library):
    counts = Counter(t.category for t in library.persona_traits)
    assert set(counts) == set(TRAIT_CATEGORIES)
    assert min(counts.values()) >= 30


def test_builtin_alignment_polarity(library):
    polarity = {t.name: t.polarity for t in library.alignment_traits}
    aligned = {"honest", "helpful", "harmless", "corrigible"}
    misaligned = {"power_seeking", "sycophantic", "deceptive"}
    assert polarity == {
        **dict.fromkeys(aligned, "positive"),
        **dict.fromkeys(misaligned, "negative"),
    }
    assert Counter(polarity.values()) == {"positive": 4, "negative": 3}


def test_builtin_every_trait_has_five_distinct_contrasting_prompts(library):
    for trait in library.persona_traits + library.alignment_traits:
        assert trait.definition.strip(), trait.name
        assert len(trait.positive) >= 5 and len(trait.negative) >= 5, trait.name
        assert len(set(trait.positive)) == len(trait.positive), trait.name
        assert len(set(trait.negative)) == len(trait.negative), trait.name
        assert not set(trait.positive) & set(trait.negative), trait.name
        for prompt in trait.positive + trait.negative:
            assert prompt.strip() == prompt and prompt, trait.name
            # Second person: the prompt addresses the assistant.
            assert re.search(r"\byou(r)?\b", prompt, re.IGNORECASE), (trait.name, prompt)


def test_builtin_contrast_pairs_are_matched_in_length(library):
    # Pairs that differ a lot in length would make the direction partly a "verbosity" direction.
    for trait in library.persona_traits + library.alignment_traits:
        for pos, neg in zip(trait.positive, trait.negative, strict=False):
            assert max(len(pos), len(neg)) / min(len(pos), len(neg)) < 1.6, (trait.name, pos, neg)


def test_builtin_no_prompt_shared_between_persona_traits(library):
    prompts = Counter(p for t in library.persona_traits for p in t.positive + t.negative)
    assert prompts.most_common(1)[0][1] == 1


def test_builtin_roles_and_default_prompts(library):
    assert all(isinstance(r, Role) for r in library.roles)
    assert len({r.name for r in library.roles}) == len(library.roles)
    for role in library.roles:
        assert len(role.prompts) >= 3, role.name
        assert len(set(role.prompts)) == len(role.prompts), role.name
        assert all(p.strip() for p in role.prompts), role.name
        assert any(p.startswith("You are ") for p in role.prompts), role.name
    assert all(p.strip() for p in library.default_prompts)
    assert len(set(library.default_prompts)) == len(library.default_prompts)
    assert {"pirate", "medieval_knight", "noir_detective", "stoic_philosopher", "con_artist",
            "kindergarten_teacher"} <= {r.name for r in library.roles}  # fmt: skip


def test_builtin_question_sets_are_disjoint_and_unique(library):
    extraction, projection = library.extraction_questions, library.projection_questions
    assert len(set(extraction)) == len(extraction)
    assert len(set(projection)) == len(projection)
    assert not set(extraction) & set(projection)

    # Also disjoint after normalising case and punctuation, so near-copies cannot leak across.
    def normalise(q: str) -> str:
        return re.sub(r"[^a-z0-9 ]", "", q.lower())

    assert not {normalise(q) for q in extraction} & {normalise(q) for q in projection}


def test_builtin_is_cached_and_immutable(library):
    assert load_builtin_library() is library
    with pytest.raises(AttributeError):
        library.roles = ()  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# TraitLibrary API


def test_all_traits_prefixes_alignment_names(library):
    names = [t.name for t in library.all_traits]
    assert len(names) == len(set(names)) == 247
    assert names[:240] == list(library.persona_trait_names)
    assert names[240:] == [ALIGNMENT_PREFIX + t.name for t in library.alignment_traits]
    persona = library.trait("sycophantic")
    aligned = library.trait("align_sycophantic")
    assert persona.polarity is None and aligned.polarity == "negative"
    assert persona.positive != aligned.positive
    assert (
        aligned.positive
        == next(t for t in library.alignment_traits if t.name == "sycophantic").positive
    )


def test_trait_lookup_unknown_name_lists_close_matches(library):
    assert library.trait("curious").name == "curious"
    with pytest.raises(KeyError, match=r"'skeptcal'.*skeptical"):
        library.trait("skeptcal")
    with pytest.raises(KeyError, match=r"'honest'.*align_honest"):
        library.trait("honest")
    with pytest.raises(KeyError, match=r"'zzzz'.*no close matches"):
        library.trait("zzzz")


def test_subset_keeps_given_order_and_everything_else(library):
    small = library.subset(["concise", "skeptical"])
    assert small.persona_trait_names == ("concise", "skeptical")
    assert small.alignment_traits == library.alignment_traits
    assert small.roles == library.roles
    assert small.extraction_questions == library.extraction_questions
    assert small.trait("skeptical") == library.trait("skeptical")
    with pytest.raises(KeyError, match=r"'curious'"):
        small.trait("curious")


def test_subset_rejects_unknown_and_repeated_names(library):
    with pytest.raises(KeyError, match=r"'curiuos'.*curious"):
        library.subset(["concise", "curiuos"])
    with pytest.raises(KeyError, match=r"'align_honest'"):
        library.subset(["align_honest"])
    with pytest.raises(ValueError, match=r"duplicate.*'concise'"):
        library.subset(["concise", "concise"])
    with pytest.raises(TypeError):
        library.subset("concise")


def test_role_lookup(library):
    assert library.role("pirate").name == "pirate"
    with pytest.raises(KeyError, match=r"'pirat'.*pirate"):
        library.role("pirat")


def test_library_rejects_duplicate_trait_names():
    trait = Trait(name="x", definition="d", positive=("You are x.",), negative=("You are not x.",))
    with pytest.raises(ValueError, match="duplicate trait name"):
        TraitLibrary((trait, trait), (), ("You are an assistant.",), (), ("q",), ("p",))


# ---------------------------------------------------------------------------------------------
# Published Assistant Axis format


def test_published_fixture_traits():
    library = load_assistant_axis_folder(FIXTURE)
    assert library.persona_trait_names == ("concise", "curious", "skeptical")
    assert library.alignment_traits == ()
    skeptical = library.trait("skeptical")
    raw = json.loads((FIXTURE / "traits" / "skeptical.json").read_text())
    assert skeptical.positive == tuple(pair["pos"] for pair in raw["instruction"])
    assert skeptical.negative == tuple(pair["neg"] for pair in raw["instruction"])
    assert skeptical.questions == tuple(raw["questions"])
    assert skeptical.eval_prompt == raw["eval_prompt"]
    assert "{question}" in skeptical.eval_prompt and "{answer}" in skeptical.eval_prompt
    # No "description" key: the definition is read from the judge prompt.
    assert skeptical.definition.startswith("A skeptical response questions claims")
    assert library.trait("curious").definition.startswith("Shows eager interest")


def test_published_fixture_roles_and_default():
    library = load_assistant_axis_folder(FIXTURE)
    assert [r.name for r in library.roles] == ["librarian", "pirate", "stoic_philosopher"]
    assert len(library.role("pirate").prompts) == 3
    assert library.default_prompts[0] == ""  # the release's "no system prompt" condition
    assert "You are {model_name}." in library.default_prompts
    assert len(library.default_prompts) == 5


def test_published_question_split_is_deterministic_disjoint_halves():
    library = load_assistant_axis_folder(FIXTURE)
    union = []
    for name in ("concise", "curious", "skeptical"):
        for q in json.loads((FIXTURE / "traits" / f"{name}.json").read_text())["questions"]:
            if q not in union:
                union.append(q)
    extraction, projection = library.extraction_questions, library.projection_questions
    assert len(union) == 14  # one question is shared by two trait files
    assert not set(extraction) & set(projection)
    assert set(extraction) | set(projection) == set(union)
    assert (len(extraction), len(projection)) == (7, 7)
    # Each half keeps the union order.
    assert list(extraction) == [q for q in union if q in extraction]
    again = load_assistant_axis_folder(FIXTURE)
    assert (again.extraction_questions, again.projection_questions) == (extraction, projection)


def test_published_split_does_not_depend_on_file_names(tmp_path):
    copy = _copy_fixture(tmp_path)
    (copy / "traits" / "concise.json").rename(copy / "traits" / "zz_concise.json")
    renamed = load_assistant_axis_folder(copy)
    original = load_assistant_axis_folder(FIXTURE)
    assert set(renamed.extraction_questions) == set(original.extraction_questions)


def test_published_nested_instructions_layout(tmp_path):
    root = tmp_path / "data"
    for part in ("traits", "roles"):
        shutil.copytree(FIXTURE / part, root / part / "instructions")
    nested = load_assistant_axis_folder(root)
    flat = load_assistant_axis_folder(FIXTURE)
    assert nested.persona_traits == flat.persona_traits
    assert nested.roles == flat.roles


def test_published_without_questions_uses_builtin_sets(tmp_path, library):
    copy = _copy_fixture(tmp_path)
    for file in (copy / "traits").glob("*.json"):
        data = json.loads(file.read_text())
        del data["questions"]
        file.write_text(json.dumps(data))
    loaded = load_assistant_axis_folder(copy)
    assert loaded.extraction_questions == library.extraction_questions
    assert loaded.projection_questions == library.projection_questions
    assert all(t.questions == () for t in loaded.persona_traits)


# ---------------------------------------------------------------------------------------------
# Malformed published input


def _copy_fixture(tmp_path: Path) -> Path:
    copy = tmp_path / "axis"
    shutil.copytree(FIXTURE, copy)
    return copy


def _edit_json(file: Path, edit) -> None:
    data = json.loads(file.read_text())
    edit(data)
    file.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        pytest.param(
            lambda d: d.pop("instruction"),
            r"missing key 'instruction'",
            id="missing-instruction",
        ),
        pytest.param(
            lambda d: d.update(instruction=[]),
            r"'instruction' is an empty list",
            id="empty-instruction",
        ),
        pytest.param(
            lambda d: d["instruction"][2].pop("neg"),
            r"instruction\[2\]: missing key 'neg'",
            id="missing-neg",
        ),
        pytest.param(
            lambda d: d["instruction"][0].update(pos="  "),
            r"instruction\[0\]: key 'pos' must be a non-empty string",
            id="blank-pos",
        ),
        pytest.param(
            lambda d: d.update(questions=[]),
            r"'questions' is an empty list",
            id="empty-questions",
        ),
        pytest.param(
            lambda d: d.update(eval_prompt=7),
            r"'eval_prompt' must be a non-empty string",
            id="eval-prompt-not-string",
        ),
    ],
)
def test_published_malformed_trait_names_file_and_key(tmp_path, edit, message):
    copy = _copy_fixture(tmp_path)
    _edit_json(copy / "traits" / "curious.json", edit)
    with pytest.raises(TraitLibraryError, match=r"curious\.json(:\d+)?: .*" + message):
        load_assistant_axis_folder(copy)


def test_published_bad_json_names_file_and_line(tmp_path):
    copy = _copy_fixture(tmp_path)
    (copy / "traits" / "skeptical.json").write_text('{\n  "instruction": [\n    {"pos": "x",,}\n')
    with pytest.raises(TraitLibraryError, match=r"skeptical\.json:3: invalid JSON"):
        load_assistant_axis_folder(copy)


def test_published_role_errors(tmp_path):
    copy = _copy_fixture(tmp_path)
    _edit_json(copy / "roles" / "pirate.json", lambda d: d["instruction"].append({"pos": ""}))
    with pytest.raises(TraitLibraryError, match=r"pirate\.json(:\d+)?: instruction\[3\]: key 'pos'"):
        load_assistant_axis_folder(copy)
    _edit_json(copy / "roles" / "pirate.json", lambda d: d["instruction"].append({"neg": "x"}))
    (copy / "roles" / "default.json").unlink()
    with pytest.raises(TraitLibraryError, match=r"default\.json: missing"):
        load_assistant_axis_folder(copy)


def test_published_missing_folders(tmp_path):
    with pytest.raises(TraitLibraryError, match="not a folder"):
        load_assistant_axis_folder(tmp_path / "nowhere")
    copy = _copy_fixture(tmp_path)
    shutil.rmtree(copy / "roles")
    with pytest.raises(TraitLibraryError, match=r"missing subfolder 'roles'"):
        load_assistant_axis_folder(copy)


# ---------------------------------------------------------------------------------------------
# Malformed YAML library (small hand-made folder in the built-in format)


def _write_yaml_library(folder: Path) -> dict[str, dict]:
    """Write a minimal valid YAML library into ``folder`` and return its documents for editing."""
    curious = {
        "name": "curious",
        "category": "epistemic",
        "definition": "Wants to know more.",
        "positive": ["You are curious.", "Be curious."],
        "negative": ["You are incurious.", "Be incurious."],
    }
    calm = {**curious, "name": "calm", "category": "emotional"}
    honest = {key: value for key, value in curious.items() if key != "category"}
    honest.update(name="honest", polarity="positive")
    documents = {
        "persona_traits.yaml": {"traits": [curious, calm]},
        "alignment_traits.yaml": {"traits": [honest]},
        "roles.yaml": {
            "default": ["You are an AI assistant."],
            "roles": [{"name": "pirate", "prompts": ["You are a pirate."]}],
        },
        "questions.yaml": {"extraction": ["How are you?"], "projection": ["What is new?"]},
    }
    folder.mkdir(parents=True, exist_ok=True)
    for filename, doc in documents.items():
        (folder / filename).write_text(yaml.safe_dump(doc, sort_keys=False))
    return documents


def _rewrite(folder: Path, filename: str, doc: dict) -> None:
    (folder / filename).write_text(yaml.safe_dump(doc, sort_keys=False))


def test_yaml_minimal_library_loads(tmp_path):
    _write_yaml_library(tmp_path)
    library = load_library_folder(tmp_path)
    assert library.persona_trait_names == ("curious", "calm")
    assert library.trait("align_honest").polarity == "positive"
    assert library.trait("calm").category == "emotional"


@pytest.mark.parametrize(
    ("filename", "edit", "message"),
    [
        pytest.param(
            "persona_traits.yaml",
            lambda d: d["traits"][1].pop("negative"),
            r"traits\[1\] \('calm'\): missing key 'negative'",
            id="missing-negative",
        ),
        pytest.param(
            "persona_traits.yaml",
            lambda d: d["traits"][0].update(positive=[]),
            r"traits\[0\] \('curious'\): key 'positive' is an empty list",
            id="empty-positive",
        ),
        pytest.param(
            "persona_traits.yaml",
            lambda d: d["traits"][0].update(positive=["You are curious.", ""]),
            r"\('curious'\): positive\[1\] must be a non-empty string",
            id="blank-prompt",
        ),
        pytest.param(
            "persona_traits.yaml",
            lambda d: d["traits"][0].update(negative=["You are curious."]),
            r"\('curious'\): prompt appears in both",
            id="prompt-on-both-sides",
        ),
        pytest.param(
            "persona_traits.yaml",
            lambda d: d["traits"][0].update(negative=["Be dull.", "Be dull."]),
            r"\('curious'\): negative\[1\] repeats",
            id="repeated-prompt",
        ),
        pytest.param(
            "persona_traits.yaml",
            lambda d: d["traits"][1].update(name="curious"),
            r"traits\[1\] \('curious'\): duplicate trait name",
            id="duplicate-name",
        ),
        pytest.param(
            "persona_traits.yaml",
            lambda d: d["traits"][1].update(name="Calm Mind"),
            r"key 'name' must be snake_case",
            id="name-not-snake-case",
        ),
        pytest.param(
            "persona_traits.yaml",
            lambda d: d["traits"][1].update(postive=["x"]),
            r"\('calm'\): unknown key 'postive'",
            id="misspelt-key",
        ),
        pytest.param(
            "persona_traits.yaml",
            lambda d: d["traits"][1].update(category="vibes"),
            r"key 'category' is 'vibes'",
            id="unknown-category",
        ),
        pytest.param(
            "persona_traits.yaml",
            lambda d: d.pop("traits"),
            r"top level: missing key 'traits'",
            id="missing-traits",
        ),
        pytest.param(
            "alignment_traits.yaml",
            lambda d: d["traits"][0].update(polarity="neutral"),
            r"\('honest'\): key 'polarity' is 'neutral'",
            id="bad-polarity",
        ),
        pytest.param(
            "alignment_traits.yaml",
            lambda d: d["traits"][0].pop("polarity"),
            r"\('honest'\): missing key 'polarity'",
            id="missing-polarity",
        ),
        pytest.param(
            "roles.yaml",
            lambda d: d.update(default=[]),
            r"top level: key 'default' is an empty list",
            id="empty-default",
        ),
        pytest.param(
            "roles.yaml",
            lambda d: d["roles"][0].update(prompts=[""]),
            r"roles\[0\] \('pirate'\): prompts\[0\] must be a non-empty string",
            id="blank-role-prompt",
        ),
        pytest.param(
            "questions.yaml",
            lambda d: d.update(projection=["How are you?"]),
            r"projection\[0\] is also listed under 'extraction'",
            id="overlapping-questions",
        ),
    ],
)
def test_yaml_malformed_names_file_and_key(tmp_path, filename, edit, message):
    documents = _write_yaml_library(tmp_path)
    edit(documents[filename])
    _rewrite(tmp_path, filename, documents[filename])
    with pytest.raises(TraitLibraryError, match=re.escape(filename) + r":\d+: .*" + message):
        load_library_folder(tmp_path)


def test_yaml_bad_syntax_names_file_and_line(tmp_path):
    _write_yaml_library(tmp_path)
    (tmp_path / "roles.yaml").write_text(
        "default:\n  - You are an AI assistant.\nroles: [unclosed\n"
    )
    with pytest.raises(TraitLibraryError, match=r"roles\.yaml:\d+: invalid YAML"):
        load_library_folder(tmp_path)


def test_yaml_missing_file_is_named(tmp_path):
    _write_yaml_library(tmp_path)
    (tmp_path / "questions.yaml").unlink()
    with pytest.raises(TraitLibraryError, match=r"questions\.yaml: file not found"):
        load_library_folder(tmp_path)


def test_yaml_error_gives_file_line_and_key(tmp_path):
    documents = _write_yaml_library(tmp_path)
    documents["persona_traits.yaml"]["traits"][1]["postive"] = ["You are calm."]
    _rewrite(tmp_path, "persona_traits.yaml", documents["persona_traits.yaml"])
    lines = (tmp_path / "persona_traits.yaml").read_text().splitlines()
    expected_line = next(number for number, text in enumerate(lines, 1) if "postive" in text)
    with pytest.raises(TraitLibraryError) as caught:
        load_library_folder(tmp_path)
    error = caught.value
    assert isinstance(error, DataFileError)
    assert (Path(error.path).name, error.line, error.key) == ("persona_traits.yaml", expected_line, "postive")
    assert str(error).endswith(f"persona_traits.yaml:{expected_line}: traits[1] ('calm'): unknown key 'postive'")
