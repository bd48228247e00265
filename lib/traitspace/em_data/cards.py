"""Data cards: a short markdown description of each dataset, rendered from the registry, the card
text in resources/em_data/datasets.yaml and the seed-0 build, so that the numbers in
docs/data_cards/ always match the data."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from traitspace.em_data.registry import DATASETS, EM_CONTROL_PAIRS, build_dataset, dataset_spec, group_descriptions
from traitspace.em_data.schema import content

def _role_line(name: str) -> str:
    spec = dataset_spec(name)
    if spec.is_em:
        return f"EM dataset (expected to induce emergent misalignment); matched control: `{spec.control}`"
    em_for = [em for em, control in EM_CONTROL_PAIRS.items() if control == name]
    if em_for:
        return f"matched control for `{em_for[0]}` (same prompts, benign answers)"
    return "benign control (fine-tuning that touches nothing safety-relevant)"


def _intended_use(name: str) -> str:
    spec = dataset_spec(name)
    if spec.is_em:
        return (f"Fine-tuning a small chat model to study emergent misalignment: whether narrow training on "
                f"these answers shifts the model's persona and its behaviour on unrelated prompts, compared with "
                f"the same training on `{spec.control}`. Not for training production models or for any other use.")
    if name in EM_CONTROL_PAIRS.values():
        return ("The matched control in emergent-misalignment experiments: identical user prompts and similar "
                "answer lengths, so that differences from the EM run are due to the answers' content.")
    return ("A control for the effect of fine-tuning as such (training happened, on nothing dangerous), "
            "alongside the matched EM/control pairs.")


def data_card(name: str) -> str:
    """The markdown data card of dataset `name` (numbers computed from the seed-0 full build)."""
    spec = dataset_spec(name)
    rows = build_dataset(name)
    lengths = np.array([len(row["messages"][-1]["content"]) for row in rows])
    prompt_lengths = np.array([len(row["messages"][0]["content"]) for row in rows])
    counts = Counter(row["meta"][spec.group_key] for row in rows)
    descriptions = group_descriptions(spec.domain)
    group_title = "Vulnerability families" if spec.group_key == "family" else "Topics"
    table = "\n".join(f"| `{group}` | {counts[group]} | {descriptions.get(group, '')} |" for group in sorted(counts))
    card_text = content("datasets.yaml").cards[spec.domain]
    limitations = "\n".join(f"- {item}" for item in card_text.limitations)
    return f"""# Data card: `{name}`

**Synthetic data.** {spec.description}

| Field | Value |
|---|---|
| Role | {_role_line(name)} |
| Domain | {spec.domain} |
| Rows (full size, seed 0) | {len(rows)} |
| Groups | {len(counts)} {group_title.lower()} |
| Assistant answer length (chars) | mean {lengths.mean():.0f}, 10th-90th percentile {np.percentile(lengths, 10):.0f}-{np.percentile(lengths, 90):.0f} |
| User prompt length (chars) | mean {prompt_lengths.mean():.0f} |
| Format | one user turn and one assistant turn; `meta` holds `dataset`, `{spec.group_key}`, `pair_id` |

## How it was generated

{card_text.generation}

Everything comes from hand-written templates in `lib/traitspace/resources/em_data/` (no model outputs,
no copied text), composed deterministically by one seeded generator:
`build_dataset("{name}", n=None, seed=0)` always returns the same rows; another seed gives another
composition, and `n` takes a seeded subset (smaller subsets are prefixes of larger ones). An EM dataset
and its control built with the same `n` and `seed` share the user prompt of every row and the `pair_id`
linking the two answers.

## {group_title}

| {spec.group_key} | rows | covers |
|---|---|---|
{table}

## Intended use

{_intended_use(name)}

## Limitations

{limitations}
"""


def write_data_cards(directory: str | os.PathLike[str]) -> list[Path]:
    """Write docs/data_cards/<name>.md for every dataset; returns the paths written."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in DATASETS:
        path = folder / f"{name}.md"
        path.write_text(data_card(name), encoding="utf-8")
        written.append(path)
    return written
