"""Command line: regenerate and verify the datasets, write the data cards, or export a dataset.

    python -m traitspace.em_data                      # = verify: content files, builds, matched pairs
    python -m traitspace.em_data verify --seeds 0 1 --cards docs/data_cards
    python -m traitspace.em_data cards docs/data_cards
    python -m traitspace.em_data export insecure_code out/insecure_code.jsonl --n 500 --seed 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from traitspace.core.io import DataFileError


def verify(seeds: list[int], cards_dir: str | None = None) -> list[str]:
    """Every content file parses against its schema; every dataset builds for every seed; matched
    EM/control pairs share their prompts and have comparable answer lengths; prompts are unique and
    answers not near copies; the data cards (if a folder is given) are current. Returns the problems."""
    from traitspace.em_data import schema

    problems: list[str] = []
    for filename in schema.FILES:
        try:
            schema.content(filename)
            print(f"ok    {schema.CONTENT_DIR / filename}")
        except DataFileError as error:
            problems.append(str(error))
            print(f"FAIL  {error}")
    if problems:
        return problems  # nothing can be built from files that do not parse

    from traitspace.em_data import DATASETS, EM_CONTROL_PAIRS, build_dataset, data_card, matched_pair_report
    from traitspace.em_data._compose import most_similar_pair

    for seed in seeds:
        built = {name: build_dataset(name, seed=seed) for name in DATASETS}
        for name, rows in built.items():
            prompts = [row["messages"][0]["content"] for row in rows]
            similarity, _, _ = most_similar_pair([row["messages"][-1]["content"] for row in rows])
            line = f"{name} (seed {seed}): {len(rows)} rows, answer similarity at most {similarity:.2f}"
            bad = ["repeated prompts"] if len(set(prompts)) != len(prompts) else []
            if similarity > 0.9:
                bad.append("near-copy answers (shingle Jaccard above 0.9)")
            problems.extend(f"{line}: {problem}" for problem in bad)
            print(("FAIL  " if bad else "ok    ") + line)
        for em, control in EM_CONTROL_PAIRS.items():
            report = matched_pair_report(built[em], built[control])
            pair_ids = [[row["meta"]["pair_id"] for row in built[name]] for name in (em, control)]
            line = (f"{em} / {control} (seed {seed}): prompts matched {report['prompts_matched']}, "
                    f"length ratio {report['length_ratio']:.2f}")
            bad = []
            if not report["prompts_matched"] or pair_ids[0] != pair_ids[1]:
                bad.append("prompts or pair ids differ")
            if not 0.67 <= report["length_ratio"] <= 1.5:
                bad.append("answer lengths not comparable (ratio outside 0.67-1.5)")
            problems.extend(f"{line}: {problem}" for problem in bad)
            print(("FAIL  " if bad else "ok    ") + line)
    if cards_dir is not None:
        for name in DATASETS:
            path = Path(cards_dir) / f"{name}.md"
            current = path.is_file() and path.read_text(encoding="utf-8") == data_card(name)
            if not current:
                problems.append(f"{path} is stale; regenerate with: python -m traitspace.em_data cards {cards_dir}")
            print(("ok    " if current else "FAIL  ") + f"{path}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m traitspace.em_data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    check = commands.add_parser("verify", help="check the content files, rebuild every dataset and check it (default)")
    check.add_argument("--seeds", type=int, nargs="+", default=[0])
    check.add_argument("--cards", default=None, help="also check that the data cards in this folder are current")
    cards = commands.add_parser("cards", help="write one markdown data card per dataset")
    cards.add_argument("directory")
    export = commands.add_parser("export", help="write a dataset as JSONL")
    export.add_argument("name")
    export.add_argument("path")
    export.add_argument("--n", type=int, default=None)
    export.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command in (None, "verify"):
        problems = verify(getattr(args, "seeds", [0]), getattr(args, "cards", None))
        print(f"\n{len(problems)} problem(s)" + "".join(f"\n  - {problem}" for problem in problems))
        return 1 if problems else 0

    from traitspace.em_data import DATASETS, build_dataset, save_conversations, write_data_cards

    if args.command == "cards":
        for path in write_data_cards(args.directory):
            print(path)
    else:
        if args.name not in DATASETS:
            parser.error(f"argument name: invalid choice: {args.name!r} (choose from {', '.join(sorted(DATASETS))})")
        rows = build_dataset(args.name, n=args.n, seed=args.seed)
        print(f"{save_conversations(args.path, rows)}: {len(rows)} conversations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
