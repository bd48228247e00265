"""``python -m traitspace sweep``: a grid expanded into named runs, validated before submission; a 2x2
grid of smoke runs (notebook 00 only) through submitit's local executor with one run made to fail:
it is reported with its log while the other three finish, and resubmission skips those three.
Only that test starts notebooks (three kernels at once); the others submit nothing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from traitspace.core.config import ConfigError
from traitspace.core.models import resolve_source
from traitspace.sweep import load_sweep, run_sweep
from traitspace.sweep.results import write_results

ROOT = Path(__file__).resolve().parents[1]


def _write_sweep(tmp_path: Path, axes: dict, **extra) -> Path:
    spec = {"name": "grid", "params": str(ROOT / "params" / "smoke.yaml"), "only": ["00"],
            "output_root": str(tmp_path / "sweeps"), "axes": axes,
            "executor": {"cluster": "local", "parallel": 4, "timeout_min": 10}, **extra}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_grid_cells_are_named_by_their_values_and_validated_before_submission(tmp_path):
    sweep = load_sweep(_write_sweep(tmp_path, {
        "finetune.lora_r": [4, 8], "recipe": {"fast": {"finetune.epochs": 2}, "slow": {"finetune.epochs": 1}}}))
    assert [cell.name for cell in sweep.cells] == ["grid-lora_r=4-recipe=fast", "grid-lora_r=4-recipe=slow",
                                                   "grid-lora_r=8-recipe=fast", "grid-lora_r=8-recipe=slow"]
    cell = sweep.cells[1]
    assert (cell.config.finetune.lora_r, cell.config.finetune.epochs) == (4, 1)
    assert cell.config.run_dir == tmp_path / "sweeps" / "grid" / "runs" / "grid-lora_r=4-recipe=slow"
    with pytest.raises(ConfigError, match=r"cell grid-lora_rank=4[\s\S]*finetune.lora_rank: unknown key"):
        load_sweep(_write_sweep(tmp_path, {"finetune.lora_rank": [4]}))
    with pytest.raises(ConfigError, match="executor.gpus: unknown key"):
        load_sweep(_write_sweep(tmp_path, {"finetune.lora_r": [4]}, executor={"gpus": 1}))


def test_local_sweep_reports_a_failed_run_with_its_log_and_skips_finished_runs(tmp_path):
    for architecture in ("llama", "qwen2"):
        resolve_source(f"tiny:{architecture}")  # built once here, not by two workers at the same time
    path = _write_sweep(tmp_path, {"model.source": ["tiny:llama", "tiny:qwen2"], "model_check.max_new_tokens": [2, 4]})
    sweep = load_sweep(path)
    broken = sweep.cells[3]
    broken.config.run_dir.parent.mkdir(parents=True)
    broken.config.run_dir.write_text("a file where the run's folder belongs")  # the run cannot start

    results = run_sweep(sweep, log=lambda line: None)
    status = {result.cell.name: result.status for result in results}
    assert [status[cell.name] for cell in sweep.cells] == ["ok", "ok", "ok", "failed"], status
    failed = results[3]
    assert failed.log.is_file() and failed.error and "Error" in failed.log.read_text()
    assert all(result.notebooks["00_model_check"]["status"] == "ok" for result in results[:3])

    table, table_path, figure_path = write_results(results, sweep)
    assert table_path.is_file() and figure_path.stat().st_size > 0
    assert list(table["status"]) == ["ok", "ok", "ok", "failed"] and table["log"].iloc[3] == str(failed.log)

    # Resubmitted: the three finished runs are skipped (no job), the broken one is tried again and fails
    # again before any notebook starts, so this costs no kernel.
    again = run_sweep(load_sweep(path), log=lambda line: None)
    assert [result.status for result in again] == ["finished earlier"] * 3 + ["failed"]
    assert [result.job_id is None for result in again] == [True, True, True, False]

    from traitspace.__main__ import main

    assert main(["sweep", str(path), "--collect"]) == 0  # submits nothing; reads the runs' manifests
    assert list(pd.read_csv(table_path)["status"]) == ["ok"] * 3 + ["not started"]


def test_slurm_settings_become_sbatch_options(tmp_path, monkeypatch):
    from traitspace.sweep.submit import cluster_of, make_executor

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit's Slurm executor looks for srun first
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{__import__('os').environ['PATH']}")
    sweep = load_sweep(_write_sweep(tmp_path, {"finetune.lora_r": [4, 8]}, executor={
        "cluster": "slurm", "parallel": 3, "gpus_per_run": 2, "cpus_per_run": 8, "mem_gb": 64, "timeout_min": 90,
        "partition": "gpu", "slurm_additional": {"account": "myproj"}}))
    assert cluster_of(sweep) == "slurm"
    executor = make_executor(sweep, "slurm")
    assert executor._executor.parameters["array_parallelism"] == 3
    script = executor._executor._make_submission_file_text("python -m job", "uid")
    for option in ("--gpus-per-node=2", "--cpus-per-task=8", "--mem=64GB", "--time=90", "--partition=gpu",
                   "--account=myproj", "--job-name=traitspace-grid"):
        assert f"#SBATCH {option}\n" in script


def test_sweep_command_lists_the_grid(tmp_path, capsys):
    from traitspace.__main__ import main

    assert main(["sweep", str(_write_sweep(tmp_path, {"finetune.lora_r": [4, 8]})), "--list"]) == 0
    assert capsys.readouterr().out.splitlines() == ["grid-lora_r=4 {'finetune.lora_r': 4}",
                                                    "grid-lora_r=8 {'finetune.lora_r': 8}"]


def test_local_runs_get_disjoint_gpus():
    from traitspace.sweep.submit import local_gpu_slots

    assert local_gpu_slots(parallel=4, gpus_per_run=2, gpus_present=8) == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert local_gpu_slots(parallel=4, gpus_per_run=2, gpus_present=5) == [(0, 1), (2, 3)]
    assert local_gpu_slots(parallel=3, gpus_per_run=1, gpus_present=0) == [(), (), ()]  # CPU machine
    with pytest.raises(ValueError, match="gpus_per_run is 2 but this machine has 1 GPU"):
        local_gpu_slots(parallel=1, gpus_per_run=2, gpus_present=1)


def test_a_run_counts_as_finished_only_with_its_own_params_and_every_notebook_ok(tmp_path):
    from traitspace.core.artifacts import atomic_write_json
    from traitspace.sweep.submit import is_finished, manifest_status

    cells = load_sweep(_write_sweep(tmp_path, {"finetune.lora_r": [4, 8, 16, 32, 64]})).cells
    only = ["00"]

    def write(cell, status, params_hash=None):
        atomic_write_json(cell.config.run_dir / "manifest.json", {
            "params_hash": params_hash or cell.config.params_hash(), "notebooks": {"00_model_check": {"status": status}}})

    write(cells[0], "ok")
    write(cells[1], "failed")
    write(cells[2], "running")
    write(cells[3], "ok", params_hash="another")  # finished, but with other params
    assert [manifest_status(cell, only) for cell in cells] == ["ok", "failed", "incomplete", "incomplete", "not started"]
    assert [is_finished(cell, only) for cell in cells] == [True, False, False, False, False]
    assert not is_finished(cells[0], ["00", "01"])  # notebook 01 never ran
