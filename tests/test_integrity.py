"""Damaged outputs are found and named: stage manifests record content hashes, a damaged stage is
not taken for done, and `traitspace verify` reports a planted corruption in a copied run."""

import json
import shutil

import pytest

from traitspace.__main__ import main
from traitspace.core.artifacts import Stage, atomic_write_text
from traitspace.core.integrity import DamagedOutput, require_intact, stage_files, verify_run


def finished_stage(folder):
    stage = Stage(folder, params_hash="h1", code_version=1)
    atomic_write_text(folder / "table.csv", "a,b\n1,2\n")
    atomic_write_text(folder / "parts" / "step-000001.parquet", "x" * 100)
    atomic_write_text(folder / "figure.png", "png")
    nested = Stage(folder / "nested", params_hash="n", code_version=1)
    atomic_write_text(folder / "nested" / "own.csv", "mine")
    nested.mark_done()
    stage.mark_done()
    return stage


def test_the_manifest_records_data_files_and_a_damaged_stage_is_not_done(tmp_path, capsys):
    stage = finished_stage(tmp_path / "stage")
    recorded = json.loads(stage.manifest_path.read_text())["files"]
    assert set(recorded) == {"table.csv", "parts/step-000001.parquet"}  # not figures, not a nested stage
    assert recorded["table.csv"]["bytes"] == 8
    assert Stage(stage.path, "h1", code_version=1).is_done()
    (stage.path / "table.csv").write_text("a,b\n1,3\n")  # same size, other content
    assert not Stage(stage.path, "h1", code_version=1).is_done()
    assert "changed" in capsys.readouterr().out
    with pytest.raises(DamagedOutput, match=r"stage stage \(notebook 03\).*table.csv.*Rerun notebook 03"):
        require_intact(stage.path, "03")


def test_verify_reports_a_planted_corruption_in_a_copied_run(tmp_path, capsys):
    run = tmp_path / "run"
    finished_stage(run / "projections")
    finished_stage(run / "traits")
    copy = tmp_path / "copied"
    shutil.copytree(run, copy)
    assert main(["verify", str(copy)]) == 0
    assert "every recorded file intact" in capsys.readouterr().out
    (copy / "traits" / "parts" / "step-000001.parquet").write_bytes(b"x" * 50)
    (copy / "projections" / "table.csv").unlink()
    checked, problems = verify_run(copy)
    assert checked == 4 and {(problem.stage.name, problem.file, problem.what) for problem in problems} == {
        ("traits", "parts/step-000001.parquet", "changed"), ("projections", "table.csv", "missing")}
    assert main(["verify", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "missing" in out and "traits/parts/step-000001.parquet" in out and "rerun the notebooks" in out


def test_stage_files_skip_temporaries(tmp_path):
    (tmp_path / ".table.csv.tmp123").write_text("half")
    (tmp_path / "table.csv").write_text("whole")
    assert set(stage_files(tmp_path)) == {"table.csv"}


def test_a_checkpoint_keeps_its_cache_identity_when_its_run_is_copied_and_changes_with_its_weights(tmp_path):
    """Caches are keyed on the adapter's content: a run copied elsewhere (new modification times)
    reuses its measurements, and an adapter retrained with other weights is measured again."""
    import os
    import shutil

    from traitspace.core.checkpoints import Checkpoint

    adapter = tmp_path / "run" / "step-000002"
    adapter.mkdir(parents=True)
    (adapter / "adapter_model.safetensors").write_bytes(b"weights one")
    copy = tmp_path / "copy" / "step-000002"
    shutil.copytree(adapter, copy, copy_function=shutil.copyfile)  # a plain copy: new modification times
    os.utime(copy / "adapter_model.safetensors", ns=(1, 1))
    original, copied = Checkpoint("em", 2, str(adapter)), Checkpoint("em", 2, str(copy))
    assert original.identity() == copied.identity()
    (copy / "adapter_model.safetensors").write_bytes(b"weights two")
    assert Checkpoint("em", 2, str(copy)).identity() != original.identity()


def test_a_stage_finished_by_another_version_of_its_code_is_recomputed(tmp_path, capsys):
    stage = finished_stage(tmp_path / "stage")
    assert json.loads(stage.manifest_path.read_text())["code_version"] == 1
    assert not Stage(stage.path, "h1", code_version=2).is_done()
    assert "made by version 1 of this stage's code, which is now version 2" in capsys.readouterr().out
    # A manifest written before code versions existed counts as version 1: old runs are not redone.
    manifest = json.loads(stage.manifest_path.read_text())
    del manifest["code_version"]
    stage.manifest_path.write_text(json.dumps(manifest))
    assert Stage(stage.path, "h1", code_version=1).is_done()
    assert not Stage(stage.path, "h1", code_version=2).is_done()


def test_a_training_code_version_enters_the_trail_hash_from_version_2_on(monkeypatch):
    from traitspace.core import code_versions
    from traitspace.core.config import load_config
    from traitspace.finetune.data import condition_params_hash
    from traitspace.runner import REPO_ROOT

    config = load_config(REPO_ROOT / "params" / "smoke.yaml")
    condition = config.finetune.conditions[0]
    monkeypatch.setitem(code_versions.CODE_VERSIONS, "finetune.training", 1)
    at_one = condition_params_hash(config, condition)
    assert code_versions.training_hash_fields("finetune.training") == {}  # trails trained earlier keep their hash
    monkeypatch.setitem(code_versions.CODE_VERSIONS, "finetune.training", 2)
    assert condition_params_hash(config, condition) != at_one
