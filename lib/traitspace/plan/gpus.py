"""Reference GPUs for the plan: peak dense bf16 tensor throughput, memory and memory bandwidth.

Peak figures are the vendors' datasheet numbers *without* structured sparsity (datasheets print the
sparse figure, twice the dense one, first). Memory is what ``nvidia-smi`` reports as total on that
card (a little above the marketing "80 GB" on some cards), in GiB; a process gets slightly less
(CUDA context). These are the ceilings the plan divides by; the plan's utilisation assumptions say
how far below them real training and inference run.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuSpec:
    name: str
    bf16_tflops: float  # peak dense bf16 tensor-core TFLOP/s
    memory_gib: float
    bandwidth_tb_s: float  # memory bandwidth, TB/s (10^12 bytes/s)

    @property
    def peak_flops(self) -> float:
        return self.bf16_tflops * 1e12

    @property
    def bandwidth_bytes_s(self) -> float:
        return self.bandwidth_tb_s * 1e12


GPUS = {
    spec.name: spec
    for spec in (
        # NVIDIA H100 Tensor Core GPU datasheet, SXM5: BF16 1,979 TFLOPS with sparsity (989 dense),
        # 80 GB HBM3 at 3.35 TB/s; nvidia-smi: 81,559 MiB.
        GpuSpec("H100-80GB", 989.0, 79.6, 3.35),
        # Same datasheet, PCIe card: 1,513 TFLOPS with sparsity (756 dense), 80 GB HBM2e at 2.0 TB/s.
        GpuSpec("H100-PCIe", 756.0, 79.6, 2.0),
        # NVIDIA H200 Tensor Core GPU datasheet, SXM: BF16 1,979 TFLOPS with sparsity (989 dense),
        # 141 GB HBM3e at 4.8 TB/s; nvidia-smi: 143,771 MiB (this project's device: ~139 GiB free).
        GpuSpec("H200", 989.0, 140.4, 4.8),
        # NVIDIA A100 Tensor Core GPU datasheet, SXM 80GB: BF16 312 TFLOPS dense (624 sparse),
        # 2,039 GB/s; nvidia-smi: 81,920 MiB.
        GpuSpec("A100-80GB", 312.0, 80.0, 2.039),
        # Same datasheet, 40GB: BF16 312 TFLOPS dense, 1,555 GB/s; nvidia-smi: 40,960 MiB.
        GpuSpec("A100-40GB", 312.0, 40.0, 1.555),
        # NVIDIA L40S datasheet: BF16 733 TFLOPS with sparsity (362 dense), 48 GB GDDR6 at 864 GB/s;
        # nvidia-smi: 46,068 MiB.
        GpuSpec("L40S", 362.0, 45.0, 0.864),
        # NVIDIA L4 datasheet: BF16 242 TFLOPS with sparsity (121 dense), 24 GB GDDR6 at 300 GB/s;
        # nvidia-smi: 23,034 MiB.
        GpuSpec("L4", 121.0, 22.5, 0.300),
    )
}


def gpu_spec(name: str) -> GpuSpec:
    """The named reference GPU (case-insensitive); the error lists the known ones."""
    for known, spec in GPUS.items():
        if known.lower() == name.lower():
            return spec
    raise KeyError(f"unknown GPU {name!r}; known: {', '.join(GPUS)} (add one to traitspace/plan/gpus.py)")
