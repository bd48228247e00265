"""Which notebooks a run executes: --only, else the params' run.notebooks, else every numbered one."""

import json

import nbformat

from traitspace.runner import run_notebooks


def _write_notebook(path, source: str) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    notebook.cells = [nbformat.v4.new_code_cell("params_path = ''\noverrides = {}"), nbformat.v4.new_code_cell(source)]
    notebook.cells[0].metadata["tags"] = ["parameters"]
    nbformat.write(notebook, path)


def _setup(tmp_path, run_notebooks_line: str = ""):
    notebooks = tmp_path / "nbs"
    notebooks.mkdir()
    for name in ("00_a", "01_b", "02_c"):
        _write_notebook(notebooks / f"{name}.ipynb", "x = 1")
    params = tmp_path / "p.yaml"
    params.write_text(f"run:\n  name: t\n  output_root: {tmp_path / 'out'}\n{run_notebooks_line}"
                      "model:\n  source: tiny:llama\n")
    return notebooks, params


def _ran(tmp_path) -> list[str]:
    return sorted(json.loads((tmp_path / "out" / "t" / "manifest.json").read_text())["notebooks"])


def test_params_run_notebooks_choose_the_main_job_and_only_overrides_them(tmp_path):
    notebooks, params = _setup(tmp_path, "  notebooks: ['00', '01_b']\n")
    results = run_notebooks(params, notebook_dir=notebooks, progress=False)
    assert [result.name for result in results] == ["00_a", "01_b"] and _ran(tmp_path) == ["00_a", "01_b"]
    results = run_notebooks(params, only=["02"], notebook_dir=notebooks, progress=False)
    assert [result.name for result in results] == ["02_c"]


def test_without_run_notebooks_every_numbered_notebook_runs(tmp_path):
    notebooks, params = _setup(tmp_path)
    assert [result.name for result in run_notebooks(params, notebook_dir=notebooks, progress=False)] == [
        "00_a", "01_b", "02_c"]
