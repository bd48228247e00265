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


def test_unresolvable_hub_id_fails_before_any_notebook_with_what_to_do(tmp_path, monkeypatch):
    from traitspace.core.hub import HubSourceError

    # Offline, the check reads only the local hub cache: no network is touched, so it cannot hang.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    notebooks = tmp_path / "nbs"
    notebooks.mkdir()
    _write_notebook(notebooks / "00_would_run.ipynb", ["open('ran', 'w').write('x')"])
    params = tmp_path / "p.yaml"
    params.write_text(f"run:\n  name: t\n  output_root: {tmp_path / 'out'}\n"
                      "model:\n  source: no-such-owner/Qwen2.5-7B-Instrct\n")
    with pytest.raises(HubSourceError) as failure:
        run_notebooks(params, notebook_dir=notebooks, progress=False)
    message = str(failure.value)
    assert "model.source 'no-such-owner/Qwen2.5-7B-Instrct'" in message
    assert "HF_HUB_OFFLINE=1 is set" in message
    for fix in ("typo", "folder", "HF_HUB_OFFLINE=1", "HF_TOKEN"):
        assert fix in message, fix
    assert not (tmp_path / "out").exists(), "no notebook may start (nothing written) for an unloadable model"

    # The command line turns it into a short error and exit status 2, like any bad params value.
    from traitspace.__main__ import main

    assert main(["run", str(params)]) == 2


def test_hub_check_accepts_a_cached_model_offline_and_rejects_a_malformed_id(tmp_path, monkeypatch):
    from traitspace.core.hub import HubSourceError, check_hub_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub-cache"
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    # The hub cache's layout (what `hf download` leaves): refs/main names the snapshot holding the files.
    repo = cache / "models--some-owner--some-model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("0" * 40) / "config.json").write_text("{}")
    check_hub_model("some-owner/some-model")  # cached: loadable offline
    check_hub_model("tiny:llama")  # built-in sources are not hub ids
    with pytest.raises(HubSourceError, match="not a valid hub id"):
        check_hub_model("owner/name with spaces")
    with pytest.raises(HubSourceError, match="behavior.judge.model 'some-owner/other'"):
        check_hub_model("some-owner/other", key="behavior.judge.model")


def test_progress_shows_cells_done_and_the_running_cells_own_tqdm_bar(tmp_path, capsys):
    notebooks = tmp_path / "nbs"
    notebooks.mkdir()
    _write_notebook(notebooks / "00_progress.ipynb", [
        "from tqdm.auto import tqdm",
        # No sleep: the bar's final state (7/7) is sent when it closes, whatever its refresh rate.
        "for _ in tqdm(range(7), desc='inner stage'):\n    pass",
        "x = 1",
    ])
    params = tmp_path / "p.yaml"
    params.write_text(f"run:\n  name: t\n  output_root: {tmp_path / 'out'}\nmodel:\n  source: tiny:llama\n")
    run_notebooks(params, notebook_dir=notebooks, progress=True)
    captured = capsys.readouterr()
    # Cells done of total: 4 code cells plus the parameters cell papermill injects.
    assert "00_progress" in captured.err and "5/5" in captured.err and "cell" in captured.err
    # The kernel's tqdm bar (a widget there) is shown after the runner's bar, as text.
    assert "inner stage" in captured.err and "7/7 [" in captured.err
    assert "00_progress ok in" in captured.out
