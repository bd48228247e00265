"""The control contrasts: pairs of neutral personas ("an assistant who works in a public library"
against "... in a small bakery") whose prompts differ as much as a trait's do but in nothing that
should change how an assistant behaves.

They are read from ``resources/traits/control_pairs.yaml`` (same schema as the persona traits; the
data card is ``docs/data_cards/control_pairs.md``) and go through exactly the extraction and
held-out evaluation the traits go through, as vectors named ``control_<name>`` of kind
``control``. A trait direction whose held-out AUROC does not beat the best control's says that the
two prompts differ, not that the model holds the trait. Controls are never stored as trait vectors.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..library import Trait
from ..library.errors import TraitLibraryError, read_yaml, validate
from ..library.schemas import PersonaTraitsFile

CONTROL_PAIRS_FILE = "control_pairs.yaml"
CONTROL_PREFIX = "control_"
CONTROL_KIND = "control"


def control_pairs_path() -> Path:
    """Where the shipped control contrasts live."""
    return Path(str(resources.files("traitspace") / "resources" / "traits" / CONTROL_PAIRS_FILE))


@lru_cache(maxsize=1)
def load_control_pairs() -> tuple[Trait, ...]:
    """The control contrasts as traits named ``control_<name>`` (validated like persona traits)."""
    path = control_pairs_path()
    data, text = read_yaml(path, TraitLibraryError)
    document = validate(PersonaTraitsFile, data, path, TraitLibraryError, text=text)
    return tuple(Trait(CONTROL_PREFIX + entry.name, entry.definition, tuple(entry.positive), tuple(entry.negative))
                 for entry in document.traits)
