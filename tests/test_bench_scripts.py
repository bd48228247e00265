"""Every benchmark script still runs: its ``main`` on the CPU (``--device cpu``) with a tiny random
model and sizes cut to seconds. A smoke check of the code paths and the device option, not a
measurement; the numbers they print are not checked."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"

# Arguments that make each script finish in seconds on a tiny model.
SMOKE_ARGUMENTS = {
    "hooks": ["--batch", "2", "--tokens", "96", "--repeats", "1", "--personas", "2", "--questions", "2"],
    "sample": ["--questions", "2", "--samples", "2", "--single", "1", "--max-new-tokens", "4", "--batch", "4"],
    "train": ["--examples", "8", "--epochs", "0.5", "--batch", "2", "--checkpoints", "1"],
    "monitor": ["--steps", "2", "--repeats", "1"],
    "project": ["--checkpoints", "1", "--train-steps", "1"],
    "preference": ["--checkpoints", "1", "--questions", "2", "--repeats", "1"],
    "sae": ["--checkpoints", "1", "--steps", "2", "--d-sae", "64", "--k", "4", "--answers", "4"],
    "adapters": ["--batch", "2", "--tokens", "12", "--new-tokens", "3", "--repeats", "1"],
}
SHARED_MODULES = {"devices"}  # imported by the scripts, not a benchmark itself


def test_every_benchmark_script_has_a_smoke_run():
    scripts = {path.stem for path in BENCH.glob("*.py")} - SHARED_MODULES
    assert scripts == set(SMOKE_ARGUMENTS), "add the new script's quick arguments to SMOKE_ARGUMENTS"


@pytest.fixture
def bench_modules(monkeypatch, tmp_path_factory):
    """bench/ on sys.path as when a script runs (they import each other), the tiny models cached in a
    temporary folder; afterwards the process state a script sets for itself (gradients off, torch
    threads) is restored and its modules forgotten (their names are generic)."""
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.setenv("TRAITSPACE_CACHE", str(tmp_path_factory.getbasetemp() / "bench-cache"))
    before, grad_enabled, threads = set(sys.modules), torch.is_grad_enabled(), torch.get_num_threads()
    yield
    torch.set_grad_enabled(grad_enabled)
    torch.set_num_threads(threads)
    for name in set(sys.modules) - before:
        if name in SMOKE_ARGUMENTS or name in SHARED_MODULES:
            del sys.modules[name]


@pytest.mark.parametrize("script", sorted(SMOKE_ARGUMENTS))
def test_benchmark_runs_on_the_cpu_with_a_tiny_model(script, bench_modules, capsys):
    module = importlib.import_module(script)
    module.main(["--model", "tiny:llama", "--device", "cpu", "--threads", "1", *SMOKE_ARGUMENTS[script]])
    printed = capsys.readouterr().out
    assert "tiny:llama" in printed and "CPU, 1 torch threads" in printed
