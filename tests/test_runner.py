"""The papermill runner: params validated first, failures stop the run with the cell's error,
a manifest records what ran."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from traitspace.runner import NotebookFailed, discover_notebooks, run_notebooks, select_notebooks

REPO = Path(__file__).resolve().parents[1]


def test_bad_params_fail_before_any_model_loads(tmp_path):
    params = tmp_path / "bad.yaml"
    params.write_text(f"run:\n  output_root: {tmp_path / 'out'}\nmodel:\n  source: tiny:llama\n  dtyp: float32\n")
    result = subprocess.run([sys.executable, "-m", "traitspace", "run", str(params)],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2
    assert "model.dtyp" in result.stderr and "unknown key" in result.stderr
    assert not (tmp_path / "out").exists(), "nothing may be written for a rejected params file"


def test_set_overrides_are_parsed_as_yaml_and_checked_before_any_work(tmp_path):
    from traitspace.__main__ import main, parse_settings

    assert parse_settings(["extract.mode=response", "behavior.formats=[plain, json]", "finetune.n_examples=8"]) == {
        "extract.mode": "response", "behavior.formats": ["plain", "json"], "finetune.n_examples": 8}
    with pytest.raises(ValueError, match="SECTION.KEY=VALUE"):
        parse_settings(["mode"])
    params = tmp_path / "ok.yaml"
    params.write_text(f"run:\n  output_root: {tmp_path / 'out'}\nmodel:\n  source: tiny:llama\n")
    assert main(["run", str(params), "--set", "extract.mode=generate"]) == 2  # not a mode
    assert main(["run", str(params), "--set", "mode"]) == 2
    assert not (tmp_path / "out").exists()


def test_select_notebooks():
    notebooks = [Path("00_model_check.ipynb"), Path("01_finetune.ipynb"), Path("02_extract_traits.ipynb")]
    assert select_notebooks(notebooks, ["00", "02_extract_traits"]) == [notebooks[0], notebooks[2]]
    assert select_notebooks(notebooks, None) == notebooks
    with pytest.raises(ValueError, match="07"):
        select_notebooks(notebooks, ["07"])


def test_repository_notebooks_are_numbered_and_in_sync():
    from traitspace.runner import notebook_from_source

    notebooks = discover_notebooks()
    assert notebooks and notebooks[0].name == "00_model_check.ipynb"
    for notebook in notebooks:
        stored = nbformat.read(notebook, as_version=4)
        source = notebook.with_suffix(".py")
        assert source.is_file(), f"{notebook.name} has no jupytext twin"
        assert [cell.source for cell in stored.cells] == [cell.source for cell in notebook_from_source(source).cells], \
            f"{notebook.name} is out of sync with {source.name}: run `make notebooks`"
        assert not any(cell.get("outputs") for cell in stored.cells), f"{notebook.name} has outputs committed"
        tagged = [cell for cell in stored.cells if "parameters" in cell.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{notebook.name} needs exactly one cell tagged 'parameters'"


def _write_notebook(path, sources):
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    cells = [nbformat.v4.new_code_cell("params_path = ''\noverrides = {}")]
    cells[0].metadata["tags"] = ["parameters"]
    cells += [nbformat.v4.new_code_cell(source) for source in sources]
    notebook.cells = cells
    nbformat.write(notebook, path)


def test_failing_notebook_stops_the_run_and_shows_the_cell_error(tmp_path):
    notebooks = tmp_path / "nbs"
    notebooks.mkdir()
    _write_notebook(notebooks / "00_ok.ipynb", ["x = 1"])
    _write_notebook(notebooks / "01_broken.ipynb", ["y = 2", "raise ValueError('planted failure')"])
    _write_notebook(notebooks / "02_never.ipynb", ["z = 3"])
    params = tmp_path / "p.yaml"
    params.write_text(f"run:\n  name: t\n  output_root: {tmp_path / 'out'}\nmodel:\n  source: tiny:llama\n")
    with pytest.raises(NotebookFailed) as failure:
        run_notebooks(params, notebook_dir=notebooks, progress=False)
    assert failure.value.notebook == "01_broken"
    assert "planted failure" in failure.value.error
    manifest = json.loads((tmp_path / "out" / "t" / "manifest.json").read_text())
    assert manifest["notebooks"]["00_ok"]["status"] == "ok"
    assert manifest["notebooks"]["01_broken"]["status"] == "failed"
    assert "02_never" not in manifest["notebooks"]
    assert manifest["params"]["model"]["source"] == "tiny:llama"
    assert "torch" in manifest["versions"] and "git_commit" in manifest
    assert (tmp_path / "out" / "t" / "notebooks" / "01_broken.ipynb").is_file()
