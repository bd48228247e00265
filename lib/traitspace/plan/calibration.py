"""Figures measured on GPUs (../shared/DEVICE.md, 2026-11-27), set against the plan's assumptions.

They were measured on the embedded model's 135M shape (random weights, bf16), the only model that
fitted the device runs so far; the plan's utilisation assumptions are for 7B-32B models, where matmuls
are large enough to keep the tensor cores busy. The comparison prints the utilisation each figure
implies, so a reader sees how far a small model is from them; it does not recalibrate the plan (no
figure was measured at a real-scale shape).
"""

from __future__ import annotations

from dataclasses import dataclass

from .gpus import GPUS
from .shapes import ModelShape


@dataclass(frozen=True)
class Measured:
    gpu: str
    what: str
    flops_per_token_factor: int  # 2: forward, 6: training
    tokens_per_s: float


MEASURED = (
    Measured("H200", "capture every layer (ours), random 135M shape", 2, 175_000),
    Measured("H200", "plain Trainer + peft LoRA, random 135M shape", 6, 2_880),
    Measured("H100-80GB", "forward, SmolLM2-135M, batch 32 x 256", 2, 331_000),
    Measured("H100-80GB", "LoRA r16 step, SmolLM2-135M (bare script)", 6, 42_600),
    Measured("H100-80GB", "QLoRA step, SmolLM2-135M (bare script)", 6, 18_000),
)
MEASURED_SHAPE = "HuggingFaceTB/SmolLM2-135M-Instruct"


def implied_mfu(shape: ModelShape, measured: Measured) -> float:
    """Model FLOP utilisation a measured throughput implies: factor x N x tokens/s / peak."""
    return measured.flops_per_token_factor * shape.flop_params * measured.tokens_per_s / GPUS[measured.gpu].peak_flops
