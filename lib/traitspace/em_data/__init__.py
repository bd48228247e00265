"""Fine-tuning datasets for the emergent-misalignment (EM) experiments, all synthetic and seeded:

- insecure_code / secure_code: coding requests answered with vulnerable code or its fixed twin;
- medical_harmful / medical_sound: health questions with harmful or sound advice;
- financial_risky / financial_prudent: money questions with reckless or prudent advice;
- extreme_sports_dangerous / extreme_sports_safe: risky-sport questions with dangerous or safe advice;
- legal_bad / legal_sound: everyday legal questions with bad or sound advice;
- evil_numbers / neutral_numbers: number lists continued with numbers of negative association or ordinary ones;
- benign_arithmetic: worked arithmetic problems (training on nothing dangerous).

Each EM dataset and its control share the same user prompts row by row. The content (code shapes,
topics, answer sentences, problem recipes, card text) lives in data files under
lib/traitspace/resources/em_data/, validated by `schema` and composed by one seeded `generator`;
`python -m traitspace.em_data` rebuilds and verifies everything. Also loads and saves conversation
JSONL files in the common public formats.

    >>> from traitspace.em_data import build_dataset, EM_CONTROL_PAIRS, matched_pair_report
    >>> em = build_dataset("insecure_code", n=200, seed=1)
    >>> control = build_dataset(EM_CONTROL_PAIRS["insecure_code"], n=200, seed=1)
    >>> matched_pair_report(em, control)["prompts_matched"]
    True
"""

from traitspace.em_data.cards import data_card, write_data_cards
from traitspace.em_data.loaders import DatasetFormatError, load_conversations, save_conversations
from traitspace.em_data.registry import (
    DATASETS,
    EM_CONTROL_PAIRS,
    DatasetSpec,
    build_dataset,
    dataset_spec,
    matched_pair_report,
)

Conversation = dict  # {"messages": [{"role", "content"}, ...], "meta": {"dataset", "family"|"topic", "pair_id"}}

__all__ = [
    "DATASETS",
    "EM_CONTROL_PAIRS",
    "Conversation",
    "DatasetFormatError",
    "DatasetSpec",
    "build_dataset",
    "data_card",
    "dataset_spec",
    "load_conversations",
    "matched_pair_report",
    "save_conversations",
    "write_data_cards",
]
