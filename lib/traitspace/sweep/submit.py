"""Submitting a sweep's runs through submitit and waiting for them.

submitit runs each cell as a job: worker processes on this machine (``LocalExecutor``), an array job
on Slurm (``SlurmExecutor``: GPUs, time limit, partition and array parallelism from the sweep file),
or in this process (``DebugExecutor``). Its job folders hold each run's stdout/stderr, which is the
log a failed cell is reported with. Locally every submitted job starts at once and submitit gives each
the same GPUs, so cells are fed to the executor ``parallel`` at a time, each with its own GPUs; Slurm
throttles its array itself (``slurm_array_parallelism``).
A cell whose run manifest says every selected notebook finished with these params is not submitted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..core.artifacts import read_json
from .spec import Cell, Sweep

POLL_SECONDS = 1.0


@dataclass
class CellResult:
    cell: Cell
    status: str  # "ok" | "failed" | "finished earlier" | "submitted"
    job_id: str | None = None
    log: Path | None = None
    error: str | None = None
    notebooks: dict[str, Any] = field(default_factory=dict)


def run_cell(params_path: str, overrides: dict[str, Any], only: Sequence[str] | None) -> dict[str, Any]:
    """What a job runs: the notebooks of one cell, through the runner (its manifest records them)."""
    from ..runner import run_notebooks

    results = run_notebooks(params_path, only=only, overrides=overrides)
    return {result.name: result.seconds for result in results}


def selected_stems(cell: Cell, only: Sequence[str] | None) -> list[str]:
    """The notebooks the runner runs for this cell: ``only``, else the params' ``run.notebooks``, else all."""
    from ..runner import discover_notebooks, select_notebooks

    chosen = only or getattr(cell.config.run, "notebooks", None)  # run.notebooks: the runner's own default
    return [path.stem for path in select_notebooks(discover_notebooks(), chosen)]


def run_manifest(cell: Cell) -> dict[str, Any]:
    path = cell.config.run_dir / "manifest.json"
    return read_json(path) if path.is_file() else {}


def is_finished(cell: Cell, only: Sequence[str] | None) -> bool:
    """Every selected notebook ran to the end with exactly this cell's params."""
    manifest = run_manifest(cell)
    if manifest.get("params_hash") != cell.config.params_hash():
        return False
    notebooks = manifest.get("notebooks", {})
    return all(notebooks.get(stem, {}).get("status") == "ok" for stem in selected_stems(cell, only))


def manifest_status(cell: Cell, only: Sequence[str] | None) -> str:
    """What a run's manifest says, without asking the scheduler: ok (every selected notebook finished
    with these params), failed (a notebook failed), incomplete (started: running, or stopped) or not
    started."""
    if is_finished(cell, only):
        return "ok"
    notebooks = run_manifest(cell).get("notebooks")
    if notebooks is None:
        return "not started"
    return "failed" if any(entry.get("status") == "failed" for entry in notebooks.values()) else "incomplete"


def cluster_of(sweep: Sweep) -> str:
    """``local``, ``slurm`` or ``debug``; ``auto`` is submitit's own detection (Slurm when it finds srun)."""
    import submitit

    cluster = sweep.spec.executor.cluster
    return submitit.AutoExecutor.which() if cluster == "auto" else cluster


def make_executor(sweep: Sweep, cluster: str):
    """The submitit executor of ``cluster`` with the sweep's settings. Slurm gets them as sbatch options;
    locally only the time limit applies (GPUs are given per job: :func:`local_gpu_slots`)."""
    import submitit

    settings = sweep.spec.executor
    folder = sweep.folder / "logs" / "%j"
    if cluster == "debug":
        return submitit.DebugExecutor(folder)
    if cluster == "local":
        executor = submitit.LocalExecutor(folder)
        executor.update_parameters(timeout_min=settings.timeout_min)
        return executor
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    parameters: dict[str, Any] = {"name": f"traitspace-{sweep.name}", "timeout_min": settings.timeout_min,
                                  "gpus_per_node": settings.gpus_per_run, "cpus_per_task": settings.cpus_per_run,
                                  "slurm_array_parallelism": settings.parallel}
    if settings.mem_gb is not None:
        parameters["mem_gb"] = settings.mem_gb
    if settings.partition is not None:
        parameters["slurm_partition"] = settings.partition
    if settings.slurm_additional:
        parameters["slurm_additional_parameters"] = dict(settings.slurm_additional)
    executor.update_parameters(**parameters)
    return executor


def local_gpu_slots(parallel: int, gpus_per_run: int, gpus_present: int) -> list[tuple[int, ...]]:
    """The GPUs of each local worker slot, disjoint, so parallel runs never share a GPU: ``parallel``
    slots of ``gpus_per_run`` GPUs, fewer when the machine has fewer GPUs; no GPUs asked or present:
    ``parallel`` slots without GPUs."""
    if gpus_per_run == 0 or gpus_present == 0:
        return [()] * parallel
    slots = min(parallel, gpus_present // gpus_per_run)
    if slots == 0:
        raise ValueError(f"executor.gpus_per_run is {gpus_per_run} but this machine has {gpus_present} GPU(s)")
    return [tuple(range(slot * gpus_per_run, (slot + 1) * gpus_per_run)) for slot in range(slots)]


def _error_line(text: str) -> str:
    """The exception line of a failed job's message (submitit appends a divider and the log paths)."""
    traceback = text.split("\n----------------------")[0]
    lines = [line.strip() for line in traceback.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text


def _collect(result: CellResult, job) -> CellResult:
    """Wait for ``job`` and fill in ``result`` (a failure never raises: it is reported)."""
    error = job.exception()
    result.status = "ok" if error is None else "failed"
    result.error = None if error is None else _error_line(str(error))
    result.log = Path(job.paths.stderr)
    result.notebooks = run_manifest(result.cell).get("notebooks", {})
    return result


def run_sweep(sweep: Sweep, wait: bool = True, log: Callable[[str], None] = print) -> list[CellResult]:
    """Submit every unfinished cell; with ``wait``, return when all have ended (ok or failed)."""
    from tqdm.auto import tqdm

    only = sweep.spec.only
    results = {cell.name: CellResult(cell, "finished earlier", notebooks=run_manifest(cell).get("notebooks", {}))
               for cell in sweep.cells if is_finished(cell, only)}
    pending = [cell for cell in sweep.cells if cell.name not in results]
    for name in results:
        log(f"[sweep] {name}: finished earlier, not resubmitted")
    if not pending:
        return [results[cell.name] for cell in sweep.cells]
    cluster = cluster_of(sweep)
    executor = make_executor(sweep, cluster)
    settings = sweep.spec.executor
    log(f"[sweep] {len(pending)} run(s) to {cluster}; logs under {sweep.folder / 'logs'}")

    def report(result: CellResult) -> None:
        if result.status == "ok":
            log(f"[sweep] {result.cell.name}: ok")
        else:
            log(f"[sweep] {result.cell.name}: FAILED ({result.error}); log: {result.log}")

    if cluster == "slurm":
        with executor.batch():  # one array job, throttled by slurm_array_parallelism
            jobs = [executor.submit(run_cell, str(sweep.params_path), cell.overrides, only) for cell in pending]
        for cell, job in zip(pending, jobs):
            results[cell.name] = CellResult(cell, "submitted", job_id=str(job.job_id), log=Path(job.paths.stderr))
        log(f"[sweep] array job {jobs[0].job_id.split('_')[0]}: {len(jobs)} runs, at most {settings.parallel} at once")
        if wait:
            for cell, job in tqdm(list(zip(pending, jobs)), desc=f"sweep {sweep.name}", unit="run"):
                report(_collect(results[cell.name], job))
        return [results[cell.name] for cell in sweep.cells]

    if cluster == "debug":  # in this process, one after another
        slots: list[tuple[int, ...]] = [()]
    else:
        import torch

        slots = local_gpu_slots(settings.parallel, settings.gpus_per_run, torch.cuda.device_count())
        if settings.gpus_per_run and len(slots) < settings.parallel:
            log(f"[sweep] {len(slots)} run(s) at once: one GPU set of {settings.gpus_per_run} each")
    queue, active, free = list(pending), {}, list(slots)
    with tqdm(total=len(pending), desc=f"sweep {sweep.name}", unit="run") as progress:
        while queue or active:
            while queue and free:
                cell, gpus = queue.pop(0), free.pop(0)
                if cluster == "local":
                    executor.update_parameters(gpus_per_node=len(gpus), visible_gpus=gpus)
                job = executor.submit(run_cell, str(sweep.params_path), cell.overrides, only)
                results[cell.name] = CellResult(cell, "submitted", job_id=str(job.job_id), log=Path(job.paths.stderr))
                log(f"[sweep] {cell.name}: job {job.job_id}" + (f" on GPU {','.join(map(str, gpus))}" if gpus else ""))
                active[cell.name] = (job, gpus)
            for name, (job, gpus) in list(active.items()):
                if cluster == "debug" or job.done():  # a debug job runs when its result is asked for
                    report(_collect(results[name], job))
                    del active[name]
                    free.append(gpus)
                    progress.update(1)
            if active:
                time.sleep(POLL_SECONDS)
    return [results[cell.name] for cell in sweep.cells]
