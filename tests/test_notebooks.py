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
    for table in ("fingerprint_timing", "monitor_results", "trait_behaviour_spearman"):
        assert (run_dir / "findings" / f"{table}.csv").is_file()
    assert (run_dir / "findings" / "report.html").is_file() and (run_dir / "findings" / "report.md").is_file()
