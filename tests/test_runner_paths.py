"""Relative paths in params resolve against the project root whatever the working directory (JupyterLab
starts a kernel in the notebook's folder), and executed notebooks keep their widgets' state."""

import json
from pathlib import Path

import nbformat
import pytest

from traitspace.core import paths
from traitspace.core.config import ConfigError, load_config
from traitspace.runner import run_notebooks

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder of its own (pyproject.toml naming traitspace) with a params file, a data file
    and a notebooks/ subfolder that is the working directory, as in a JupyterLab kernel."""
    monkeypatch.delenv(paths.ROOT_ENV, raising=False)
    root = tmp_path / "project"
    (root / "params").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "notebooks").mkdir()
    (root / "pyproject.toml").write_text('[project]\nname = "traitspace"\nversion = "0"\n')
    (root / "data" / "mine.jsonl").write_text("")
    (root / "params" / "p.yaml").write_text(
        "model:\n  source: tiny:llama\nfinetune:\n  conditions:\n    mine: data/mine.jsonl\n    secure_code: secure_code\n")
    monkeypatch.chdir(root / "notebooks")
    return root


def test_project_root_is_found_above_the_working_directory(project, tmp_path, monkeypatch):
    assert paths.project_root() == project
    assert paths.project_root(project / "notebooks" / "deeper") == project
    # A pyproject.toml of another project is not ours; outside any project the folder itself is the root.
    other = tmp_path / "other"
    other.mkdir()
    (other / "pyproject.toml").write_text('[project]\nname = "traitspace-plugin"\n')
    assert paths.project_root(other) == other.resolve()
    monkeypatch.setenv(paths.ROOT_ENV, str(other))
    assert paths.project_root() == other.resolve()


def test_params_output_root_and_data_files_resolve_from_the_project_root(project):
    config = load_config("params/p.yaml")
    assert config.params_path == str(project / "params" / "p.yaml")
    assert config.run_dir == project / "outputs" / "p"
    assert config.finetune.conditions == {"mine": str(project / "data" / "mine.jsonl"), "secure_code": "secure_code"}
    assert config.model.source == "tiny:llama"  # a built-in name is not a path
    assert load_config("params/p.yaml", {"findings.extra_runs": ["outputs/seed1"]}).findings.extra_runs == [
        str(project / "outputs" / "seed1")]
    described = paths.describe_paths(config)
    assert f"project root: {project}" in described and str(project / "outputs" / "p") in described


def test_an_absolute_output_root_and_a_missing_file_are_reported_as_given(project, tmp_path):
    config = load_config(project / "params" / "p.yaml", {"run.output_root": str(tmp_path / "elsewhere")})
    assert config.run_dir == tmp_path / "elsewhere" / "p"
    with pytest.raises(ConfigError, match=r"params/nope\.yaml.*project root"):
        load_config("params/nope.yaml")
    with pytest.raises(ConfigError, match=r"question_files.*not found"):
        load_config("params/p.yaml", {"behavior.question_files": ["data/missing.yaml"]})


def _notebook(path: Path, sources: list[str]) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    cells = [nbformat.v4.new_code_cell("params_path = 'params/default.yaml'\noverrides = {}")]
    cells[0].metadata["tags"] = ["parameters"]
    notebook.cells = cells + [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(notebook, path)


def test_executed_copy_reruns_from_its_own_folder_and_keeps_its_widgets(project):
    """The runner passes params_path relative to the project root; the executed copy, executed again
    with its own folder as working directory (what JupyterLab does), finds the same params and run
    folder. Its widget state, with the interactive plot the kernel drew, is stored in the copy."""
    from nbclient import NotebookClient

    (project / "params" / "smoke.yaml").write_text((REPO / "params" / "smoke.yaml").read_text())
    _notebook(project / "notebooks" / "00_paths.ipynb", [
        "from traitspace.core.config import load_config\nfrom traitspace.core.paths import describe_paths\n"
        "config = load_config(params_path, overrides)\nprint(describe_paths(config))",
        "import ipywidgets, matplotlib.pyplot as plt\n"
        "def draw(n):\n    plt.plot(range(n))\n    plt.show()\n"
        "ipywidgets.interactive(draw, n=ipywidgets.IntSlider(value=3, min=2, max=5))",
    ])
    # Started from notebooks/, as a user in a terminal there might.
    run_notebooks("params/smoke.yaml", notebook_dir=project / "notebooks", progress=False)
    run_dir = project / "outputs" / "smoke"
    executed_path = run_dir / "notebooks" / "00_paths.ipynb"
    executed = nbformat.read(executed_path, as_version=4)
    injected = next(cell.source for cell in executed.cells if "injected-parameters" in cell.metadata.get("tags", []))
    assert 'params_path = "params/smoke.yaml"' in injected  # relative: the copy is portable
    assert f"run folder:   {run_dir}" in executed.cells[2].outputs[0]["text"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["params_path"] == str(project / "params" / "smoke.yaml")

    from nbformat.sign import NotebookNotary

    assert NotebookNotary().check_signature(executed)  # trusted: JupyterLab renders its widgets
    state = executed.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    models = {entry["model_name"]: entry["state"] for entry in state.values()}
    assert models["IntSliderModel"]["value"] == 3
    assert any("image/png" in output.get("data", {}) for output in models["OutputModel"]["outputs"])

    # Executed again as JupyterLab would: the kernel's working directory is the copy's own folder.
    executed.cells[2].outputs = []
    NotebookClient(executed, kernel_name="python3", resources={"metadata": {"path": str(executed_path.parent)}}).execute()
    text = executed.cells[2].outputs[0]["text"]
    assert f"params file:  {project / 'params' / 'smoke.yaml'}" in text and f"run folder:   {run_dir}" in text
