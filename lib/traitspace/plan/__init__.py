"""``python -m traitspace plan``: each stage's GPU memory and time, estimated from the model's shape and
the params, with no GPU and no weights.

Modules: ``gpus`` (reference GPUs), ``shapes`` (a model's sizes from its config), ``workload`` (what
each stage computes, from the params), ``estimate`` (the arithmetic), ``calibration`` (figures measured
on GPUs, for comparison), ``report`` (printing).
"""

from .estimate import Assumptions, StageEstimate, Term, estimate_run, gpus_needed  # noqa: F401
from .gpus import GPUS, GpuSpec, gpu_spec  # noqa: F401
from .report import format_plan  # noqa: F401
from .shapes import ModelShape, model_shape  # noqa: F401
