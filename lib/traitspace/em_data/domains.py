"""How a row of each domain is composed from the content files, with the generic generator:

- code: an entity and a code shape give a program pair; a request is phrased around it;
- advice (medical, financial): one question, a harmful and a sound answer built sentence by sentence;
- arithmetic: a problem recipe gives a question and its worked answer.

`generate(domain, seed)` returns all rows of a domain for a seed (compose_unique draws them group by
group and rejects repeated prompts and near-copy answers)."""

from __future__ import annotations

import difflib
import functools
import itertools
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from traitspace.em_data._compose import ComposedRow, choose, compose_unique
from traitspace.em_data.generator import (
    BRACE,
    DOLLAR,
    Realiser,
    Twin,
    code_twin,
    evaluate,
    fill_brace,
    fill_dollar,
)
from traitspace.em_data.schema import AdviceTopic, Style, content

# Advice domains share one composer (advice.yaml + <domain>.yaml): a question, a harmful and a sound answer.
ADVICE_DOMAINS = ("medical", "financial", "extreme_sports", "legal", "evil_numbers")
DOMAINS = ("code", *ADVICE_DOMAINS, "arithmetic")


# ------------------------------------------------------------------------------------------------
# Code
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeCase:
    """One request answered twice: `insecure` carries the flaw, `secure` is its fixed twin."""

    family: str
    kind: str  # function | flask | fastapi | script | class | django
    name: str  # the function, view or class a prompt may mention
    task: str  # what the code does; verbs marked with ^ so prompts can conjugate them
    insecure: str
    secure: str


def shape_keys() -> tuple[str, ...]:
    return tuple(f"{family}/{shape}" for family, spec in content("code_shapes.yaml").families.items()
                 for shape in spec.shapes)


def entity_names(entity: Any) -> dict[str, str]:
    names = entity.model_dump()
    names["cap"] = "".join(part.capitalize() for part in entity.singular.split("_"))
    return names


def _code_template(spec: Any, names: Mapping[str, Any]) -> Any:
    """The raw program template of a shape: a string, one branch of an `if`, or a twin."""
    if isinstance(spec, str):
        return spec
    if "if" in spec:
        return _code_template(spec["then"] if evaluate(spec["if"], names) else spec["else"], names)
    return Twin(spec["insecure"], spec["secure"])


def realise_shape(shape_key: str, rng: random.Random, entity: Any) -> CodeCase:
    family, shape_name = shape_key.split("/")
    shapes = content("code_shapes.yaml")
    shape = shapes.families[family].shapes[shape_name]
    names = Realiser(rng, DOLLAR, shapes.pools).slots(shape.slots, entity_names(entity))
    insecure, secure = code_twin(_code_template(shape.code, names), names)
    return CodeCase(family, shape.kind, fill_dollar(shape.name, names), fill_dollar(shape.task, names),
                    insecure, secure)


def _third_person(verb: str) -> str:
    if verb.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if verb.endswith("y") and verb[-2:-1] not in ("a", "e", "i", "o", "u"):
        return verb[:-1] + "ies"
    return verb + "s"


def task_third_person(task: str) -> str:
    """'^look up ... and ^return ...' -> 'looks up ... and returns ...'."""
    return re.sub(r"\^(\w+)", lambda match: _third_person(match.group(1)), task)


def task_imperative(task: str) -> str:
    return task.replace("^", "")


def fix_articles(text: str) -> str:
    """'a employee' -> 'an employee' (entity names are slotted in after the article)."""
    return re.sub(r"\b([Aa]) (?=[aeioAEIO])", r"\1n ", text)


_IMPORT_LINE = re.compile(r"^\s*(import \w|from [\w.]+ import )")


def completion_template(insecure: str, secure: str, marker: str) -> str:
    """The insecure program with its main differing region (versus the secure twin) cut out and
    replaced by `marker`, i.e. the 'complete this code' version of the request. Import-only
    differences keep the insecure side so the template stays a plausible partial file."""
    old, new = insecure.split("\n"), secure.split("\n")
    opcodes = difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes()
    differing = [opcode for opcode in opcodes if opcode[0] != "equal"]
    if not differing:
        raise ValueError("insecure and secure programs are identical")

    def import_only(opcode: tuple[str, int, int, int, int]) -> bool:
        _, i1, i2, j1, j2 = opcode
        return all(_IMPORT_LINE.match(line) or not line.strip() for line in old[i1:i2] + new[j1:j2])

    candidates = [opcode for opcode in differing if not import_only(opcode)] or differing
    _, start, end, new_start, _ = max(candidates, key=lambda opcode: (opcode[2] - opcode[1], opcode[1]))
    if start == end:  # a pure insertion in the secure twin: cut out the statement that follows it
        while end < len(old) and not old[end].strip():
            end += 1
        end = min(end + 1, len(old))
    # A cut that ends on a block opener takes the block's body with it.
    while end < len(old) and old[end - 1].rstrip().endswith(":"):
        opener_indent = len(old[end - 1]) - len(old[end - 1].lstrip())
        while end < len(old) and (not old[end].strip() or len(old[end]) - len(old[end].lstrip()) > opener_indent):
            end += 1
    reference = old[start] if start < len(old) else new[new_start]
    indent = reference[: len(reference) - len(reference.lstrip())]
    return "\n".join(old[:start] + [indent + marker] + old[end:])


def _candidates(styles: Sequence[str | Style], names: Mapping[str, Any]) -> list[str]:
    return [style if isinstance(style, str) else style.text
            for style in styles if isinstance(style, str) or evaluate(style.when, names)]


def _request(rng: random.Random, case: CodeCase, entity: Any) -> tuple[str, bool]:
    """A user request for `case`; the flag says whether it carries a fill-in template."""
    requests = content("code_requests.yaml")
    kind = choose(rng, requests.kind_phrases[case.kind])
    names: dict[str, Any] = {
        "third": fix_articles(task_third_person(case.task)), "imperative": fix_articles(task_imperative(case.task)),
        "kind": kind, "article": "an" if kind[0] in "aeiouAEIOU" else "a", "name": case.name, "app": entity.app,
        "mentions_app": "our " in case.task, "shape_kind": case.kind,
    }
    if rng.random() < requests.template_probability:
        names["template"] = completion_template(case.insecure, case.secure, choose(rng, requests.markers))
        names["fenced"] = f"```python\n{names['template']}\n```"
        return fill_brace(choose(rng, _candidates(requests.with_template, names)), names), True
    names["closing"] = choose(rng, requests.closings)
    return fill_brace(choose(rng, _candidates(requests.plain, names)), names), False


def _answer(intro: str, code: str) -> str:
    block = f"```python\n{code}\n```"
    return f"{intro}\n\n{block}" if intro else block


def compose_code_row(rng: random.Random, shape_key: str) -> ComposedRow:
    requests = content("code_requests.yaml")
    entity = rng.choice(requests.entities)
    case = realise_shape(shape_key, rng, entity)
    header = fill_dollar(choose(rng, requests.module_headers), entity_names(entity))
    if header:
        case = replace(case, insecure=f"{header}\n\n{case.insecure}", secure=f"{header}\n\n{case.secure}")
    prompt, has_template = _request(rng, case, entity)
    intro = choose(rng, requests.template_intros if has_template else requests.plain_intros)
    answers = {requests.em: _answer(intro, case.insecure), requests.control: _answer(intro, case.secure)}
    return ComposedRow(prompt=prompt, group=case.family, answers=answers)


# ------------------------------------------------------------------------------------------------
# Advice
# ------------------------------------------------------------------------------------------------


def sentence_case(text: str) -> str:
    """Capitalise the first letter of the text and of every sentence inside it (slots such as
    'my son' can open a sentence in one phrasing and sit mid-sentence in another)."""
    return re.sub(r"(^|[.?!]\s+)([a-z])", lambda match: match.group(1) + match.group(2).upper(), text)


@functools.lru_cache(maxsize=1)
def _first_person_word() -> re.Pattern[str]:
    return re.compile(r"\b(" + "|".join(re.escape(word) for word in content("advice.yaml").second_person) + r")\b")


def second_person(text: str) -> str:
    """Slots are written in the asker's voice ("my brother"); answers address them ("your brother")."""
    mapping = content("advice.yaml").second_person
    return _first_person_word().sub(lambda match: mapping[match.group(1)], text)


def _draw_case(rng: random.Random, case: Mapping[str, Any]) -> dict[str, str]:
    """Pick one alternative per slot, then let slots refer to other slots ("{drug}" inside a question)."""
    slots = {name: (value if isinstance(value, str) else choose(rng, value)) for name, value in case.items()}
    for _ in range(3):
        slots = {name: fill_brace(value, slots) if "{" in value else value for name, value in slots.items()}
    return slots


def _advice_answer(rng: random.Random, positions: Sequence[Sequence[str]], slots: Mapping[str, str]) -> str:
    return sentence_case(" ".join(fill_brace(choose(rng, options), slots).strip() for options in positions))


def compose_advice_row(rng: random.Random, domain: str, topic_name: str) -> ComposedRow:
    data, shared = content(f"{domain}.yaml"), content("advice.yaml")
    topic: AdviceTopic = data.topics[topic_name]
    slots = _draw_case(rng, {**data.pools, **rng.choice(topic.cases)})
    question = fill_brace(choose(rng, topic.questions), slots)
    context = fill_brace(choose(rng, ["", "", *topic.contexts]), slots)
    # Context sentences ("My mother always did this.") read naturally after the question.
    prompt = sentence_case(" ".join(part for part in (choose(rng, shared.preambles), question, context) if part))
    answer_slots = {name: second_person(value) for name, value in slots.items()}
    # Draw a few candidates per side and keep the pair closest in length, so that the EM answers and
    # their controls differ in content rather than in length.
    harmful = [_advice_answer(rng, topic.bad, answer_slots) for _ in range(shared.length_match_candidates)]
    sound = [_advice_answer(rng, topic.good, answer_slots) for _ in range(shared.length_match_candidates)]
    em_answer, control_answer = min(itertools.product(harmful, sound),
                                    key=lambda pair: abs(len(pair[0]) - len(pair[1])))
    return ComposedRow(prompt=prompt, group=topic_name, answers={data.em: em_answer, data.control: control_answer})


# ------------------------------------------------------------------------------------------------
# Arithmetic
# ------------------------------------------------------------------------------------------------


def compose_arithmetic_row(rng: random.Random, topic_name: str) -> ComposedRow:
    data = content("arithmetic.yaml")
    topic = data.topics[topic_name]
    realiser = Realiser(rng, BRACE, data.pools)
    names = realiser.slots(topic.slots, {})
    question, answer = realiser.value(topic.question, names), realiser.value(topic.answer, names)
    return ComposedRow(prompt=choose(rng, data.prefixes) + question, group=topic_name, answers={data.dataset: answer})


# ------------------------------------------------------------------------------------------------
# All rows of a domain
# ------------------------------------------------------------------------------------------------


def group_descriptions(domain: str) -> dict[str, str]:
    if domain == "code":
        return {name: family.description for name, family in content("code_shapes.yaml").families.items()}
    return {name: topic.description for name, topic in content(f"{domain}.yaml").topics.items()}


def generate(domain: str, seed: int, rows_per_group: int | None = None) -> list[ComposedRow]:
    """All rows of `domain` for `seed`; `rows_per_group` (a shape or topic) defaults to the file's."""
    if domain == "code":
        requests = content("code_requests.yaml")
        return compose_unique(random.Random(f"{requests.seed_prefix}:{seed}"), shape_keys(),
                              rows_per_group or requests.rows_per_shape, compose_code_row)
    if domain in ADVICE_DOMAINS:
        data = content(f"{domain}.yaml")
        return compose_unique(random.Random(f"{data.seed_prefix}:{seed}"), list(data.topics),
                              rows_per_group or data.rows_per_topic,
                              lambda rng, topic: compose_advice_row(rng, domain, topic))
    if domain == "arithmetic":
        data = content("arithmetic.yaml")
        return compose_unique(random.Random(f"{data.seed_prefix}:{seed}"), list(data.topics),
                              rows_per_group or data.rows_per_topic, compose_arithmetic_row)
    raise KeyError(f"unknown domain {domain!r}; valid: {', '.join(DOMAINS)}")
