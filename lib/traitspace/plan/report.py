"""The plan as text: each stage's peak GPU memory and time with the arithmetic behind every term."""

from __future__ import annotations

from typing import Sequence

from .calibration import MEASURED, MEASURED_SHAPE, implied_mfu
from .estimate import Assumptions, StageEstimate, gpus_needed
from .gpus import GpuSpec
from .shapes import ModelShape, model_shape
from .workload import CHARS_PER_TOKEN, TEMPLATE_TOKENS_PER_MESSAGE


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _count(number: float) -> str:
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if number >= size:
            return f"{number / size:.3g}{unit}"
    return f"{number:.0f}"


def _fit(estimate: StageEstimate, gpu: GpuSpec) -> str:
    if not estimate.memory:
        return "no GPU"
    needed = gpus_needed(estimate, gpu)
    if needed == 1:
        return f"fits one {gpu.name}"
    if needed is None:
        return f"does NOT fit: even without weights it exceeds one {gpu.name}; lower the batch size or max_length"
    return f"does NOT fit one {gpu.name}; weights spread over {needed} of them (device_map=auto) would"


def format_plan(config, shape: ModelShape, gpu: GpuSpec, estimates: Sequence[StageEstimate],
                assumptions: Assumptions) -> str:
    model = config.model
    dtype = "bfloat16 (dtype auto on a GPU)" if model.dtype == "auto" else model.dtype
    precision = "4-bit NF4 weights (QLoRA)" if model.quantization == "nf4" else f"{dtype} weights"
    lines = [
        f"plan for {config.params_path} (run {config.run_name}) on {gpu.name}: {gpu.bf16_tflops:g} TFLOP/s bf16 dense peak, "
        f"{gpu.memory_gib:g} GiB, {gpu.bandwidth_tb_s:g} TB/s",
        f"model {model.source}: {_count(shape.n_params)} parameters (N = {_count(shape.flop_params)} multiply "
        f"activations), {shape.num_layers} layers, hidden {shape.hidden_size}, MLP {shape.intermediate_size}, vocab "
        f"{shape.vocab_size}, {shape.num_heads} heads / {shape.num_kv_heads} KV heads x {shape.head_dim}; {precision}; "
        f"shape from {shape.source_of_shape}",
        f"assumed: MFU {assumptions.mfu_train} for bf16 LoRA training, {assumptions.mfu_train_4bit} for 4-bit, "
        f"{assumptions.mfu_forward} for forward passes; decode steps bounded by memory bandwidth; "
        f"{CHARS_PER_TOKEN:g} characters per token + {TEMPLATE_TOKENS_PER_MESSAGE} template tokens per message; "
        "answers run to max_new_tokens (an upper bound)",
        "",
    ]
    for estimate in estimates:
        lines.append(f"{estimate.stage} {estimate.title}: peak {estimate.memory_gib:.1f} GiB ({_fit(estimate, gpu)}), "
                     f"time {_duration(estimate.seconds)}")
        for term in estimate.memory:
            lines.append(f"    memory  {term.label:<26} {term.value:8.2f} GiB  {term.arithmetic}")
        for term in estimate.time:
            lines.append(f"    time    {term.label:<26} {_duration(term.value):>12}  {term.arithmetic}")
        for note in estimate.notes:
            lines.append(f"    note    {note}")
    from ..runner import discover_notebooks

    estimated = {estimate.stage for estimate in estimates}
    for notebook in discover_notebooks():
        if notebook.stem[:2] not in estimated:
            lines.append(f"{notebook.stem[:2]} {notebook.stem[3:].replace('_', ' ')}: not estimated (the plan has no "
                         "workload model for this notebook yet)")
    total = sum(estimate.seconds for estimate in estimates)
    lines += ["", f"total GPU time of the stages above: {_duration(total)} (one GPU; spreading a model over several "
              "GPUs adds memory, not speed)"]
    lines += ["", comparison_lines()]
    return "\n".join(lines)


def comparison_lines() -> str:
    """The utilisation implied by the figures measured on GPUs so far (135M shape), for comparison."""
    shape = model_shape(MEASURED_SHAPE)
    rows = [f"for comparison, measured on GPUs (../shared/DEVICE.md; {MEASURED_SHAPE} shape, N = "
            f"{_count(shape.flop_params)}): implied MFU"]
    for measured in MEASURED:
        rows.append(f"    {measured.gpu:<10} {measured.what:<48} {measured.tokens_per_s:>9,.0f} tok/s -> MFU "
                    f"{implied_mfu(shape, measured):.2%}")
    rows.append("    a 135M model is bound by kernel launches and Python, not by its matmuls; no real-scale shape has "
                "been measured yet, so the assumptions above are not calibrated (bench/ on a GPU would measure them)")
    return "\n".join(rows)
