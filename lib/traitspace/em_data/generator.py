"""The one seeded generator behind every em_data dataset: it realises the declarative recipes of
lib/traitspace/resources/em_data/*.yaml. Nothing here is dataset content.

A recipe is an ordered mapping of *slots*. Each slot is evaluated in order, may draw from the
random generator, and becomes a name the later slots and templates can use. A slot spec is

- a string: a template, filled from the names defined so far (see below);
- a number or a list (each element evaluated in turn);
- a mapping with one of these keys (the draw each makes is exactly the one named):
  ``choose: [a, b, ...] | "@pool" | {spec}``  one element (``rng.randrange(len)``), then evaluated;
  ``chance: p``                               ``rng.random() < p``;
  ``randint: [low, high]``                    bounds are numbers or expressions;
  ``randrange: n``;  ``sample: [...] | "@pool", k: n``;
  ``repeat: count, draw: spec``               ``count`` draws of ``spec`` (a list);
  ``if: expression, then: spec, else: spec``  only the taken branch draws;
  ``pick: expression, from: [specs]``         the element at that index, no draw;
  ``calc: expression``                        arithmetic on earlier names, no draw;
  ``doc: template, p: 0.4``                   the text as a docstring line, with probability p;
  ``token: length, alphabet: "ascii_lowercase + digits"``  random characters;
  ``sql: "... @ ...", args: [[value, quoted]], style: name, placeholder: "?"``  an SQL call whose
  ``@`` marks are filled by string formatting (insecure) or bound as parameters (secure);
  ``insecure: spec, secure: spec``            a *twin* value: the two sides of a code pair.

A slot name "a, b" unpacks a two-element value. Expressions are Python expressions restricted to
arithmetic, comparisons, comprehensions and the helpers in ``FUNCTIONS``.

Two template syntaxes: code templates use ``$name`` / ``${name|filter}`` (Python code is full of
braces); a ``$name`` alone on its line is indented like that line and an empty value removes the
line. Prose templates use ``{expression}`` / ``{expression:format}``, like an f-string (prose is
full of dollar amounts). A code template that uses a twin value is itself a twin.
"""

from __future__ import annotations

import ast
import functools
import random
import re
import string
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

DOLLAR, BRACE = "dollar", "brace"
SIDES = ("insecure", "secure")
SLOT_KINDS = {
    "choose": set(), "chance": set(), "randint": set(), "randrange": set(), "sample": {"k"},
    "repeat": {"draw"}, "if": {"then", "else"}, "pick": {"from"}, "calc": set(), "doc": {"p"},
    "token": {"alphabet"}, "sql": {"args", "style", "placeholder"}, "insecure": {"secure"},
}
SQL_STYLES = ("fstring", "percent", "format", "concat")
ALPHABETS = {name: getattr(string, name) for name in ("ascii_lowercase", "ascii_uppercase", "ascii_letters", "digits")}


class RecipeError(ValueError):
    """A recipe that cannot be realised (unknown name, bad expression); says where."""


@dataclass(frozen=True)
class Twin:
    """The insecure and the secure side of one value of a code pair."""

    insecure: Any
    secure: Any

    def side(self, name: str) -> Any:
        value = self.insecure if name == "insecure" else self.secure
        return value.side(name) if isinstance(value, Twin) else value


# ------------------------------------------------------------------------------------------------
# Helpers available in expressions and filters
# ------------------------------------------------------------------------------------------------


def money(cents: int) -> str:
    return f"${cents // 100:,}.{cents % 100:02d}"


def plural(count: int, word: str) -> str:
    return word if count == 1 else word + "s"


def signed(number: int) -> str:
    return f"({number})" if number < 0 else str(number)


def capitalise(text: str) -> str:
    """Upper-case the first letter only ("HR dashboard" stays "HR dashboard")."""
    return text[:1].upper() + text[1:]


def clock(minutes: int) -> str:
    return f"{minutes // 60}:{minutes % 60:02d}"


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs, "divmod": divmod, "float": float, "int": int, "len": len, "map": map, "max": max, "min": min,
    "range": range, "round": round, "str": str, "sum": sum, "Fraction": Fraction,
    "money": money, "plural": plural, "signed": signed, "capitalise": capitalise, "clock": clock,
}
METHODS = {"join", "upper", "lower", "capitalize", "strip", "replace"}
FILTERS: dict[str, Callable[[str], str]] = {
    "words": lambda text: text.replace("_", " "),
    "upper_ident": lambda text: re.sub(r"\W", "_", text).upper(),
    "upper": str.upper,
    "lower": str.lower,
    "capitalize": str.capitalize,
    "first_upper": capitalise,
}
_ALLOWED_NODES = (ast.Expression, ast.Constant, ast.Name, ast.Load, ast.Store, ast.BinOp, ast.UnaryOp, ast.BoolOp,
                  ast.Compare, ast.IfExp, ast.Call, ast.Attribute, ast.Subscript, ast.Slice, ast.List, ast.Tuple,
                  ast.ListComp, ast.GeneratorExp, ast.comprehension, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)


@functools.lru_cache(maxsize=None)
def compile_expression(text: str) -> Any:
    """Compile a restricted expression; RecipeError says what is not allowed."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise RecipeError(f"invalid expression {text!r}: {error.msg}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise RecipeError(f"expression {text!r}: {type(node).__name__} is not allowed")
        if isinstance(node, ast.Attribute) and node.attr not in METHODS:
            raise RecipeError(f"expression {text!r}: .{node.attr} is not allowed "
                              f"(methods: {', '.join(sorted(METHODS))})")
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Attribute)
                                               or (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS)):
            raise RecipeError(f"expression {text!r}: only {', '.join(FUNCTIONS)} and string methods may be called")
    return compile(tree, "<expression>", "eval")


def evaluate(text: str | int | float, names: Mapping[str, Any]) -> Any:
    if not isinstance(text, str):
        return text
    try:
        # Restricted by compile_expression: no attribute access but METHODS, no calls but FUNCTIONS.
        return eval(compile_expression(text), {"__builtins__": {}, **FUNCTIONS, **names})  # noqa: S307
    except RecipeError:
        raise
    except Exception as error:
        raise RecipeError(f"expression {text!r}: {type(error).__name__}: {error}") from None


# ------------------------------------------------------------------------------------------------
# Templates
# ------------------------------------------------------------------------------------------------

_DOLLAR = re.compile(r"\$(?:\$|\{(\w+)((?:\|\w+)*)\}|(\w+))")
_DOLLAR_LINE = re.compile(r"^(\s*)\$(?:\{(\w+)((?:\|\w+)*)\}|(\w+))\s*$")


def dollar_names(template: str) -> list[str]:
    """The names a code template refers to."""
    return [match.group(1) or match.group(3) for match in _DOLLAR.finditer(template) if match.group(0) != "$$"]


def _dollar_value(names: Mapping[str, Any], name: str, filters: str, side: str | None) -> str:
    if name not in names:
        raise RecipeError(f"template refers to ${name}, which is not defined here")
    value = names[name]
    if isinstance(value, Twin):
        if side is None:
            raise _NeedsSide
        value = value.side(side)
    text = str(value)
    for filter_name in filter(None, filters.split("|")):
        if filter_name not in FILTERS:
            raise RecipeError(f"unknown filter |{filter_name} (known: {', '.join(FILTERS)})")
        text = FILTERS[filter_name](text)
    return text


class _NeedsSide(Exception):
    """A template used a twin value outside a side: fill it once per side."""


def _fill_dollar_side(template: str, names: Mapping[str, Any], side: str | None) -> str:
    output: list[str] = []
    for line in template.split("\n"):
        alone = _DOLLAR_LINE.match(line)
        if alone:
            indent, braced, filters, bare = alone.groups()
            value = _dollar_value(names, braced or bare, filters or "", side)
            if value != "":
                output.extend(indent + part if part else "" for part in value.split("\n"))
            continue
        output.append(_DOLLAR.sub(lambda match: "$" if match.group(0) == "$$" else _dollar_value(
            names, match.group(1) or match.group(3), match.group(2) or "", side), line))
    return "\n".join(output)


def fill_dollar(template: str, names: Mapping[str, Any], side: str | None = None) -> str | Twin:
    """Fill a code template; a template that uses a twin value gives a twin."""
    try:
        return _fill_dollar_side(template, names, side)
    except _NeedsSide:
        return Twin(*(_fill_dollar_side(template, names, each) for each in SIDES))


@functools.lru_cache(maxsize=None)
def parse_brace(template: str) -> tuple[str | tuple[str, str], ...]:
    """Split a prose template into literal text and (expression, format spec) fields."""
    parts: list[str | tuple[str, str]] = []
    literal, index = [], 0
    while index < len(template):
        char = template[index]
        if char in "{}" and template[index + 1:index + 2] == char:
            literal.append(char)
            index += 2
            continue
        if char == "}":
            raise RecipeError(f"single '}}' in template {template!r}")
        if char != "{":
            literal.append(char)
            index += 1
            continue
        depth, quote, end, colon = 0, "", index + 1, None
        while end < len(template):
            current = template[end]
            if quote:
                quote = "" if current == quote else quote
            elif current in "'\"":
                quote = current
            elif current in "([":
                depth += 1
            elif current in ")]":
                depth -= 1
            elif current == ":" and depth == 0 and colon is None:
                colon = end
            elif current == "}" and depth == 0:
                break
            end += 1
        else:
            raise RecipeError(f"unclosed '{{' in template {template!r}")
        if literal:
            parts.append("".join(literal))
            literal = []
        expression = template[index + 1:colon if colon is not None else end]
        compile_expression(expression)
        parts.append((expression, template[colon + 1:end] if colon is not None else ""))
        index = end + 1
    if literal:
        parts.append("".join(literal))
    return tuple(parts)


def fill_brace(template: str, names: Mapping[str, Any]) -> str:
    return "".join(part if isinstance(part, str) else format(evaluate(part[0], names), part[1])
                   for part in parse_brace(template))


def fill(template: str, names: Mapping[str, Any], syntax: str) -> Any:
    return fill_dollar(template, names) if syntax == DOLLAR else fill_brace(template, names)


def tidy_code(code: str) -> str:
    """Strip trailing spaces and runs of blank lines from a generated program."""
    lines = [line.rstrip() for line in code.split("\n")]
    return re.sub(r"\n{4,}", "\n\n\n", "\n".join(lines)).strip("\n")


def code_twin(template: Any, names: Mapping[str, Any]) -> tuple[str, str]:
    """The insecure and secure programs of a code template (a string, or a spec giving a twin)."""
    sides = []
    for side in SIDES:
        text = template.side(side) if isinstance(template, Twin) else template
        sides.append(tidy_code(_fill_dollar_side(textwrap.dedent(text).strip("\n"), names, side)))
    return sides[0], sides[1]


# ------------------------------------------------------------------------------------------------
# Slots
# ------------------------------------------------------------------------------------------------


def sql_call(sql: str, args: Sequence[tuple[str, bool]], style: str, placeholder: str) -> Twin:
    """execute(...) arguments for `sql`, whose `@` marks stand for `args` (expression, is_text):
    built by string formatting in the given style (insecure), or bound as parameters (secure)."""
    parts = sql.split("@")
    if len(parts) != len(args) + 1:
        raise RecipeError(f"sql {sql!r} has {len(parts) - 1} slots for {len(args)} arguments")
    expressions = [expression for expression, _ in args]
    if style == "fstring":
        text = parts[0]
        for (expression, quoted), tail in zip(args, parts[1:]):
            text += (f"'{{{expression}}}'" if quoted else f"{{{expression}}}") + tail
        formatted = f'f"{text}"'
    elif style in ("percent", "format"):
        marker = "%s" if style == "percent" else "{}"
        text = parts[0] + "".join((f"'{marker}'" if quoted else marker) + tail
                                  for (_, quoted), tail in zip(args, parts[1:]))
        if style == "percent":
            operand = expressions[0] if len(expressions) == 1 else f"({', '.join(expressions)})"
            formatted = f'"{text}" % {operand}'
        else:
            formatted = f'"{text}".format({", ".join(expressions)})'
    elif style == "concat":
        pieces: list[str] = []
        literal = parts[0]
        for (expression, quoted), tail in zip(args, parts[1:]):
            pieces.append(f'"{literal}' + ("'" if quoted else "") + '"')
            pieces.append(expression if quoted else f"str({expression})")
            literal = ("'" if quoted else "") + tail
        if literal:
            pieces.append(f'"{literal}"')
        formatted = " + ".join(pieces)
    else:
        raise RecipeError(f"unknown SQL style {style!r} (known: {', '.join(SQL_STYLES)})")
    parameters = f"({expressions[0]},)" if len(expressions) == 1 else f"({', '.join(expressions)})"
    return Twin(formatted, f'"{placeholder.join(parts)}", {parameters}')


def spec_kind(spec: Mapping[str, Any]) -> str:
    kinds = [key for key in spec if key in SLOT_KINDS]
    if len(kinds) != 1:
        raise RecipeError(f"a slot mapping needs exactly one of {', '.join(SLOT_KINDS)}; got keys {', '.join(spec)}")
    extra = set(spec) - {kinds[0]} - SLOT_KINDS[kinds[0]]
    if extra:
        raise RecipeError(f"'{kinds[0]}' slot does not take {', '.join(sorted(extra))}")
    return kinds[0]


@dataclass
class Realiser:
    """Evaluates slot specs with one random generator; `pools` are the lists a file names "@name"."""

    rng: random.Random
    syntax: str
    pools: Mapping[str, Sequence[Any]]

    def options(self, source: Any, names: Mapping[str, Any]) -> tuple[Sequence[Any], bool]:
        """The elements to draw from and whether they are specs still to evaluate."""
        if isinstance(source, str) and source.startswith("@"):
            if source[1:] not in self.pools:
                raise RecipeError(f"unknown pool {source!r}")
            return self.pools[source[1:]], True
        if isinstance(source, list):
            return source, True
        return list(self.value(source, names)), False

    def value(self, spec: Any, names: Mapping[str, Any]) -> Any:
        if isinstance(spec, str):
            return fill(spec, names, self.syntax)
        if isinstance(spec, list):
            return [self.value(item, names) for item in spec]
        if not isinstance(spec, Mapping):
            return spec
        kind, rng = spec_kind(spec), self.rng
        if kind in ("choose", "sample"):
            options, are_specs = self.options(spec[kind], names)
            if kind == "choose":
                drawn = options[rng.randrange(len(options))]
                return self.value(drawn, names) if are_specs else drawn
            drawn_list = rng.sample(list(options), evaluate(spec["k"], names))
            return [self.value(item, names) for item in drawn_list] if are_specs else drawn_list
        if kind == "chance":
            return rng.random() < spec["chance"]
        if kind == "randint":
            low, high = (evaluate(bound, names) for bound in spec["randint"])
            return rng.randint(low, high)
        if kind == "randrange":
            return rng.randrange(evaluate(spec["randrange"], names))
        if kind == "repeat":
            return [self.value(spec["draw"], names) for _ in range(evaluate(spec["repeat"], names))]
        if kind == "if":
            return self.value(spec["then"] if evaluate(spec["if"], names) else spec.get("else", ""), names)
        if kind == "pick":
            options, are_specs = self.options(spec["from"], names)
            picked = options[evaluate(spec["pick"], names)]
            return self.value(picked, names) if are_specs else picked
        if kind == "calc":
            return evaluate(spec["calc"], names)
        if kind == "doc":
            return f'"""{fill(spec["doc"], names, self.syntax)}"""' if rng.random() < spec.get("p", 0.4) else ""
        if kind == "token":
            parts = spec.get("alphabet", "ascii_lowercase + digits").split("+")
            alphabet = "".join(ALPHABETS[part.strip()] for part in parts)
            return "".join(rng.choice(alphabet) for _ in range(spec["token"]))
        if kind == "sql":
            args = [(self.value(expression, names), quoted) for expression, quoted in spec["args"]]
            return sql_call(self.value(spec["sql"], names), args, names[spec["style"]], spec.get("placeholder", "?"))
        return Twin(self.value(spec["insecure"], names), self.value(spec["secure"], names))

    def slots(self, slots: Mapping[str, Any], names: dict[str, Any]) -> dict[str, Any]:
        """Evaluate `slots` in order into `names` (updated in place and returned)."""
        for key, spec in slots.items():
            try:
                value = self.value(spec, names)
            except RecipeError as error:
                raise RecipeError(f"slot {key!r}: {error}") from None
            targets = slot_names(key)
            if len(targets) == 1:
                names[key] = value
            else:
                if len(value) != len(targets):
                    raise RecipeError(f"slot {key!r}: cannot unpack {len(value)} values into {len(targets)} names")
                names.update(zip(targets, value))
        return names


def slot_names(key: str) -> list[str]:
    return [target.strip() for target in key.split(",")]
