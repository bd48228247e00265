"""Do trait directions generalise beyond their instructions? Held-out instruction folds on planted
activations (a direction tied to its own prompts passes held-out questions and fails held-out
instructions), the folds' hygiene (test rows never fit the direction or pick the layer), one
instruction pair (nan, said so), the control contrasts, and a published-format library folder run
through the stage from params."""

import json

import numpy as np
import pandas as pd
import pytest

from traitspace import extract
from traitspace.core.config import ConfigError, ExtractSection, load_config

N_LAYERS, HIDDEN = 3, 12
COMMON = 11  # the hidden unit a shared trait direction uses (pairs use units 0 .. n_pairs - 1)


def _rows(owner: str, kind: str, n_pairs: int, n_questions: int, heldout: set[int]) -> pd.DataFrame:
    sides = ("default", "role") if kind == "axis" else ("positive", "negative")
    return pd.DataFrame([
        {"owner": owner, "kind": kind, "side": side, "group": side, "prompt_index": pair,
         "system": f"{owner} {side} {pair}", "question_index": question, "question": f"q{question}",
         "heldout": question in heldout}
        for side in sides for pair in range(n_pairs) for question in range(n_questions)
    ])


def _activations(rows: pd.DataFrame, rule: str, rng: np.random.Generator, question_offsets: np.ndarray) -> np.ndarray:
    """``[n, L, H]``: noise plus a per-question offset (shared by both sides) plus the planted signal,
    +1 on the positive side and -1 on the negative one, along
    - ``pair_specific``: the pair's own unit (each instruction pair moves its own direction);
    - ``shared``: a unit common to every pair, plus the pair's own;
    - ``none``: nothing (a control that does not separate)."""
    sign = np.where(rows["side"].isin(["positive", "default"]), 1.0, -1.0)
    signal = np.zeros((len(rows), HIDDEN))
    pairs = rows["prompt_index"].to_numpy()
    if rule in ("pair_specific", "shared"):
        signal[np.arange(len(rows)), pairs] = sign
    if rule == "shared":
        signal[:, COMMON] += sign
    base = signal + question_offsets[rows["question_index"].to_numpy()]
    return base[:, None, :] + 0.3 * rng.standard_normal((len(rows), N_LAYERS, HIDDEN))


def _planted(n_pairs: int = 3, n_questions: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    heldout = set(range(0, n_questions, 2))
    offsets = 0.2 * rng.standard_normal((n_questions, HIDDEN))
    owners = {"pair_specific": ("persona", "pair_specific"), "shared": ("persona", "shared"),
              "control_noise": ("control", "none"), extract.AXIS_NAME: ("axis", "shared")}
    data = {}
    for name, (kind, rule) in owners.items():
        rows = _rows(name, kind, n_pairs, n_questions, heldout)
        data[name] = (rows, _activations(rows, rule, rng, offsets))
    return data


def _fit(data, settings: ExtractSection):
    fitted = {name: extract.fit_owner(name, rows, acts, np.ones(len(rows), bool), settings.heldout_fraction, settings.seed)
              for name, (rows, acts) in data.items()}
    return extract.choose_layers(fitted, {}, settings, N_LAYERS)


@pytest.mark.parametrize("scope", ["shared", "per_trait"])
def test_a_direction_tied_to_its_own_instructions_fails_held_out_instructions(scope):
    settings = ExtractSection(layer_scope=scope, heldout_fraction=0.5)
    choice = _fit(_planted(), settings)
    table = choice.metadata.set_index("trait")
    # The planted case: every pair moves its own direction. Held-out questions under the same prompts
    # separate perfectly; prompts never seen do not.
    assert table.loc["pair_specific", "separates_heldout_questions"]
    assert table.loc["pair_specific", "auroc_heldout_questions"] > 0.95
    assert not table.loc["pair_specific", "separates_heldout_instructions"]
    assert table.loc["pair_specific", "auroc_heldout_instructions"] < 0.8
    # A direction shared by every pair passes both; the noise control passes neither.
    assert table.loc["shared", "separates_heldout_questions"] and table.loc["shared", "separates_heldout_instructions"]
    assert table.loc["shared", "auroc_heldout_instructions"] > 0.95
    assert not table.loc["control_noise", "separates_heldout_instructions"]
    # 3 folds (one per pair), each scored on 1 pair x 5 held-out questions x 2 sides.
    assert table.loc["shared", "n_instruction_folds"] == 3 and table.loc["shared", "n_heldout_instructions"] == 30
    assert np.isnan(table.loc[extract.AXIS_NAME, "auroc_heldout_instructions"])
    folds = choice.instruction_folds
    assert sorted(folds.loc[folds["trait"] == "shared", "heldout_pair"]) == [0, 1, 2]
    assert (folds["n_test_positive"] == 5).all() and (folds["n_test_negative"] == 5).all()
    if scope == "shared":  # one layer per fold for every vector, chosen by the real traits only
        assert (folds.groupby("heldout_pair")["layer"].nunique() == 1).all()

    metadata = choice.metadata
    counts = extract.validity_counts(metadata[metadata["kind"] != "control"], metadata[metadata["kind"] == "control"])
    assert counts["n_traits"] == 2 and counts["n_controls"] == 1
    assert counts["n_separating_heldout_questions"] == 2
    assert counts["n_separating_heldout_instructions"] == 1
    best = table.loc["control_noise", "auroc_heldout_instructions"]
    assert counts["n_beating_best_control_heldout_instructions"] == int(
        (table.loc[["pair_specific", "shared"], "auroc_heldout_instructions"] > best).sum())


def test_fold_rows_that_score_never_fit_the_direction_or_pick_the_layer():
    settings = ExtractSection(heldout_fraction=0.5)
    rows, acts = _planted()["shared"]
    usable, positive = np.ones(len(rows), bool), (rows["side"] == "positive").to_numpy()

    def fold_zero(activations):
        folds = extract.instruction_folds(rows, activations, usable, positive, settings.heldout_fraction, settings.seed)
        return next(fold for fold in folds if fold.heldout_pair == 0)

    reference = fold_zero(acts)
    pair, heldout = rows["prompt_index"].to_numpy(), rows["heldout"].to_numpy()
    noise = np.random.default_rng(1).standard_normal(acts.shape) * 5

    def changed(mask):
        return fold_zero(np.where(mask[:, None, None], acts + noise, acts))

    # Rows fold 0 must not read at all: its own pair's fitting questions, other pairs' held-out questions.
    unused = changed(((pair == 0) & ~heldout) | ((pair != 0) & heldout))
    pd.testing.assert_frame_equal(unused.inner, reference.inner)
    pd.testing.assert_frame_equal(unused.test, reference.test)
    # Its test rows change the test score only, never the inner rows that choose the layer.
    scored = changed((pair == 0) & heldout)
    pd.testing.assert_frame_equal(scored.inner, reference.inner)
    assert not scored.test["auroc"].equals(reference.test["auroc"]) or not scored.test["mean_gap"].equals(reference.test["mean_gap"])
    # Its training rows do move the inner choice (the check above could fail).
    trained = changed((pair == 1) & ~heldout)
    assert not np.allclose(trained.inner["mean_gap"], reference.inner["mean_gap"])


def test_one_instruction_pair_reports_nan_and_says_why(tmp_path):
    settings = ExtractSection(n_instruction_pairs=1, heldout_fraction=0.5)
    choice = _fit(_planted(n_pairs=1), settings)
    table = choice.metadata.set_index("trait")
    assert table["auroc_heldout_instructions"].isna().all() and (table["n_instruction_folds"] == 0).all()
    assert not table["separates_heldout_instructions"].any()
    assert table.loc["shared", "separates_heldout_questions"]
    assert choice.instruction_folds.empty
    # Through the stored file and the report: the count is "no value", with the reason.
    is_control = (choice.metadata["kind"] == "control").to_numpy()
    extraction = extract.Extraction(
        vectors={name: np.zeros((N_LAYERS, HIDDEN), np.float32) + 1 for name in ("pair_specific", "shared", extract.AXIS_NAME)},
        metadata=choice.metadata[~is_control].reset_index(drop=True), controls=choice.metadata[is_control].reset_index(drop=True),
        separation=choice.separation, heldout_projections=choice.heldout_projections, plan=pd.DataFrame(),
        instruction_folds=choice.instruction_folds, info={"instruction_note": extract.crossval.NO_FOLDS_NOTE, "instruction_folds": 0},
    )
    extract.save_extraction(extraction, tmp_path, {"source": "planted"}, "hash")
    vectors = extract.load_trait_vectors(tmp_path)
    assert vectors.names == ["pair_specific", "shared", extract.AXIS_NAME]
    assert list(vectors.controls["trait"]) == ["control_noise"]
    validity = extract.validity_table(vectors, 0.8)
    assert validity.loc["held-out instructions", "n_traits"] == 0
    assert validity.loc["held-out questions", "n_separating"] == 2
    summary = extract.validation_summary(vectors, 0.8)
    assert "held-out instructions: no value" in summary and "at least 2 instruction pairs" in summary
    assert vectors.separating("instructions") == [] and vectors.separating("questions") == ["pair_specific", "shared"]


def _published_folder(root, n_pairs: int = 3):
    """A tiny library in the published Assistant Axis layout, written here."""
    (root / "traits").mkdir(parents=True)
    (root / "roles").mkdir()
    for name, words in (("alpha", ("brave", "timid")), ("beta", ("tidy", "messy"))):
        document = {
            "instruction": [{"pos": f"You are {words[0]}, way {index}.", "neg": f"You are {words[1]}, way {index}."}
                            for index in range(n_pairs)],
            "questions": [f"{name} question {index}?" for index in range(4)],
            "eval_prompt": f"Does the answer show **{name}**. Being {words[0]}.",
        }
        (root / "traits" / f"{name}.json").write_text(json.dumps(document))
    (root / "roles" / "default.json").write_text(json.dumps({"instruction": [{"pos": ""}, {"pos": "You are a helpful assistant."}]}))
    for role in ("sailor", "gardener"):
        (root / "roles" / f"{role}.json").write_text(json.dumps({"instruction": [{"pos": f"You are a {role}."}]}))
    return root


def _folder_config(tmp_path, model_dir, folder, **overrides):
    params = tmp_path / "params.yaml"
    params.write_text(f"run:\n  name: t\n  output_root: {tmp_path / 'outputs'}\nmodel:\n  source: {model_dir}\n")
    return load_config(params, {"extract.library": str(folder), "extract.n_instruction_pairs": 3, "extract.n_questions": 4,
                                "extract.heldout_fraction": 0.5, "extract.batch_size": 32, **overrides})


def test_a_published_format_folder_runs_through_the_stage_from_params(tmp_path, tiny_model_dirs, tiny_llama):
    folder = _published_folder(tmp_path / "library")
    config = _folder_config(tmp_path, tiny_model_dirs["llama"], folder)
    vectors = extract.run_extraction(config, loaded=tiny_llama, progress=False)
    assert vectors.names == ["alpha", "beta", extract.AXIS_NAME] and vectors.info["library"] == str(folder)
    assert vectors.metadata.loc["alpha", "n_instruction_folds"] == 3  # its own three instruction pairs
    assert len(vectors.controls) == len(extract.load_control_pairs())  # the built-in controls still run
    plan = pd.read_csv(config.run_dir / "traits" / "plan.csv")
    alpha = plan[(plan["owner"] == "alpha") & (plan["side"] == "positive")]
    assert sorted(alpha["system"].unique()) == [f"You are brave, way {index}." for index in range(3)]
    defaults = plan[plan["side"] == "default"]
    assert defaults["system"].isna().sum() == 4  # "" is the model's default: one condition, 4 questions
    assert set(plan.loc[plan["side"] == "role", "group"]) == {"sailor", "gardener"}
    assert "2 traits" in extract.plan_overview(extract.stage.load_library(str(folder)), config.extract)[0]

    # Editing the folder is a different stage (the cache key fingerprints its files).
    before = extract.stage_hash(config)
    (folder / "traits" / "alpha.json").write_text((folder / "traits" / "alpha.json").read_text().replace("brave", "bold"))
    assert extract.stage_hash(config) != before


def test_library_folder_names_are_checked_at_load(tmp_path, tiny_model_dirs):
    folder = _published_folder(tmp_path / "library")
    with pytest.raises(ConfigError, match="extract.traits") as error:
        _folder_config(tmp_path, tiny_model_dirs["llama"], folder, **{"extract.traits": ["alpha", "cheerful"]})
    assert "'cheerful'" in str(error.value)  # a built-in trait is not in this folder
    with pytest.raises(ConfigError, match="extract.n_instruction_pairs"):
        _folder_config(tmp_path, tiny_model_dirs["llama"], folder, **{"extract.n_instruction_pairs": 4})
    (folder / "roles" / "default.json").unlink()
    with pytest.raises(ConfigError, match="extract.library"):
        _folder_config(tmp_path, tiny_model_dirs["llama"], folder)
    with pytest.raises(ConfigError, match="extract.library"):
        _folder_config(tmp_path, tiny_model_dirs["llama"], tmp_path / "no_such_folder")
