"""GPU memory and time of each stage, from a model's shape, the stage's work and a reference GPU.

Every number is a :class:`Term` that carries the arithmetic it came from, so the printed plan can be
checked by hand. The rules, each an approximation stated where it is used:

- FLOPs: 2 N per token for a forward pass and 6 N per token for training (Kaplan et al. 2020, N the
  parameters that multiply activations; attention's own FLOPs, a few percent at these lengths, are
  left out). With LoRA the frozen weights get no weight gradients (4 N), but gradient checkpointing
  recomputes the forward pass (+2 N), so 6 N stands for the presets, which all checkpoint.
- Time = FLOPs / (peak bf16 FLOP/s x MFU), MFU (model FLOP utilisation) an assumption printed with
  the plan. Decoding one token per row is bounded by reading every weight once per step, so each
  decode step takes at least weight bytes / memory bandwidth (plus the KV cache read).
- Memory: weights (bf16 2 bytes; NF4 4 bits + 0.127 bits of double-quantized constants per weight of
  the decoder's linear layers, the rest bf16: Dettmers et al. 2023), LoRA parameters in fp32 with
  their gradients and AdamW's two moments (16 bytes each; 10 with an 8-bit optimizer), activations
  of 34 x seq x batch x hidden bytes per layer (Korthikanti et al. 2022, 16-bit, fused attention, no
  sequence parallelism; one layer's worth plus each layer's input with gradient checkpointing),
  logits in bf16 plus their fp32 copy and gradient (10 bytes per vocabulary entry), the KV cache
  (2 x layers x KV heads x head_dim x 2 bytes per token), and :data:`CUDA_OVERHEAD_GIB` for the CUDA
  context and the allocator's slack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .gpus import GpuSpec
from .shapes import ModelShape
from .workload import Forward, Sampling, StageWork, Training

GIB = 2**30
NF4_BYTES_PER_WEIGHT = (4 + 0.127) / 8
CUDA_OVERHEAD_GIB = 1.5  # CUDA context (~0.5 GiB) + allocator fragmentation; an assumption
ACTIVATION_BYTES_PER_LAYER = 34  # x seq x batch x hidden (Korthikanti et al. 2022, Table 2)
LOGIT_BYTES = 2 + 4 + 4  # bf16 logits, their fp32 copy for the loss, its gradient


@dataclass(frozen=True)
class Assumptions:
    """Utilisation assumed for the time estimates; printed with every plan."""

    mfu_train: float = 0.35  # bf16 LoRA training (the goal issue 21 sets for an H100/H200)
    mfu_train_4bit: float = 0.25  # QLoRA: 4-bit weights are dequantized for every matmul
    mfu_forward: float = 0.40  # batched forward passes (prefill, capture, log-likelihoods)


@dataclass(frozen=True)
class Term:
    label: str
    value: float  # GiB for memory, seconds for time
    arithmetic: str


@dataclass
class StageEstimate:
    stage: str
    title: str
    memory: list[Term] = field(default_factory=list)  # the peak part's terms
    time: list[Term] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def memory_gib(self) -> float:
        return sum(term.value for term in self.memory)

    @property
    def seconds(self) -> float:
        return sum(term.value for term in self.time)


def _g(number: float) -> str:
    """A number for arithmetic lines: 3 significant digits, engineering-style exponents."""
    return f"{number:.3g}"


def weight_bytes(shape: ModelShape, four_bit: bool, bytes_per_value: int = 2) -> float:
    if not four_bit:
        return shape.n_params * bytes_per_value
    return shape.decoder_linear_params * NF4_BYTES_PER_WEIGHT + (shape.n_params - shape.decoder_linear_params) * bytes_per_value


def weights_term(shape: ModelShape, four_bit: bool, bytes_per_value: int = 2) -> Term:
    total = weight_bytes(shape, four_bit, bytes_per_value)
    if four_bit:
        rest = shape.n_params - shape.decoder_linear_params
        how = (f"{_g(shape.decoder_linear_params)} linear weights x {NF4_BYTES_PER_WEIGHT:.4f} B (NF4) + "
               f"{_g(rest)} others x {bytes_per_value} B")
    else:
        how = f"{_g(shape.n_params)} params x {bytes_per_value} B"
    return Term("weights", total / GIB, f"{how} = {_g(total / GIB)} GiB")


def overhead_term() -> Term:
    return Term("CUDA context + slack", CUDA_OVERHEAD_GIB, f"{CUDA_OVERHEAD_GIB} GiB (assumed)")


def kv_cache_term(shape: ModelShape, rows: int, tokens: float, bytes_per_value: int = 2) -> Term:
    total = shape.kv_values_per_token * bytes_per_value * rows * tokens
    return Term("KV cache", total / GIB,
                f"2 x {shape.num_layers} layers x {shape.num_kv_heads} kv heads x {shape.head_dim} x {bytes_per_value} B "
                f"x {rows} rows x {_g(tokens)} tokens = {_g(total / GIB)} GiB")


def training_estimate(shape: ModelShape, gpu: GpuSpec, work: Training, *, lora_r: int, four_bit: bool,
                      gradient_checkpointing: bool, optimizer: str, assumptions: Assumptions,
                      bytes_per_value: int = 2) -> tuple[list[Term], list[Term]]:
    """(memory terms at the largest batch, time terms) of fine-tuning."""
    lora_params = lora_r * shape.lora_params_per_rank
    state_bytes = 4 + 4 + (2 if "8bit" in optimizer else 8)
    batch, seq, hidden, layers = work.batch_size, work.longest_row, shape.hidden_size, shape.num_layers
    per_layer = ACTIVATION_BYTES_PER_LAYER * seq * batch * hidden
    if gradient_checkpointing:
        activations = per_layer + layers * seq * batch * hidden * bytes_per_value
        activation_how = (f"one layer {ACTIVATION_BYTES_PER_LAYER} x {seq} seq x {batch} batch x {hidden} hidden + "
                          f"{layers} layer inputs x {seq} x {batch} x {hidden} x {bytes_per_value} B")
    else:
        activations = layers * per_layer
        activation_how = f"{layers} layers x {ACTIVATION_BYTES_PER_LAYER} x {seq} seq x {batch} batch x {hidden} hidden"
    logits = batch * seq * shape.vocab_size * LOGIT_BYTES
    memory = [
        weights_term(shape, four_bit, bytes_per_value),
        Term("LoRA + grads + optimizer", lora_params * state_bytes / GIB,
             f"r {lora_r} x {_g(shape.lora_params_per_rank)} (in+out over linear layers) = {_g(lora_params)} params x "
             f"{state_bytes} B = {_g(lora_params * state_bytes / GIB)} GiB"),
        Term("activations", activations / GIB, f"{activation_how} = {_g(activations / GIB)} GiB"),
        Term("logits", logits / GIB, f"{batch} x {seq} x {shape.vocab_size} vocab x {LOGIT_BYTES} B = {_g(logits / GIB)} GiB"),
        overhead_term(),
    ]
    mfu = assumptions.mfu_train_4bit if four_bit else assumptions.mfu_train
    flops = 6 * shape.flop_params * work.tokens
    seconds = flops / (gpu.peak_flops * mfu)
    time = [Term("training", seconds,
                 f"6 x {_g(shape.flop_params)} N x {_g(work.tokens)} tokens ({work.trails} trails x {_g(work.rows_per_trail)} rows "
                 f"x {_g(work.epochs)} epochs x {_g(work.tokens_per_row)} tokens/row) = {_g(flops)} FLOP / "
                 f"({gpu.bf16_tflops:g} TFLOP/s x MFU {mfu}) = {_g(seconds)} s")]
    return memory, time


def forward_estimate(shape: ModelShape, gpu: GpuSpec, work: Forward, *, four_bit: bool, assumptions: Assumptions,
                     bytes_per_value: int = 2) -> tuple[list[Term], list[Term]]:
    rows, seq = work.batch_size, max(1, math.ceil(work.tokens_per_sequence))
    # No gradients: only the layer being run holds activations, about its input, attention output and
    # residual (4 x hidden) and the MLP's gate, up and product (3 x intermediate) per token.
    per_token = (4 * shape.hidden_size + 3 * shape.intermediate_size) * bytes_per_value
    transient = rows * seq * per_token
    memory = [weights_term(shape, four_bit, bytes_per_value), kv_cache_term(shape, rows, seq, bytes_per_value),
              Term("activations (one layer)", transient / GIB,
                   f"{rows} rows x {seq} tokens x (4 x {shape.hidden_size} + 3 x {shape.intermediate_size}) x "
                   f"{bytes_per_value} B = {_g(transient / GIB)} GiB"),
              overhead_term()]
    flops = 2 * shape.flop_params * work.tokens
    seconds = flops / (gpu.peak_flops * assumptions.mfu_forward)
    time = [Term(work.what, seconds,
                 f"2 x {_g(shape.flop_params)} N x {_g(work.tokens)} tokens ({work.sequences} x {_g(work.tokens_per_sequence)}) "
                 f"= {_g(flops)} FLOP / ({gpu.bf16_tflops:g} TFLOP/s x MFU {assumptions.mfu_forward}) = {_g(seconds)} s")]
    return memory, time


def sampling_estimate(shape: ModelShape, gpu: GpuSpec, work: Sampling, *, four_bit: bool, assumptions: Assumptions,
                      bytes_per_value: int = 2) -> tuple[list[Term], list[Term]]:
    rows = min(work.batch_size, work.sequences)
    context = work.prompt_tokens + work.new_tokens
    memory = [weights_term(shape, four_bit, bytes_per_value), kv_cache_term(shape, rows, context, bytes_per_value),
              Term("logits", rows * shape.vocab_size * 4 / GIB,
                   f"{rows} rows x {shape.vocab_size} vocab x 4 B = {_g(rows * shape.vocab_size * 4 / GIB)} GiB"),
              overhead_term()]
    prefill_flops = 2 * shape.flop_params * work.sequences * work.prompt_tokens
    prefill = prefill_flops / (gpu.peak_flops * assumptions.mfu_forward)
    weights = weight_bytes(shape, four_bit, bytes_per_value)
    kv_read = shape.kv_values_per_token * bytes_per_value * rows * (work.prompt_tokens + work.new_tokens / 2)
    memory_bound = (weights + kv_read) / gpu.bandwidth_bytes_s
    compute_bound = 2 * shape.flop_params * rows / (gpu.peak_flops * assumptions.mfu_forward)
    step = max(memory_bound, compute_bound)
    decode = work.decode_steps * step
    time = [
        Term(f"{work.what}: prefill", prefill,
             f"2 x {_g(shape.flop_params)} N x {work.sequences} x {_g(work.prompt_tokens)} prompt tokens / "
             f"({gpu.bf16_tflops:g} TFLOP/s x MFU {assumptions.mfu_forward}) = {_g(prefill)} s"),
        Term(f"{work.what}: decode", decode,
             f"{work.decode_steps} steps (ceil({work.sequences} / {work.batch_size}) x {work.new_tokens} tokens) x "
             f"max(read {_g((weights + kv_read) / 1e9)} GB / {gpu.bandwidth_tb_s:g} TB/s = {_g(memory_bound * 1e3)} ms, "
             f"compute {_g(compute_bound * 1e3)} ms) = {_g(decode)} s"),
    ]
    return memory, time


def estimate_stage(shape: ModelShape, gpu: GpuSpec, work: StageWork, *, lora_r: int, four_bit: bool,
                   gradient_checkpointing: bool, optimizer: str, assumptions: Assumptions,
                   bytes_per_value: int = 2) -> StageEstimate:
    """One stage: its parts' times add up; its memory is the largest part's (they run one after another)."""
    estimate = StageEstimate(work.stage, work.title, notes=list(work.notes))
    for part in work.parts:
        if isinstance(part, Training):
            memory, time = training_estimate(shape, gpu, part, lora_r=lora_r, four_bit=four_bit,
                                             gradient_checkpointing=gradient_checkpointing, optimizer=optimizer,
                                             assumptions=assumptions, bytes_per_value=bytes_per_value)
        elif isinstance(part, Forward):
            memory, time = forward_estimate(shape, gpu, part, four_bit=four_bit, assumptions=assumptions,
                                            bytes_per_value=bytes_per_value)
        else:
            memory, time = sampling_estimate(shape, gpu, part, four_bit=four_bit, assumptions=assumptions,
                                             bytes_per_value=bytes_per_value)
        if sum(term.value for term in memory) > estimate.memory_gib:
            estimate.memory = memory
        estimate.time += time
    return estimate


def estimate_run(config, shape: ModelShape, gpu: GpuSpec, assumptions: Assumptions = Assumptions()) -> list[StageEstimate]:
    """Every stage of ``config`` on ``gpu``."""
    from .workload import plan_work

    bytes_per_value = 4 if config.model.dtype == "float32" else 2  # "auto" is bf16 on a GPU (core.models.pick_dtype)
    return [estimate_stage(shape, gpu, work, lora_r=config.finetune.lora_r, four_bit=config.model.quantization == "nf4",
                           gradient_checkpointing=config.finetune.gradient_checkpointing,
                           optimizer=config.finetune.optimizer, assumptions=assumptions, bytes_per_value=bytes_per_value)
            for work in plan_work(config)]


def gpus_needed(estimate: StageEstimate, gpu: GpuSpec) -> int | None:
    """GPUs of this kind the stage needs when the weights are spread over them (``device_map="auto"``,
    core.models): each holds its share of the weights plus, at worst, all the other terms. None: the
    other terms alone exceed one GPU (lower the batch or the sequence length)."""
    weights = sum(term.value for term in estimate.memory if term.label == "weights")
    others = estimate.memory_gib - weights
    if others >= gpu.memory_gib:
        return None
    return max(1, math.ceil(weights / (gpu.memory_gib - others)))
