"""Crash and corruption safety of every stage, proven by fault injection (issue 20).

On the smoke params (tiny random model, two training seeds), one uninterrupted reference run goes
through notebooks 00-09, each stage's progress events (its atomic writes, :mod:`traitspace.core.faults`)
logged. Then, per stage, starting from a copy of the run as it was before that stage:

- kills: SIGKILL at three points drawn (seeded) from the stage's own events, one after the other,
  each rerun resuming what the previous one left; a last rerun finishes. Its tables equal the
  reference's and no temporary file is left anywhere in the run.
- damage: one file the stage wrote (drawn, seeded) truncated or with a byte flipped, in a copy of the
  finished run. The stage's loader raises DamagedOutput naming the file, the stage and the fix; a
  rerun rewrites that file and recomputes no other part; the tables equal the reference's again.
- disk full: ``OSError(ENOSPC)`` at a drawn write. The run stops with a message naming the file,
  every file that existed before is unchanged, no temporary is left, and a rerun finishes.

Each stage runs as its notebook's code (read with jupytext, executed cell by cell with the
parameters injected as papermill would) in a process forked from one worker that imported torch,
transformers and the package once: a kernel start per run would cost more than the stage itself.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import select
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch

from traitspace.core.artifacts import PARTIAL_MARKER
from traitspace.core.config import load_config
from traitspace.core.faults import FAULT_ACTION, FAULT_AT, FAULT_LOG, FAULT_PATH
from traitspace.core.integrity import MANIFEST_NAME, DamagedOutput, verify_run

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params" / "smoke.yaml"
RUN_NAME = "fault"
# Smaller than the smoke run where the plumbing stays the same: two training seeds (the seed-level
# analyses still run), no live monitor (it would run stage 02 inside stage 01).
OVERRIDES = {
    "run.name": RUN_NAME,
    "finetune.seeds": [0, 1],
    "finetune.live_monitor.enabled": False,
}


@dataclass(frozen=True)
class StageUnderTest:
    notebook: str
    folders: tuple[str, ...]  # what the stage owns under the run folder
    # Files that make up one unit of cached work (a checkpoint part, a trail, a steering setting):
    # a damaged unit is recomputed alone. None: the stage has no unit smaller than itself.
    unit: str | None = None


STAGES = {
    "00": StageUnderTest("00_model_check", ("00_model_check",)),
    "01": StageUnderTest("01_finetune", ("01_finetune", "checkpoints"), r"^checkpoints/[^/]+/seed-\d+/"),
    "02": StageUnderTest("02_extract_traits", ("traits",)),
    "03": StageUnderTest("03_project", ("projections",), r"^projections/parts/(?:.+/)?step-\d+"),
    # A checkpoint's answers, scores and preference parts are one unit: its scores depend on its answers.
    "04": StageUnderTest("04_behavior_eval", ("behavior",), r"^behavior/(?:answers|scores|preference)/((?:.+/)?step-\d+)"),
    "05": StageUnderTest("05_findings", ("findings",)),
    "06": StageUnderTest("06_steering", ("steering",), r"^steering/results/.+?(?=\.(?:preference\.parquet|answers\.parquet|json)$)"),
    # A checkpoint's task answers and its activations are separate parts, each recomputed alone.
    "07": StageUnderTest("07_consistency", ("consistency",), r"^consistency/(?:tasks|activations)/(?:.+/)?step-\d+"),
    # A re-alignment trail is trained like notebook 01's; its checkpoints' measurements are parts.
    "08": StageUnderTest("08_realign", ("realign",),
                         r"^realign/(?:checkpoints/[^/]+/[^/]+/seed-\d+/|(?:projections/parts|preference|behavior/\w+)/(?:.+/)?step-\d+)"),
    "09": StageUnderTest("09_sae", ("sae",),
                         r"^sae/(?:features/(?:.+/)?step-\d+|steering/.+?(?=\.(?:preference\.parquet|answers\.parquet|json)$))"),
}
N_KILLS = 3
JOB_TIMEOUT_S = 600

# The worker imports the heavy packages once and forks a child per job; the parent never runs a torch
# operation, so every child starts from a clean, single-threaded state. (multiprocessing's forkserver
# does the same but needs the job function importable in a fresh interpreter and is one per process.)
WORKER = textwrap.dedent("""
    import json, os, sys, traceback
    import jupytext, matplotlib, peft, torch, transformers  # noqa: F401 (imported once, before forking)
    import traitspace.behavior, traitspace.extract, traitspace.findings, traitspace.finetune  # noqa: F401
    import traitspace.model_check, traitspace.project, traitspace.steer  # noqa: F401
    import traitspace.consistency, traitspace.realign, traitspace.sae  # noqa: F401
    from traitspace.core import faults

    def run_notebook(job):
        notebook = jupytext.read(job["notebook"])
        namespace = {"__name__": "__main__"}
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type != "code":
                continue
            exec(compile(cell.source, f"{job['notebook']} cell {index}", "exec"), namespace)
            if "parameters" in cell.metadata.get("tags", []):  # what papermill injects after that cell
                namespace.update(params_path=job["params"], overrides=job["overrides"])

    def run_job(job):
        if "warm" in job:
            from traitspace.core.models import load_model
            load_model(job["warm"])
        else:
            run_notebook(job)

    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(log, 1)
                os.dup2(log, 2)
                os.environ.update(job["env"])
                faults.reset()
                torch.set_num_threads(1)
                run_job(job)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                          "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}), flush=True)
""")


@dataclass
class Outcome:
    signal: int | None
    exit: int | None
    log: str
    events: list[tuple[str, str]]  # (event, path relative to the run folder), in order
    seconds: float

    def written(self) -> set[str]:
        return {path for event, path in self.events if event == "written"}


class Worker:
    def __init__(self, folder: Path):
        self.folder = folder
        self.jobs = 0
        env = {**os.environ, "PYTHONPATH": str(REPO / "lib"), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
               "TQDM_DISABLE": "1"}
        for name in (FAULT_AT, FAULT_ACTION, FAULT_LOG, FAULT_PATH):
            env.pop(name, None)
        self.stderr = (folder / "worker.log").open("wb")
        self.process = subprocess.Popen([sys.executable, "-c", WORKER], cwd=REPO, env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.stderr, text=True)

    def run(self, job: dict, env: dict | None = None, run_dir: Path | None = None) -> Outcome:
        self.jobs += 1
        log = self.folder / f"job-{self.jobs:03d}.log"
        events = self.folder / f"job-{self.jobs:03d}.events"
        job = {**job, "log": str(log), "env": {FAULT_LOG: str(events), **(env or {})}}
        started = time.perf_counter()
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], JOB_TIMEOUT_S)
        if not ready:  # a hung stage: stop the worker (and with it this module's tests) with what it printed
            self.process.kill()
            pytest.fail(f"no answer within {JOB_TIMEOUT_S} s to {job}: {log.read_text(errors='replace')[-3000:]}")
        reply = self.process.stdout.readline()
        assert reply, f"the fault-injection worker died: {(self.folder / 'worker.log').read_text()[-3000:]}"
        status = json.loads(reply)
        logged = []
        if events.is_file():
            for line in events.read_text().splitlines():
                event, _, path = line.split("\t", 2)
                logged.append((event, relative_to(path, run_dir)))
        return Outcome(status["signal"], status["exit"], log.read_text(errors="replace"), logged,
                       time.perf_counter() - started)

    def close(self):
        self.process.stdin.close()  # the worker ends at the end of its input
        try:
            self.process.wait(timeout=JOB_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.stderr.close()


def relative_to(path: str, run_dir: Path | None) -> str:
    if run_dir is not None and path.startswith(str(run_dir) + "/"):
        return path[len(str(run_dir)) + 1:]
    return path


def config_for(root: Path):
    return load_config(PARAMS, {**OVERRIDES, "run.output_root": str(root)})


def notebook_job(stage: str, root: Path) -> dict:
    return {"notebook": str(REPO / "notebooks" / f"{STAGES[stage].notebook}.py"), "params": str(PARAMS),
            "overrides": {**OVERRIDES, "run.output_root": str(root)}}


@dataclass
class Reference:
    worker: Worker
    tmp: Path
    run_dir: Path                 # the finished uninterrupted run
    before: dict[str, Path]       # stage -> copy of the run folder as it was before that stage
    after: dict[str, Path]        # stage -> copy as it was right after it
    events: dict[str, list[tuple[str, str]]]


# For working on this file: a folder where an earlier session left its reference (snapshots/ and
# events.json) is reused instead of running the seven notebooks again.
REUSE_REFERENCE = "TRAITSPACE_FAULT_REFERENCE"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    worker = Worker(tmp)
    warm = worker.run({"warm": config_for(tmp).model.source})  # the model cache is not a stage's work
    assert warm.exit == 0, warm.log[-3000:]
    reused = Path(os.environ.get(REUSE_REFERENCE, tmp / "none"))
    snapshots = reused / "snapshots" if (reused / "events.json").is_file() else tmp / "snapshots"
    before = {stage: snapshots / f"before-{stage}" for stage in STAGES}
    after = {stage: snapshots / f"after-{stage}" for stage in STAGES}
    if snapshots.parent == reused:
        events = {stage: [tuple(event) for event in logged] for stage, logged
                  in json.loads((reused / "events.json").read_text()).items()}
        yield Reference(worker, tmp, after[list(STAGES)[-1]], before, after, events)
        worker.close()
        return
    root = tmp / "reference"
    run_dir = root / RUN_NAME
    events = {}
    for stage in STAGES:
        snapshot(run_dir, before[stage])
        outcome = worker.run(notebook_job(stage, root), run_dir=run_dir)
        assert outcome.exit == 0, f"reference run of notebook {stage} failed:\n{outcome.log[-5000:]}"
        events[stage] = outcome.events
        print(f"reference notebook {stage}: {outcome.seconds:.1f} s, {len(outcome.events)} events", flush=True)
        snapshot(run_dir, after[stage])
    (tmp / "events.json").write_text(json.dumps(events))
    yield Reference(worker, tmp, run_dir, before, after, events)
    worker.close()


def snapshot(run_dir: Path, target: Path) -> Path:
    """A copy of ``run_dir`` (checkpoint identities are content hashes, so a copy measures as the original)."""
    if run_dir.exists():
        shutil.copytree(run_dir, target)
    else:
        target.mkdir(parents=True)
    return target


def working_copy(source: Path, tmp: Path, name: str) -> tuple[Path, Path]:
    """(output root, run folder) of a fresh copy of ``source`` under ``tmp/name``."""
    root = tmp / name
    shutil.copytree(source, root / RUN_NAME)
    return root, root / RUN_NAME


# -- what the tests compare --------------------------------------------------------------------------
def recorded_files(run_dir: Path, stage: str) -> list[str]:
    """Every data file the stage's manifests record, relative to the run folder."""
    files = []
    for folder in STAGES[stage].folders:
        for manifest in sorted((run_dir / folder).rglob(MANIFEST_NAME)):
            recorded = json.loads(manifest.read_text()).get("files") or {}
            files += [(manifest.parent / name).relative_to(run_dir).as_posix() for name in recorded]
    return sorted(files)


# Keys that hold wall-clock measurements or file identities (paths, modification times) in JSON files:
# they differ between any two runs; everything else must be equal.
_VOLATILE = re.compile(r"seconds|runtime|per_second|_at$|^fingerprint$|^sha256$|^bytes$|^attachments$|^files$")


# JSON lists written from a Python set, in hash order (peft's adapter_config.json).
_SETS = {"target_modules"}
# Every run of this module is a folder named RUN_NAME; paths into it are compared from there on.
_RUN_PATH = re.compile(rf"[^\s\"',]*/{RUN_NAME}(?=/|$)")


def _stable(value):
    if isinstance(value, dict):
        return {key: sorted(item) if key in _SETS else _stable(item) for key, item in value.items()
                if not _VOLATILE.search(str(key))}
    if isinstance(value, list):
        return [_stable(item) for item in value]
    if isinstance(value, str):
        return _RUN_PATH.sub("<run>", value)
    return value


# Table columns that describe the process that wrote them, not the result (training_summary.csv of
# notebook 01, trails.csv of notebook 08: whether this process trained, from which step, how fast): a
# resumed run differs there.
_RUN_HISTORY = re.compile(r"seconds|minutes|tokens/s|trained[ _]now|started[ _]from|padding share|this_process")


def _table(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, keep_default_na=False)
    except pd.errors.EmptyDataError:  # a table with no columns is written as an empty CSV
        return pd.DataFrame()
    table = table.drop(columns=[column for column in table.columns if _RUN_HISTORY.search(str(column))])
    for column in [column for column in table.columns if pd.api.types.is_string_dtype(table[column])]:
        table[column] = table[column].map(lambda cell: _RUN_PATH.sub("<run>", cell) if isinstance(cell, str) else cell)
    return table


def assert_same_outputs(stage: str, run_dir: Path, reference_dir: Path):
    """The stage's recorded files are the reference's, and every table, tensor file and JSON record
    holds the same values (JSON without its timings and file identities)."""
    from safetensors.torch import load_file

    names = recorded_files(reference_dir, stage)
    assert recorded_files(run_dir, stage) == names
    for name in names:
        ours, theirs = run_dir / name, reference_dir / name
        if ours.suffix in (".parquet", ".csv"):
            pd.testing.assert_frame_equal(_table(ours), _table(theirs), obj=name)
        elif ours.suffix == ".safetensors":
            mine, reference_tensors = load_file(ours), load_file(theirs)
            assert mine.keys() == reference_tensors.keys(), name
            for key, tensor in reference_tensors.items():
                torch.testing.assert_close(mine[key], tensor, rtol=0, atol=0, msg=f"{name}: {key}")
        elif ours.suffix in (".json", ".jsonl"):
            read = (lambda path: [json.loads(line) for line in path.read_text().splitlines()]) if ours.suffix == ".jsonl" \
                else (lambda path: json.loads(path.read_text()))
            assert _stable(read(ours)) == _stable(read(theirs)), name
        else:
            assert ours.read_bytes() == theirs.read_bytes(), name


def partial_writes(run_dir: Path) -> list[str]:
    return sorted(path.relative_to(run_dir).as_posix() for path in run_dir.rglob(f"*{PARTIAL_MARKER}*"))


def digests(run_dir: Path) -> dict[str, bytes]:
    return {path.relative_to(run_dir).as_posix(): path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}


def draw(events: list[tuple[str, str]], rng: random.Random, kinds: list[tuple[str, ...]]) -> list[int]:
    """One index into ``events`` per entry of ``kinds`` (the event kinds allowed there), each from its
    own equal stretch of the stage's work, so that three points fall early, midway and late."""
    n = len(kinds)
    stretches = [range(len(events) * k // n, len(events) * (k + 1) // n) for k in range(n)]
    points = []
    for stretch, allowed in zip(stretches, kinds):
        # (A file written inside a temporary folder has a random name: no later run would meet it again.)
        candidates = [index for index in stretch if events[index][0] in allowed and PARTIAL_MARKER not in events[index][1]]
        assert candidates, f"no {allowed} event in {[events[index] for index in stretch]}"
        points.append(rng.choice(candidates))
    return points


def fault_env(event: str, path: str, action: str = "kill") -> dict:
    # The first such event on that file: in a resumed run it names the same point of the work.
    return {FAULT_AT: f"{event}:1", FAULT_PATH: path, FAULT_ACTION: action}


def load_stage_outputs(stage: str, run_dir: Path):
    """The stage's own loader, as a later stage calls it (05 has none: `traitspace verify` checks it)."""
    from traitspace import behavior, consistency, extract, finetune, model_check, project, realign, sae, steer

    config = config_for(run_dir.parent)
    conditions = list(config.finetune.conditions)
    loaders = {
        "00": lambda: model_check.load_outputs(run_dir),
        "01": lambda: finetune.load_outputs(run_dir, conditions),
        "02": lambda: extract.load_outputs(run_dir),
        "03": lambda: project.load_outputs(run_dir),
        "04": lambda: behavior.load_outputs(run_dir, config.behavior, conditions),
        "06": lambda: steer.load_outputs(run_dir),
        "07": lambda: consistency.load_outputs(run_dir),
        "08": lambda: realign.load_outputs(run_dir),
        "09": lambda: sae.load_outputs(run_dir),
    }
    return loaders[stage]() if stage in loaders else None


def unit_of(stage: str, name: str) -> str | None:
    pattern = STAGES[stage].unit
    match = re.match(pattern, name) if pattern else None
    return match.group(match.lastindex or 0) if match else None


# -- the writers on their own (no model) ------------------------------------------------------------
def test_a_full_disk_inside_a_library_writer_names_the_file_and_keeps_its_previous_content(tmp_path, monkeypatch):
    from traitspace.core.artifacts import DiskFull, atomic_path, atomic_write_text

    target = atomic_write_text(tmp_path / "table.parquet", "previous")

    def full_disk(self, path, **kwargs):
        Path(path).write_bytes(b"half a tab")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full_disk)
    with pytest.raises(DiskFull, match=rf"no space left on the device to write {re.escape(str(target))} .*rerun"):
        with atomic_path(target) as temporary:
            pd.DataFrame({"a": [1]}).to_parquet(temporary)
    assert target.read_text() == "previous" and partial_writes(tmp_path) == []
    with pytest.raises(OSError, match="Permission denied") as other:  # other errors pass unchanged
        with atomic_path(tmp_path / "other.csv"):
            raise PermissionError(errno.EACCES, "Permission denied")
    assert not isinstance(other.value, DiskFull)


def test_the_fault_hook_acts_only_at_the_named_event_of_the_named_file(tmp_path, monkeypatch):
    from traitspace.core import faults
    from traitspace.core.artifacts import DiskFull, atomic_write_text

    log = tmp_path / "events.log"
    monkeypatch.setenv(FAULT_LOG, str(log))
    monkeypatch.setenv(FAULT_AT, "before-replace:2")
    monkeypatch.setenv(FAULT_PATH, "b.txt")
    monkeypatch.setenv(FAULT_ACTION, "enospc")
    faults.reset()
    for name in ("a.txt", "b.txt", "a.txt"):
        atomic_write_text(tmp_path / name, "first")
    with pytest.raises(DiskFull, match="b.txt"):
        atomic_write_text(tmp_path / "b.txt", "second")
    assert (tmp_path / "b.txt").read_text() == "first" and partial_writes(tmp_path) == []
    assert [line.split("\t")[:2] for line in log.read_text().splitlines()] == [
        ["before-replace", "1"], ["written", "1"], ["before-replace", "2"], ["written", "2"], ["before-replace", "3"],
        ["written", "3"], ["before-replace", "4"]]
    monkeypatch.setenv(FAULT_AT, "renamed:1")
    with pytest.raises(ValueError, match="TRAITSPACE_FAULT_AT='renamed:1'"):
        atomic_write_text(tmp_path / "b.txt", "third")


def test_leftovers_of_killed_writes_are_removed_when_the_stage_starts_and_finishes(tmp_path):
    from traitspace.core.artifacts import Stage, atomic_write_text

    stage = Stage(tmp_path / "stage", params_hash="h", code_version=1)
    atomic_write_text(stage.path / "parts" / "step-000001.parquet", "whole")
    leftovers = [stage.path / f".table.csv.k1ll3d{PARTIAL_MARKER}.csv", stage.path / "parts" / f".x.abc{PARTIAL_MARKER}"]
    leftovers[0].write_text("half")
    leftovers[1].mkdir()
    (leftovers[1] / "adapter_model.safetensors").write_text("half")
    (stage.path / ".keep").write_text("not ours")  # hidden files without the marker stay
    assert not stage.is_done() and partial_writes(tmp_path) == []
    leftovers[0].write_text("half")
    stage.mark_done()
    assert partial_writes(tmp_path) == [] and (stage.path / ".keep").is_file()
    assert set(json.loads(stage.manifest_path.read_text())["files"]) == {"parts/step-000001.parquet"}


def test_a_damaged_attachment_or_steering_result_is_measured_again(tmp_path):
    from traitspace.core.checkpoints import Checkpoint
    from traitspace.core.parts import CheckpointParts
    from traitspace.steer.measure import Measurement
    from traitspace.steer.results import ResultStore

    parts, checkpoint = CheckpointParts(tmp_path / "parts"), Checkpoint("em", 2, None)
    parts.write(checkpoint, pd.DataFrame({"value": [1.0]}), "f", attachments={"mean.bin": lambda path: path.write_bytes(b"12345678")})
    assert parts.is_fresh(checkpoint, "f")
    parts.attachment_path(checkpoint, "mean.bin").write_bytes(b"1234")
    assert not parts.is_fresh(checkpoint, "f")

    store, key = ResultStore(tmp_path / "results"), "sweep/trait/alpha+1.0"
    store.write(key, Measurement({"preference": 0.1}, pd.DataFrame({"a": [1]}), pd.DataFrame({"b": [2]})), "f")
    assert store.is_fresh(key, "f")
    parts.write(checkpoint, pd.DataFrame({"value": [1.0]}), "f")
    sidecar = parts.sidecar_path(checkpoint)
    sidecar.write_bytes(sidecar.read_bytes()[:20] + b"\xdf" + sidecar.read_bytes()[21:])  # not UTF-8 any more
    assert not parts.is_fresh(checkpoint, "f")

    answers = tmp_path / "results" / "sweep" / "trait" / "alpha+1.0.answers.parquet"
    answers.write_bytes(answers.read_bytes()[:-8])
    assert not store.is_fresh(key, "f")


# -- the stages, killed, damaged and out of disk -------------------------------------------------------
@pytest.mark.fault_injection
@pytest.mark.parametrize("stage", list(STAGES))
def test_killed_three_times_the_stage_resumes_to_the_uninterrupted_tables(reference, stage):
    events = reference.events[stage]
    rng = random.Random(f"kills-{stage}")
    # The first kill lands between a temporary's write and its rename, so a leftover must be cleaned up.
    points = draw(events, rng, [("before-replace",)] + [("before-replace", "written")] * (N_KILLS - 1))
    root, run_dir = working_copy(reference.before[stage], reference.tmp, f"kills-{stage}")
    left_behind = 0
    for index in points:
        event, path = events[index]
        outcome = reference.worker.run(notebook_job(stage, root), fault_env(event, path), run_dir)
        assert outcome.signal == 9, f"stage {stage} was not killed at {event} {path}:\n{outcome.log[-3000:]}"
        left_behind += len(partial_writes(run_dir))
    finished = reference.worker.run(notebook_job(stage, root), run_dir=run_dir)
    assert finished.exit == 0, finished.log[-5000:]
    print(f"stage {stage}: killed at {[events[index] for index in points]}; "
          f"{left_behind} temporaries seen after the kills")
    assert partial_writes(run_dir) == []
    assert_same_outputs(stage, run_dir, reference.after[stage])


@pytest.mark.fault_injection
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_damaged_output_is_named_and_only_its_part_recomputed(reference, stage):
    rng = random.Random(f"damage-{stage}")
    root, run_dir = working_copy(reference.after[stage], reference.tmp, f"damage-{stage}")
    name = rng.choice(recorded_files(run_dir, stage))
    target = run_dir / name
    data = target.read_bytes()
    if rng.random() < 0.5:
        damage, damaged = "truncated", data[: len(data) // 2]
    else:
        middle = len(data) // 2
        damage, damaged = "byte flipped", data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
    target.write_bytes(damaged)

    if stage == "05":
        checked, problems = verify_run(run_dir)
        assert [(problem.stage.relative_to(run_dir) / problem.file).as_posix() for problem in problems] == [name]
    else:
        with pytest.raises(DamagedOutput) as error:
            load_stage_outputs(stage, run_dir)
        message = str(error.value)
        assert f"notebook {stage}" in message and f"Rerun notebook {stage}" in message
        assert str(target) in message, message

    rerun = reference.worker.run(notebook_job(stage, root), run_dir=run_dir)
    assert rerun.exit == 0, rerun.log[-5000:]
    written = rerun.written()
    rewritten = {name, *(parent.as_posix() for parent in Path(name).parents)}  # a step folder is renamed whole
    assert rewritten & written, f"{name} ({damage}) was not recomputed"
    recomputed_units = {unit for path in written if (unit := unit_of(stage, path))}
    print(f"stage {stage}: {name} {damage}; units recomputed: {sorted(recomputed_units)}")
    assert recomputed_units <= {unit_of(stage, name)} - {None}, "undamaged parts were recomputed"
    assert partial_writes(run_dir) == []
    assert verify_run(run_dir)[1] == []
    assert_same_outputs(stage, run_dir, reference.after[stage])


@pytest.mark.fault_injection
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_full_disk_stops_the_stage_naming_the_file_and_keeps_earlier_results(reference, stage):
    events = reference.events[stage]
    rng = random.Random(f"disk-full-{stage}")
    [index] = draw(events, rng, [("before-replace",)])
    event, path = events[index]
    root, run_dir = working_copy(reference.before[stage], reference.tmp, f"disk-full-{stage}")
    earlier = digests(run_dir)

    failed = reference.worker.run(notebook_job(stage, root), fault_env(event, path, "enospc"), run_dir)
    assert failed.exit == 1, failed.log[-3000:]
    assert f"no space left on the device to write {run_dir / path}" in failed.log, failed.log[-3000:]
    now = digests(run_dir)
    assert {name: now.get(name) for name in earlier} == earlier, "a file written before the failure changed"
    assert partial_writes(run_dir) == []
    assert not (run_dir / path).exists() or (path in earlier and now[path] == earlier[path])
    print(f"stage {stage}: disk full at {path}")

    finished = reference.worker.run(notebook_job(stage, root), run_dir=run_dir)
    assert finished.exit == 0, finished.log[-5000:]
    assert_same_outputs(stage, run_dir, reference.after[stage])


@pytest.mark.fault_injection
def test_truncated_trait_vectors_stop_notebook_03_with_the_fix_and_notebook_02_recomputes_them(reference):
    """The issue's own report: safetensors' header error inside notebook 03 named neither file nor fix,
    and notebook 02 did not recompute because its manifest said done."""
    from traitspace import extract

    root, run_dir = working_copy(reference.after["03"], reference.tmp, "issue-scenario")
    vectors = run_dir / "traits" / "vectors.safetensors"
    vectors.write_bytes(vectors.read_bytes()[:100])
    expected = rf"stage traits \(notebook 02\).*{re.escape(str(vectors))}.*Rerun notebook 02"
    with pytest.raises(DamagedOutput, match=expected):
        extract.load_outputs(run_dir)
    project = reference.worker.run(notebook_job("03", root), run_dir=run_dir)
    assert project.exit == 1 and re.search(f"DamagedOutput: {expected}", project.log), project.log[-3000:]
    assert "SafetensorError" not in project.log
    rerun = reference.worker.run(notebook_job("02", root), run_dir=run_dir)
    assert rerun.exit == 0 and "traits/vectors.safetensors" in rerun.written(), rerun.log[-3000:]
    assert_same_outputs("02", run_dir, reference.after["02"])
