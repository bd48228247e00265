"""``python -m traitspace sweep sweeps/X.yaml [--no-wait] [--collect]``."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", help="sweep file, e.g. sweeps/lora_rank.yaml")
    parser.add_argument("--no-wait", action="store_true",
                        help="Slurm: submit the array job and return; collect later with --collect")
    parser.add_argument("--collect", action="store_true",
                        help="submit nothing: tabulate what the runs' manifests say now")
    parser.add_argument("--list", action="store_true", help="print the grid's runs and submit nothing")


def run(args: argparse.Namespace, overrides: dict) -> int:
    from tabulate import tabulate

    from .results import write_results
    from .spec import load_sweep
    from .submit import CellResult, manifest_status, run_manifest, run_sweep

    if overrides:
        raise ValueError("sweep takes no --set; put shared overrides under `set:` in the sweep file")
    sweep = load_sweep(args.sweep)
    if args.list:
        for cell in sweep.cells:
            print(cell.name, cell.values)
        return 0
    if args.collect:
        results = [CellResult(cell, manifest_status(cell, sweep.spec.only), notebooks=run_manifest(cell).get("notebooks", {}))
                   for cell in sweep.cells]
    else:
        results = run_sweep(sweep, wait=not args.no_wait)
    table, table_path, figure_path = write_results(results, sweep)
    shown = table.drop(columns=["run_dir"]).astype(object).fillna("")
    print(tabulate(shown, headers="keys", tablefmt="simple", showindex=False))
    print(f"wrote {table_path} and {figure_path}")
    failed = [result for result in results if result.status == "failed"]
    return 1 if failed else 0
