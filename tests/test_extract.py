"""Trait-vector extraction on tiny models, end to end: shared-prefix capture, the plan, stored
vectors and metadata, the stage cache, TraitVectors, response mode with a judge."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors import safe_open

from traitspace import extract
from traitspace.core import prefix_cache
from traitspace.core.config import ConfigError, ExtractSection, load_config
from traitspace.core.hooks import capture_conversations
from traitspace.core.prefix_cache import PrefixGroup
from traitspace.library import load_builtin_library

SMALL = {
    "extract.traits": ["cheerful", "calm"],
    "extract.include_alignment": False,
    "extract.n_instruction_pairs": 2,
    "extract.n_questions": 3,
    "extract.n_roles": 3,
    "extract.n_role_prompts": 1,
    "extract.n_default_prompts": 1,
    "extract.batch_size": 32,
}


def _config(tmp_path, model_dir, **overrides):
    params = tmp_path / "params.yaml"
    params.write_text(f"run:\n  name: t\n  output_root: {tmp_path / 'outputs'}\nmodel:\n  source: {model_dir}\n")
    return load_config(params, {**SMALL, **overrides})


def test_shared_prefix_capture_equals_plain_capture(tiny_loaded):
    chat = tiny_loaded.chat
    conversations = [chat.conversation(question, system=system)
                     for system in ("You are kind.", "You are curious and cautious about code.", None)
                     for question in ("Hi?", "What is the capital of France?", "Why?")]
    conversations.append(chat.conversation("A lone question."))
    for pooling, layers in (("last_prompt", "all"), ("prompt", [0, 2])):
        counts = extract.CaptureCounts()
        # batch_size=4 splits a group of 3 across batches next to other groups: padding is exercised.
        shared = extract.capture_shared_prefixes(tiny_loaded, conversations, layers, pooling, batch_size=4, counts=counts)
        plain = capture_conversations(tiny_loaded, conversations, layers, pooling, batch_size=4)
        assert sorted(shared) == sorted(plain)
        for layer in plain:
            torch.testing.assert_close(shared[layer], plain[layer], atol=1e-5, rtol=1e-4)
        assert counts.tokens_run < counts.tokens_plain  # the shared prefixes were run once


def test_prefix_helpers_and_the_no_prefix_path(tiny_llama, monkeypatch):
    assert prefix_cache.common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert prefix_cache.common_prefix_length([[5, 1], [6, 1]]) == 0
    assert prefix_cache.shared_prefix_length([[1, 2], [1, 2, 3]]) == 1  # every member keeps a token of its own
    # Groups without a shared prefix are never batched with prefixed ones.
    groups = [PrefixGroup([0], 0), PrefixGroup([1, 2], 5), PrefixGroup([3], 7)]
    assert prefix_cache.pack_groups(groups, max_groups=4) == [[([0], 0)], [([1, 2], 5), ([3], 7)]]
    # Forcing "no shared prefix" runs every prompt whole (right-padded): still the plain result.
    conversations = [tiny_llama.chat.conversation(question, system="You are kind.") for question in ("Hi?", "Why is the sky blue?")]
    plain = capture_conversations(tiny_llama, conversations, "all", "last_prompt")
    monkeypatch.setattr(prefix_cache, "common_prefix_length", lambda sequences: 0)
    counts = extract.CaptureCounts()
    shared = extract.capture_shared_prefixes(tiny_llama, conversations, "all", "last_prompt", counts=counts)
    # No prefix pass ran; the two prompts differ in length beyond the padding budget: one pass each.
    assert counts.tokens_run == counts.tokens_plain and counts.forward_passes == 2
    for layer in plain:
        torch.testing.assert_close(shared[layer], plain[layer], atol=1e-5, rtol=1e-4)


def test_prefix_engine_groups_positions_and_masks():
    # Neighbour runs (the sampler): runs need min_shared common tokens; a run of one shares nothing.
    sequences = [[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9], [7, 8]]
    assert prefix_cache.neighbour_groups(sequences, [0, 1, 2, 3], min_shared=3) == [([0, 1], 3), ([2], 0), ([3], 0)]
    assert prefix_cache.neighbour_groups(sequences, [0, 1, 2, 3], min_shared=2) == [([0, 1, 2], 2), ([3], 0)]
    # Grouping by key (extraction): members ordered by what remains, groups by prefix length.
    groups = prefix_cache.groups_by_key([[1, 2, 3, 4, 5], [1, 2, 3], [6, 7], [9]], ["a", "a", "b", "c"], max_members=8)
    assert groups == [([3], 0), ([2], 1), ([1, 0], 2)]  # a lone member still shares all but its last token
    # Continuations go on after their own prefix row: positions, [prefix mask, own mask].
    prefix = prefix_cache.SharedPrefix([[1, 2, 3], [4]], pad_token_id=0)
    assert prefix.mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    prefix.cache = SimpleNamespace(layers=[])  # no model here: only the inputs are checked
    right = prefix_cache.continuation([[5, 6], [7]], 0, "right", prefix, rows=[1, 0])
    assert right.inputs["input_ids"].tolist() == [[5, 6], [7, 0]]
    assert right.inputs["position_ids"].tolist() == [[1, 2], [3, 4]]
    assert right.inputs["attention_mask"].tolist() == [[1, 0, 0, 1, 1], [1, 1, 1, 1, 0]]
    left = prefix_cache.continuation([[5, 6], [7]], 0, "left", prefix, rows=[0, 0])
    assert left.inputs["position_ids"].tolist() == [[3, 4], [3, 3]] and left.offsets == [0, 1]
    alone = prefix_cache.continuation([[5, 6], [7]], 0, "left")
    assert alone.cache is None and alone.inputs["position_ids"].tolist() == [[0, 1], [0, 0]]


def test_member_passes_sort_members_of_all_groups_by_length_and_bound_rows_and_padding():
    # Two groups (slots 0 and 1); remaining[m] = tokens after m's prefix. Rows of a pass come from any
    # group, shortest first, so a pass pads only between neighbours in length.
    batch = [PrefixGroup([0, 1, 2], 4), PrefixGroup([3, 4], 2)]
    remaining = {0: 9, 1: 2, 2: 5, 3: 3, 4: 8}
    loose = prefix_cache.member_passes(batch, remaining, max_rows=2, max_padding=1.0)
    assert loose == [[(0, 1), (1, 3)], [(0, 2), (1, 4)], [(0, 0)]]
    # The default budget (10% padding) splits 2|3 and 5|8 but runs 8 and 9 together.
    assert prefix_cache.member_passes(batch, remaining, max_rows=5) == [[(0, 1)], [(1, 3)], [(0, 2)], [(1, 4), (0, 0)]]
    with pytest.raises(ValueError, match="max_items"):
        prefix_cache.member_passes(batch, remaining, max_rows=0)


def test_shared_prefix_capture_rejects_answers(tiny_llama):
    conversation = tiny_llama.chat.conversation("Hi?", assistant="Hello.")
    with pytest.raises(ValueError, match="ends with an answer"):
        extract.capture_shared_prefixes(tiny_llama, [conversation])


def test_plan_pairs_sides_and_holds_out_the_same_questions():
    library = load_builtin_library()
    settings = ExtractSection(traits=["cheerful"], include_alignment=True, n_instruction_pairs=2, n_questions=6,
                              heldout_fraction=1 / 3, n_roles=4, n_role_prompts=2, seed=5)
    plan = extract.build_plan(library, settings)
    alignment = [trait.name for trait in library.all_traits[len(library.persona_traits):]]
    controls = [trait.name for trait in extract.load_control_pairs()]
    assert len(controls) >= 3 and all(name.startswith(extract.CONTROL_PREFIX) for name in controls)
    assert list(plan["owner"].unique()) == ["cheerful", *alignment, *controls, extract.AXIS_NAME]
    control = plan[plan["owner"] == controls[0]]
    assert (control["kind"] == extract.CONTROL_KIND).all() and len(control) == 2 * 2 * 6  # same shape as a trait
    cheerful = plan[plan["owner"] == "cheerful"]
    assert len(cheerful) == 2 * 2 * 6
    assert set(cheerful[cheerful["side"] == "positive"]["system"]) == set(library.trait("cheerful").positive[:2])
    heldout_questions = set(plan.loc[plan["heldout"], "question"])
    assert len(heldout_questions) == 2
    for _, rows in plan.groupby("owner"):
        assert set(rows.loc[rows["heldout"], "question"]) == heldout_questions
    axis = plan[plan["owner"] == extract.AXIS_NAME]
    assert axis.loc[axis["side"] == "role", "group"].nunique() == 4
    assert len(axis[axis["side"] == "default"]) == (len(library.default_prompts) + 1) * 6  # + the model's default
    assert axis.loc[axis["side"] == "default", "system"].isna().sum() == 6


def test_unknown_trait_name_is_rejected_at_load(tmp_path, tiny_model_dirs):
    with pytest.raises(ConfigError) as error:
        _config(tmp_path, tiny_model_dirs["llama"], **{"extract.traits": ["cheerful", "cheerfull", "not_a_trait"]})
    message = str(error.value)
    assert "extract.traits" in message and "'cheerfull'" in message and "'not_a_trait'" in message
    assert "cheerful" in message.split("'cheerfull'")[1]  # the close match is suggested
    with pytest.raises(ConfigError, match="extract.n_questions"):
        _config(tmp_path, tiny_model_dirs["llama"], **{"extract.n_questions": 1000})


def test_extraction_end_to_end_and_cache_hit(tmp_path, tiny_model_dirs, tiny_llama, monkeypatch):
    config = _config(tmp_path, tiny_model_dirs["llama"])
    vectors = extract.run_extraction(config, loaded=tiny_llama, progress=False)
    folder = config.run_dir / "traits"
    num_layers, hidden = tiny_llama.num_layers, tiny_llama.hidden_size

    # Vectors: one [L, H] tensor per trait plus the axis, in stored order; the control contrasts are
    # scored but never stored as vectors (projection uses every stored name).
    assert vectors.names == ["cheerful", "calm", extract.AXIS_NAME]
    controls = vectors.controls
    assert list(controls["trait"]) == [trait.name for trait in extract.load_control_pairs()]
    assert (controls["kind"] == extract.CONTROL_KIND).all() and controls["auroc_heldout_instructions"].between(0, 1).all()
    assert not set(controls["trait"]) & set(vectors.names)
    assert all(tensor.shape == (num_layers, hidden) for tensor in vectors.vectors.values())
    with safe_open(str(folder / "vectors.safetensors"), framework="pt") as handle:
        header = handle.metadata()
        assert set(handle.keys()) == {"cheerful", "calm", extract.AXIS_NAME}
    assert header["model_source"] == str(tiny_model_dirs["llama"])
    assert "output of decoder block i" in header["layer_convention"]
    assert json.loads(header["mode"]) == "prompt" and json.loads(header["pooling"]) == "last_prompt"

    # Metadata table: every vector, chosen layer, separation, counts.
    table = vectors.metadata
    assert list(table["kind"]) == ["persona", "persona", "axis"]
    assert set(extract.METADATA_COLUMNS) <= set(table.columns)
    assert table["layer"].nunique() == 1  # shared layer scope
    assert table["auroc_heldout_questions"].between(0, 1).all()
    # 2 pairs x 2 sides x 2 fitting questions; held out: 2 pairs x 2 sides x 1 question
    assert table.loc["cheerful", "n_prompts"] == 8 and table.loc["cheerful", "n_heldout"] == 4
    # Held-out instructions: 2 folds (one per pair), each scored on 1 pair x 2 sides x 1 question.
    assert table.loc["cheerful", "n_instruction_folds"] == 2 and table.loc["cheerful", "n_heldout_instructions"] == 4
    assert table.loc["cheerful", "auroc_heldout_instructions"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert np.isnan(table.loc[extract.AXIS_NAME, "auroc_heldout_instructions"])  # the axis has no pairs
    assert table.loc[extract.AXIS_NAME, "cos_assistant_axis"] == pytest.approx(1.0)
    np.testing.assert_allclose(table.loc["calm", "norm"], vectors.vector("calm").norm().item(), rtol=1e-5)
    for name in ("metadata.csv", "metadata.parquet", "separation_by_layer.csv", "heldout_projections.csv",
                 "plan.csv", "controls.csv", "instruction_folds.csv", "manifest.json"):
        assert (folder / name).is_file(), name
    folds = extract.read_instruction_folds(folder)
    assert set(folds["heldout_pair"]) == {0, 1} and folds["layer"].notna().all()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["n_traits"] == 2 and manifest["n_controls"] == len(controls)
    assert manifest["n_separating_heldout_questions"] == len(vectors.separating("questions"))
    assert manifest["n_separating_heldout_instructions"] == len(vectors.separating("instructions"))
    best = controls["auroc_heldout_instructions"].max()
    assert manifest["best_control_auroc_heldout_instructions"] == pytest.approx(best, abs=1e-4)
    assert manifest["n_beating_best_control_heldout_instructions"] == int(
        (table.loc[["cheerful", "calm"], "auroc_heldout_instructions"] > best).sum())
    assert manifest["params_hash"] == config.params_hash("model", "extract")
    assert manifest["tokens_run"] < manifest["tokens_without_prefix_sharing"]

    # Plain batched capture (no prefix sharing) gives the same vectors.
    plain = extract.extract_vectors(tiny_llama, config.extract.model_copy(update={"share_prefixes": False}), progress=False)
    for name in vectors.names:
        np.testing.assert_allclose(plain.vectors[name], vectors.vectors[name].numpy(), rtol=1e-4, atol=1e-6)

    # A rerun with the same params touches no model: loading or extracting would raise.
    def no_work(*_args, **_kwargs):
        raise AssertionError("cache miss: the model was used")

    monkeypatch.setattr("traitspace.core.models.load_model", no_work)
    monkeypatch.setattr("traitspace.extract.stage.extract_vectors", no_work)
    again = extract.run_extraction(load_config(config.params_path, SMALL), progress=False)
    for name in vectors.names:
        torch.testing.assert_close(again.vectors[name], vectors.vectors[name])
    # Different extract params are a different stage hash, so they would be recomputed.
    changed = _config(tmp_path, tiny_model_dirs["llama"], **{"extract.n_questions": 4})
    assert extract.stage_hash(changed) != extract.stage_hash(config)
    with pytest.raises(AssertionError, match="cache miss"):
        extract.run_extraction(changed, progress=False)


def test_trait_vectors_api(tmp_path, tiny_model_dirs, tiny_llama):
    config = _config(tmp_path, tiny_model_dirs["llama"], **{"extract.layer_scope": "per_trait"})
    vectors = extract.run_extraction(config, loaded=tiny_llama, progress=False)
    loaded_back = extract.load_trait_vectors(config.run_dir)  # a run folder works as well as the file
    assert loaded_back.names == vectors.names
    assert extract.load_outputs(config.run_dir).names == vectors.names  # the loader later stages use
    with pytest.raises(FileNotFoundError, match="notebook 02"):
        extract.load_outputs(tmp_path / "no_run")
    # Notebook 02's figures are drawn by the stage's plot functions into its folder and listed by the loader.
    assert loaded_back.figures == []
    folder = config.run_dir / "traits"
    extract.plot_separation_by_layer(extract.read_separation(folder), vectors.info["shared_layer"], folder)
    assert extract.load_outputs(config.run_dir).figures == [folder / "separation_by_layer.png"]

    layer = vectors.layer_of("cheerful")
    unit = vectors.unit("cheerful")
    assert unit.shape == (tiny_llama.hidden_size,) and unit.norm().item() == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(vectors.unit("cheerful", layer=0), vectors.vectors["cheerful"][0] / vectors.vectors["cheerful"][0].norm())
    matrix = vectors.unit_matrix(["cheerful", "calm"], layers=1)
    assert matrix.shape == (2, tiny_llama.hidden_size)
    torch.testing.assert_close(matrix[1], vectors.unit("calm", 1))
    assert vectors.unit_matrix().shape[0] == 2  # default: every trait, the axis left out
    with pytest.raises(KeyError, match="close matches: cheerful"):
        vectors.unit("cheerfull")

    activations = {layer: torch.randn(5, tiny_llama.hidden_size) for layer in vectors.layers_needed()}
    scores = vectors.project(activations)
    assert list(scores.columns) == vectors.names and scores.shape == (5, 3)
    expected = activations[layer] @ vectors.unit("cheerful")
    np.testing.assert_allclose(scores["cheerful"], expected.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(KeyError, match="needs layer"):
        vectors.project({}, ["cheerful"])


def test_response_mode_with_judge(tmp_path, tiny_model_dirs, tiny_llama):
    config = _config(tmp_path, tiny_model_dirs["llama"], **{
        "extract.mode": "response", "extract.max_new_tokens": 6, "extract.traits": ["cheerful"],
        "extract.n_questions": 4, "extract.heldout_fraction": 0.5,
    })
    settings = config.extract
    questions, heldout = extract.extraction_questions(load_builtin_library(), settings)
    fitting = [index for index in range(len(questions)) if index not in heldout]
    # The judge "sees the trait" in answers to one fitting and one held-out question only, so each
    # side keeps fitting and held-out answers (positive: those two questions; negative: the others).
    expressive = {questions[fitting[0]], questions[min(heldout)]}
    judged = []

    def question_judge(trait, asked, answers):
        judged.append(trait.name)
        assert len(asked) == len(answers)
        return [90.0 if question in expressive else 10.0 for question in asked]

    filtered = extract.extract_vectors(tiny_llama, settings, judge=question_judge, progress=False)
    assert filtered.info["pooling"] == "response"
    # The controls go through the judge exactly as the trait does; the axis is never judged.
    assert judged == ["cheerful", *(trait.name for trait in extract.load_control_pairs())]
    responses = filtered.responses
    assert len(responses) == len(filtered.plan) and (responses["answer"].str.len() > 0).any()
    axis_rows = responses[responses["owner"] == extract.AXIS_NAME]
    assert axis_rows["kept"].all() and axis_rows["judge_score"].isna().all()
    rows = responses[responses["owner"] == "cheerful"]
    expresses = rows["question"].isin(expressive)
    assert (rows["kept"] == np.where(rows["side"] == "positive", expresses, ~expresses)).all()
    assert filtered.metadata.set_index("trait").loc["cheerful", "n_dropped_by_judge"] == (~rows["kept"]).sum() == len(rows) // 2
    assert filtered.vectors["cheerful"].shape == (tiny_llama.num_layers, tiny_llama.hidden_size)

    prompt_config = _config(tmp_path, tiny_model_dirs["llama"])
    with pytest.raises(ValueError, match="needs extract.mode: response"):
        extract.run_extraction(prompt_config, loaded=tiny_llama, judge=question_judge, progress=False)
