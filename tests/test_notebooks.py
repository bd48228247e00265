"""Every notebook under notebooks/ runs under papermill through the runner with params/smoke.yaml,
so each notebook a later issue adds is covered automatically."""

import json
from pathlib import Path

import pytest

from traitspace.runner import REPO_ROOT, discover_notebooks, run_notebooks

pytestmark = pytest.mark.notebooks


def test_all_notebooks_run_with_smoke_params(tmp_path):
    results = run_notebooks(REPO_ROOT / "params" / "smoke.yaml", overrides={"run.output_root": str(tmp_path)},
                            progress=False)
    assert [result.name for result in results] == [path.stem for path in discover_notebooks()]
    run_dir = tmp_path / "smoke"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert all(entry["status"] == "ok" for entry in manifest["notebooks"].values())
    assert (run_dir / "00_model_check" / "layer_norms.png").is_file()
    assert (run_dir / "00_model_check" / "pca_middle_layer.png").is_file()
    for result in results:
        assert Path(result.output).is_file()
    for table in ("fingerprint_timing", "monitor_results", "trait_behaviour_spearman", "seed_timing"):
        assert (run_dir / "findings" / f"{table}.csv").is_file()
    assert (run_dir / "findings" / "report.html").is_file() and (run_dir / "findings" / "report.md").is_file()
    # The smoke params train 3 seeds per condition: the report leads with tests across seeds.
    report = (run_dir / "findings" / "report.md").read_text()
    assert "3 training seeds per condition" in report and "seed-pair null" in report
    assert (run_dir / "checkpoints" / "insecure_code" / "seed-2").is_dir()


def test_notebooks_01_to_05_run_with_one_training_seed_and_say_nothing_can_be_tested(tmp_path):
    overrides = {"run.output_root": str(tmp_path), "run.name": "one-seed", "finetune.seeds": [0],
                 "finetune.live_monitor.enabled": False}
    # The main job only: the experiments (06 onwards) run with 3 seeds above; CI time is finite.
    results = run_notebooks(REPO_ROOT / "params" / "smoke.yaml", only=["00", "01", "02", "03", "04", "05"],
                            overrides=overrides, progress=False)
    assert all(Path(result.output).is_file() for result in results)
    report = (tmp_path / "one-seed" / "findings" / "report.md").read_text()
    assert "no effect of the EM data can be tested" in report and "no lead time can be tested" in report
