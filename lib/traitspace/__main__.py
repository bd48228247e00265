"""Command line: ``python -m traitspace run params/default.yaml [--only 00 02] [--run-name NAME]
[--set section.key=value ...]``; ``python -m traitspace verify outputs/<run>``;
``python -m traitspace check-reference outputs/reference``; ``python -m traitspace plan params/X.yaml
[--gpu H200]``; ``python -m traitspace sweep sweeps/X.yaml``."""

from __future__ import annotations

import argparse
import sys

import yaml

from .core.config import ConfigError


def parse_settings(settings: list[str]) -> dict[str, object]:
    """``["extract.mode=response", "behavior.max_checkpoints=2"]`` -> dotted overrides, values as YAML."""
    overrides: dict[str, object] = {}
    for setting in settings:
        key, separator, value = setting.partition("=")
        if not separator or "." not in key or not key.strip():
            raise ValueError(f"--set {setting!r}: expected SECTION.KEY=VALUE, e.g. extract.mode=response")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ValueError(f"--set {setting!r}: the value is not valid YAML: {error}") from None
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="traitspace", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute the numbered notebooks with papermill")
    run.add_argument("params", help="params file, e.g. params/default.yaml")
    run.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks (numbers or names)")
    run.add_argument("--run-name", help="override run.name (outputs/<run-name>/)")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="settings",
                     help="override one parameter, value read as YAML (e.g. --set extract.mode=response); repeatable")
    commands.add_parser("sync-notebooks", help="regenerate notebooks/*.ipynb from their jupytext .py sources")
    reference = commands.add_parser(
        "check-reference", help="compare a finished run of params/reference.yaml with docs/reference_results.json")
    reference.add_argument("run_dir", help="the run folder, e.g. outputs/reference")
    reference.add_argument("--params", default="params/reference.yaml", help="the params the run used")
    reference.add_argument("--expected", default=None, help="reference numbers (default: docs/reference_results.json)")
    reference.add_argument("--write", action="store_true", help="store this run's numbers as the reference instead")
    verify = commands.add_parser("verify", help="check every stage manifest of a run folder against its files")
    verify.add_argument("run_dir", help="the run folder, e.g. outputs/default")
    from .plan import command as plan_command
    from .sweep import command as sweep_command

    plan_command.add_arguments(commands.add_parser(
        "plan", help="estimate each stage's GPU memory and time on a named GPU, without a GPU or weights"))
    sweep_command.add_arguments(commands.add_parser(
        "sweep", help="run a grid of params overrides through submitit (local processes or Slurm)"))
    args = parser.parse_args(argv)

    if args.command in ("plan", "sweep"):
        try:
            overrides = parse_settings(getattr(args, "settings", []))
            return (plan_command if args.command == "plan" else sweep_command).run(args, overrides)
        except (ConfigError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    if args.command == "verify":
        from .core.integrity import verify_run

        checked, problems = verify_run(args.run_dir)
        for problem in problems:
            print(problem.line())
        stages = sorted({str(problem.stage) for problem in problems})
        print(f"{checked} stage manifest(s) checked: " + (f"{len(problems)} damaged or missing file(s) in {stages}; "
              "rerun the notebooks of those stages to recompute them" if problems else "every recorded file intact"))
        return 1 if problems else 0

    if args.command == "check-reference":
        from .findings.reference import REFERENCE_FILE, check_reference

        try:
            checks, summary = check_reference(args.run_dir, args.params, args.expected or REFERENCE_FILE,
                                              write=args.write)
        except FileNotFoundError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if args.write:
            print(f"wrote {args.expected or REFERENCE_FILE}")
            return 0
        for check in checks:
            print(check.line())
        failed = [check for check in checks if not check.ok]
        print(f"{len(checks) - len(failed)} of {len(checks)} numbers within tolerance")
        return 1 if failed else 0

    if args.command == "sync-notebooks":
        from .runner import sync_notebooks

        for path in sync_notebooks():
            print(f"wrote {path}")
        return 0

    from .runner import NotebookFailed, run_notebooks

    try:
        overrides = parse_settings(args.settings)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.run_name:
        overrides["run.name"] = args.run_name
    try:
        run_notebooks(args.params, only=args.only, overrides=overrides)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except NotebookFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
