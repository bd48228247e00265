"""``python -m traitspace plan params/X.yaml [--gpu H100-80GB] [--model-config FOLDER] [--set k=v]``."""

from __future__ import annotations

import argparse
import sys

from .estimate import Assumptions
from .gpus import GPUS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("params", help="params file, e.g. params/qwen3_32b_qlora.yaml")
    parser.add_argument("--gpu", default="H100-80GB", help=f"reference GPU: {', '.join(GPUS)} (default H100-80GB)")
    parser.add_argument("--model-config", metavar="FOLDER",
                        help="a folder holding the model's config.json (no weights needed), for hub ids the plan "
                             "does not know offline")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="settings",
                        help="override one parameter, as for `run`")
    defaults = Assumptions()
    parser.add_argument("--mfu-train", type=float, default=defaults.mfu_train, help="assumed MFU, bf16 LoRA training")
    parser.add_argument("--mfu-train-4bit", type=float, default=defaults.mfu_train_4bit, help="assumed MFU, QLoRA")
    parser.add_argument("--mfu-forward", type=float, default=defaults.mfu_forward, help="assumed MFU, forward passes")


def run(args: argparse.Namespace, overrides: dict) -> int:
    from ..core.config import load_config
    from .estimate import estimate_run
    from .gpus import gpu_spec
    from .report import format_plan
    from .shapes import model_shape

    try:
        gpu = gpu_spec(args.gpu)
    except KeyError as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2
    config = load_config(args.params, overrides)  # ConfigError: reported by __main__
    from ..core.models import ModelLoadError

    try:
        shape = model_shape(config.model.source, config.model.revision, args.model_config)
    except (LookupError, ModelLoadError) as error:  # no config.json to be had: say where to get one
        print(f"error: {error}", file=sys.stderr)
        return 2
    assumptions = Assumptions(args.mfu_train, args.mfu_train_4bit, args.mfu_forward)
    print(format_plan(config, shape, gpu, estimate_run(config, shape, gpu, assumptions), assumptions))
    return 0
