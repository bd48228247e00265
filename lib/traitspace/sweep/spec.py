"""A sweep file: a base params file, a grid of dotted-key overrides, where and how the runs go.

```yaml
name: lora_rank                  # outputs/sweeps/<name>/ (default: the sweep file's stem)
params: params/qwen25_7b.yaml    # the base params, relative to the project root
only: ["01", "03"]               # notebooks run in every cell (default: all)
set: {finetune.seeds: [0]}       # overrides shared by every cell
axes:                            # the grid: every combination of these values is one run
  finetune.lora_r: [8, 16, 32, 64]
  model.quantization: [none, nf4]
  recipe:                        # a named axis (no dot): each value is a label and a set of overrides
    fast: {finetune.learning_rate: 2.0e-4, finetune.epochs: 3}
    slow: {finetune.learning_rate: 1.0e-5, finetune.epochs: 1}
executor: {cluster: slurm, gpus_per_run: 1, timeout_min: 720, partition: gpu, parallel: 4}
```
Every cell's params are validated (:func:`traitspace.core.config.load_config`) before anything is
submitted, so a misspelt key fails the sweep at once with the cell and the key named.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..core import paths
from ..core.config import ConfigError, RunConfig, load_config
from ..core.io import DataFileError, load_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExecutorSection(_Strict):
    """Where the runs execute (submitit). Slurm settings are ignored by the local executor."""

    cluster: Literal["auto", "local", "slurm", "debug"] = Field(
        "auto", description="auto: Slurm when submitit finds `srun` on the PATH, else local worker processes; debug: in this "
        "process, one run after another (pdb-friendly)")
    parallel: int = Field(2, ge=1, description="Runs at once: local worker processes, or Slurm's array parallelism")
    gpus_per_run: int = Field(0, ge=0, description="GPUs per run (Slurm gres; locally CUDA_VISIBLE_DEVICES)")
    cpus_per_run: int = Field(1, ge=1)
    mem_gb: float | None = Field(None, gt=0, description="Slurm memory per run; None: the partition's default")
    timeout_min: int = Field(24 * 60, ge=1, description="Time limit per run, minutes")
    partition: str | None = Field(None, description="Slurm partition")
    slurm_additional: dict[str, Any] = Field(default_factory=dict,
                                             description="Other sbatch options, e.g. {account: myproj, qos: high}")


class SweepSpec(_Strict):
    name: str | None = None
    params: str
    only: list[str] | None = Field(None, description="Notebooks run in every cell (numbers or names); None: all")
    set: dict[str, Any] = Field(default_factory=dict, description="Dotted-key overrides shared by every cell")
    axes: dict[str, list[Any] | dict[str, dict[str, Any]]] = Field(
        description="Dotted key -> values, or a name -> {label: {dotted key: value}}; the grid is their product")
    output_root: str = Field("outputs/sweeps", description="The sweep's folder is <output_root>/<name>/")
    executor: ExecutorSection = ExecutorSection()

    @field_validator("axes")
    @classmethod
    def _axes_well_formed(cls, axes: dict[str, Any]) -> dict[str, Any]:
        if not axes:
            raise ValueError("give at least one axis (a dotted params key and its values)")
        for key, values in axes.items():
            if not values:
                raise ValueError(f"{key}: no values")
            if isinstance(values, dict):
                if "." in key:
                    raise ValueError(f"{key}: a dotted key takes a list of values; a named axis (no dot) takes "
                                     "{label: {dotted.key: value}}")
                for label, overrides in values.items():
                    if not all("." in dotted for dotted in overrides):
                        raise ValueError(f"{key}.{label}: every override is a dotted params key")
            elif "." not in key:
                raise ValueError(f"{key!r}: a list of values needs a dotted params key, e.g. finetune.lora_r; "
                                 "a named axis takes {label: {dotted.key: value}}")
        return axes

    @field_validator("only", mode="before")
    @classmethod
    def _notebook_numbers_as_text(cls, only: Any) -> Any:
        # YAML reads `only: [00, 01]` as integers; notebooks are named by two-digit text.
        return [f"{item:02d}" if isinstance(item, int) else item for item in only] if isinstance(only, list) else only


@dataclass(frozen=True)
class Cell:
    """One run of the grid: its name (also its run name), the axis values and the full overrides."""

    name: str
    values: dict[str, Any]
    overrides: dict[str, Any]
    config: RunConfig


def _label(value: Any) -> str:
    text = "_".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "none"


def cell_name(sweep: str, values: dict[str, Any]) -> str:
    """``<sweep>-<key>=<value>-...``, the key's last part when that is unambiguous."""
    leaves = [key.rsplit(".", 1)[-1] for key in values]
    parts = [f"{leaf if leaves.count(leaf) == 1 else key}={_label(value)}"
             for (key, value), leaf in zip(values.items(), leaves)]
    return "-".join([sweep, *parts])


@dataclass(frozen=True)
class Sweep:
    spec: SweepSpec
    name: str
    folder: Path
    params_path: Path
    cells: list[Cell]

    @property
    def runs_root(self) -> Path:
        return self.folder / "runs"


def load_sweep(path: str | Path) -> Sweep:
    """Read a sweep file and expand its grid; every cell's params are validated here."""
    path = paths.resolve(path)
    try:
        spec = SweepSpec.model_validate(load_yaml(path) or {})
    except DataFileError as error:
        raise ConfigError(str(error)) from None
    except ValidationError as error:
        problems = [f"  {'.'.join(map(str, item['loc']))}: "
                    f"{'unknown key' if item['type'] == 'extra_forbidden' else item['msg']}" for item in error.errors()]
        raise ConfigError("\n".join([f"{path}: invalid sweep", *problems])) from None
    name = spec.name or path.stem
    folder = paths.resolve(spec.output_root) / name
    params_path = paths.resolve(spec.params)
    keys = list(spec.axes)
    cells = []
    for combination in itertools.product(*(spec.axes[key] for key in keys)):
        values = dict(zip(keys, combination))  # a named axis' value is its label
        run_name = cell_name(name, values)
        overrides = dict(spec.set)
        for key, value in values.items():
            overrides.update(spec.axes[key][value] if isinstance(spec.axes[key], dict) else {key: value})
        overrides.update({"run.name": run_name, "run.output_root": str(folder / "runs")})
        try:
            config = load_config(params_path, overrides)
        except ConfigError as error:
            raise ConfigError(f"sweep {path}, cell {run_name}:\n{error}") from None
        cells.append(Cell(run_name, values, overrides, config))
    return Sweep(spec, name, folder, params_path, cells)
