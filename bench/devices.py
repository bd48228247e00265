"""The device options every benchmark here shares: ``--device`` and ``--threads``, and a clock that
waits for the device.

A benchmark loads its model on ``--device`` (``auto``: CUDA, then MPS, then the CPU, the same choice as
``model.device: auto`` in params) and creates every input on the model's device. Settings that only
mean something on a CPU (torch's thread count) are applied only there. CUDA runs asynchronously, so a
timer read without :func:`synchronize` would measure the launch of the kernels, not their work.
"""

from __future__ import annotations

import argparse

import torch

from traitspace.core.models import pick_device


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default: auto)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads, CPU only (on a CPU shared with other jobs, 1 avoids OpenMP "
                             "oversubscription); default: torch's choice")


def prepare_device(name: str, threads: int | None = None) -> torch.device:
    """The device ``name`` stands for; on the CPU, ``threads`` torch threads when given."""
    device = pick_device(name)
    if threads and device.type == "cpu":
        torch.set_num_threads(threads)
    return device


def describe(device: torch.device) -> str:
    """The device in words for a benchmark's first line (a GPU's name; a CPU's thread count)."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({device})"
    if device.type == "cpu":
        return f"CPU, {torch.get_num_threads()} torch threads"
    return str(device)


def synchronize(device: torch.device) -> None:
    """Wait until the device has finished the work queued so far (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
