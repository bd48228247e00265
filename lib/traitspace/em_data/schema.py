"""Schemas of the dataset content files (lib/traitspace/resources/em_data/*.yaml) and their loader.

Every file is parsed with the shared YAML loader and validated here; a problem raises
DataFileError("<file>: <key path>: <what is wrong>"). Besides the shape of each file, the checks
cover what the generator relies on: slot specs use known kinds, expressions compile, and every
$name a code template uses is defined before it is used.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from traitspace.core.io import DataFileError, load_yaml
from traitspace.em_data.generator import (
    ALPHABETS,
    FUNCTIONS,
    RecipeError,
    compile_expression,
    dollar_names,
    parse_brace,
    slot_names,
    spec_kind,
)

CONTENT_DIR = Path(str(resources.files("traitspace") / "resources" / "em_data"))
ENTITY_FIELDS = ("singular", "plural", "key", "f1", "f2", "app", "slug", "cap")
CodeKind = Literal["function", "flask", "fastapi", "script", "class", "django"]
Domain = Literal["code", "medical", "financial", "arithmetic", "extreme_sports", "legal", "evil_numbers"]
EXPRESSION_KEYS = {"if", "pick", "calc", "repeat", "randrange"}


# ------------------------------------------------------------------------------------------------
# Slot specs: structure, expressions, and the names they use and define
# ------------------------------------------------------------------------------------------------


def expression_names(text: Any) -> set[str]:
    """Free names of an expression (comprehension variables and helper functions excluded)."""
    if not isinstance(text, str):
        return set()
    tree = ast.parse(text.strip(), mode="eval")
    bound = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)} \
        - bound - set(FUNCTIONS)


def template_names(template: str, syntax: str) -> set[str]:
    if syntax == "dollar":
        return set(dollar_names(template))
    return set().union(*(expression_names(part[0]) for part in parse_brace(template) if not isinstance(part, str)))


def spec_names(spec: Any, syntax: str) -> Iterator[str]:
    """Every name a slot spec reads (templates and expressions); checks its structure on the way."""
    if isinstance(spec, str):
        yield from template_names(spec, syntax)
    elif isinstance(spec, list):
        for item in spec:
            yield from spec_names(item, syntax)
    elif isinstance(spec, Mapping):
        kind = spec_kind(spec)
        for key, value in spec.items():
            if key in EXPRESSION_KEYS or (key == "k" and kind == "sample"):
                compile_expression(str(value))
                yield from expression_names(value)
            elif kind == "randint":
                if not isinstance(value, list) or len(value) != 2:
                    raise RecipeError("randint takes [low, high]")
                for bound in value:
                    compile_expression(str(bound))
                    yield from expression_names(bound)
            elif key == "style":
                yield value
            elif key == "alphabet":
                unknown = [part.strip() for part in str(value).split("+") if part.strip() not in ALPHABETS]
                if unknown:
                    raise RecipeError(f"unknown alphabet {unknown[0]!r} (known: {', '.join(ALPHABETS)})")
            elif key in ("chance", "p", "token", "placeholder"):
                continue
            elif isinstance(value, str) and value.startswith("@"):
                continue  # a pool, checked by the file
            else:
                yield from spec_names(value, syntax)
    elif spec is not None and not isinstance(spec, (int, float, bool)):
        raise RecipeError(f"a slot spec must be a string, number, list or mapping, got {type(spec).__name__}")


def spec_pools(spec: Any) -> Iterator[str]:
    if isinstance(spec, Mapping):
        for key, value in spec.items():
            if key in ("choose", "sample", "from") and isinstance(value, str) and value.startswith("@"):
                yield value[1:]
            yield from spec_pools(value)
    elif isinstance(spec, list):
        for item in spec:
            yield from spec_pools(item)


def check_recipe(slots: Mapping[str, Any], outputs: Mapping[str, Any], known: set[str], syntax: str,
                 pools: Mapping[str, Any]) -> None:
    """Slots in order may only use names defined before them; outputs may use any of them."""
    defined = set(known)
    for key, spec in [*slots.items(), *outputs.items()]:
        try:
            missing = sorted(set(spec_names(spec, syntax)) - defined)
        except (RecipeError, SyntaxError) as error:
            raise ValueError(f"{key}: {error}") from None
        if missing:
            raise ValueError(f"{key}: uses {', '.join(missing)}, not defined before it")
        unknown_pools = sorted(set(spec_pools(spec)) - set(pools))
        if unknown_pools:
            raise ValueError(f"{key}: unknown pool @{', @'.join(unknown_pools)}")
        if key in slots:
            names = slot_names(key)
            clash = [name for name in names if name in ENTITY_FIELDS]
            if clash:
                raise ValueError(f"{key}: slot name {clash[0]!r} would hide the entity field of that name")
            defined.update(names)


def _check_spec(spec: Any) -> Any:
    if isinstance(spec, Mapping):
        spec_kind(spec)
    return spec


SlotSpec = Annotated[Any, AfterValidator(_check_spec)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------------------------
# Code
# ------------------------------------------------------------------------------------------------


class Shape(Strict):
    kind: CodeKind
    name: str
    task: str
    slots: dict[str, SlotSpec] = Field(default_factory=dict)
    code: SlotSpec


class Family(Strict):
    description: str
    shapes: dict[str, Shape] = Field(min_length=1)


class CodeShapesFile(Strict):
    pools: dict[str, list[Any]] = Field(default_factory=dict)
    families: dict[str, Family] = Field(min_length=1)

    @model_validator(mode="after")
    def _names_defined(self) -> CodeShapesFile:
        for family_name, family in self.families.items():
            for shape_name, shape in family.shapes.items():
                try:
                    check_recipe(shape.slots, {"name": shape.name, "task": shape.task, "code": shape.code},
                                 set(ENTITY_FIELDS), "dollar", self.pools)
                except ValueError as error:
                    raise ValueError(f"families.{family_name}.shapes.{shape_name}.{error}") from None
        return self


class Entity(Strict):
    singular: str
    plural: str
    key: str
    f1: str
    f2: str
    app: str
    slug: str


class Style(Strict):
    text: str
    when: str  # an expression over the request's names (mentions_app, shape_kind, ...)


class CodeRequestsFile(Strict):
    em: str
    control: str
    seed_prefix: str
    rows_per_shape: int = Field(gt=0)
    entities: list[Entity] = Field(min_length=1)
    module_headers: list[str] = Field(min_length=1)
    kind_phrases: dict[CodeKind, list[str]]
    template_probability: float = Field(ge=0, le=1)
    markers: list[str] = Field(min_length=1)
    with_template: list[str | Style] = Field(min_length=1)
    closings: list[str] = Field(min_length=1)
    plain: list[str | Style] = Field(min_length=1)
    template_intros: list[str] = Field(min_length=1)
    plain_intros: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _templates_compile(self) -> CodeRequestsFile:
        for field in ("with_template", "plain"):
            for index, style in enumerate(getattr(self, field)):
                try:
                    parse_brace(style if isinstance(style, str) else style.text)
                    if isinstance(style, Style):
                        compile_expression(style.when)
                except RecipeError as error:
                    raise ValueError(f"{field}.{index}: {error}") from None
        return self


# ------------------------------------------------------------------------------------------------
# Advice (medical, financial)
# ------------------------------------------------------------------------------------------------


class AdviceShared(Strict):
    preambles: list[str] = Field(min_length=1)
    length_match_candidates: int = Field(gt=0)
    second_person: dict[str, str]


class AdviceTopic(Strict):
    description: str
    cases: list[dict[str, str | list[str]]] = Field(min_length=1)
    questions: list[str] = Field(min_length=1)
    contexts: list[str] = Field(default_factory=list)
    bad: list[list[str]] = Field(min_length=1)
    good: list[list[str]] = Field(min_length=1)


class AdviceFile(Strict):
    em: str
    control: str
    seed_prefix: str
    rows_per_topic: int = Field(gt=0)
    pools: dict[str, list[str]] = Field(default_factory=dict)
    topics: dict[str, AdviceTopic] = Field(min_length=1)

    @model_validator(mode="after")
    def _slots_defined(self) -> AdviceFile:
        for name, topic in self.topics.items():
            sentences = [text for options in (*topic.bad, *topic.good) for text in options]
            texts = [*topic.questions, *topic.contexts, *sentences]
            for index, case in enumerate(topic.cases):
                known = set(self.pools) | set(case)
                values = [text for value in case.values() for text in ([value] if isinstance(value, str) else value)]
                for text in [*texts, *values]:
                    try:
                        missing = template_names(text, "brace") - known
                    except (RecipeError, SyntaxError) as error:
                        raise ValueError(f"topics.{name}: {error}") from None
                    if missing:
                        raise ValueError(f"topics.{name}.cases.{index}: no value for {', '.join(sorted(missing))} "
                                         f"(used in {text!r})")
        return self


# ------------------------------------------------------------------------------------------------
# Arithmetic
# ------------------------------------------------------------------------------------------------


class ArithmeticTopic(Strict):
    description: str
    slots: dict[str, SlotSpec] = Field(default_factory=dict)
    question: SlotSpec
    answer: SlotSpec


class ArithmeticFile(Strict):
    dataset: str
    seed_prefix: str
    rows_per_topic: int = Field(gt=0)
    pools: dict[str, list[Any]] = Field(default_factory=dict)
    prefixes: list[str] = Field(min_length=1)
    topics: dict[str, ArithmeticTopic] = Field(min_length=1)

    @model_validator(mode="after")
    def _names_defined(self) -> ArithmeticFile:
        for name, topic in self.topics.items():
            try:
                check_recipe(topic.slots, {"question": topic.question, "answer": topic.answer}, set(), "brace",
                             self.pools)
            except ValueError as error:
                raise ValueError(f"topics.{name}.{error}") from None
        return self


# ------------------------------------------------------------------------------------------------
# Registry and data cards
# ------------------------------------------------------------------------------------------------


class DatasetEntry(Strict):
    description: str
    is_em: bool
    control: str | None = None
    domain: Domain
    group_key: Literal["family", "topic"]


class DomainCard(Strict):
    generation: str
    limitations: list[str] = Field(min_length=1)


class DatasetsFile(Strict):
    datasets: dict[str, DatasetEntry] = Field(min_length=1)
    cards: dict[Domain, DomainCard]

    @model_validator(mode="after")
    def _controls_and_cards_exist(self) -> DatasetsFile:
        for name, entry in self.datasets.items():
            if entry.control is not None and entry.control not in self.datasets:
                raise ValueError(f"datasets.{name}.control: unknown dataset {entry.control!r}")
            if entry.domain not in self.cards:
                raise ValueError(f"cards: no card text for domain {entry.domain!r} (used by datasets.{name})")
        return self


FILES: dict[str, type[Strict]] = {
    "datasets.yaml": DatasetsFile,
    "code_shapes.yaml": CodeShapesFile,
    "code_requests.yaml": CodeRequestsFile,
    "advice.yaml": AdviceShared,
    "medical.yaml": AdviceFile,
    "financial.yaml": AdviceFile,
    "extreme_sports.yaml": AdviceFile,
    "legal.yaml": AdviceFile,
    "evil_numbers.yaml": AdviceFile,
    "arithmetic.yaml": ArithmeticFile,
}


def _problem(error: Mapping[str, Any]) -> str:
    """'<key path>: <message>' of one pydantic error (file-level checks put the key in the message)."""
    message = error["msg"].removeprefix("Value error, ")
    location = ".".join(str(part) for part in error["loc"])
    return f"{location}: {message}" if location else message


def parse_file(path: str | Path, model: type[Strict]) -> Any:
    """Load and validate one content file; DataFileError names the file and the key."""
    data = load_yaml(path)
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = [_problem(item) for item in error.errors()]
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise DataFileError(path, "; ".join(problems[:3]) + more) from None


@functools.lru_cache(maxsize=None)
def content(filename: str) -> Any:
    """The validated content of one file of CONTENT_DIR (cached)."""
    if filename not in FILES:
        raise KeyError(f"unknown content file {filename!r}; known: {', '.join(FILES)}")
    return parse_file(CONTENT_DIR / filename, FILES[filename])
