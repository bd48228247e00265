"""Reading the model's replies to self-assessment items: the 0-100 self-rating and the A/B choice.

Pure text processing (regular expressions); no model, no files.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["parse_forced_choice", "parse_self_rating"]

# Echoes of the scale itself ("0 to 100", "between 0 and 100", "out of 100", "/100") are not
# the rating.
_SCALE_ECHO = re.compile(
    r"\b[01]\s*(?:-|–|—|to|and)\s*100\b|\bout\s+of\s+100\b|/\s*100\b|\bscale\s+of\s+100\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w]|\.\d)")


def parse_self_rating(text: str | None) -> float | None:
    """The first number from 0 to 100 in a self-rating reply, else None.

    Echoes of the scale ("on a scale of 0 to 100", "out of 100", "85/100") are skipped, as are
    numbers outside 0-100 and digits inside words ("GPT4").
    """
    if not text:
        return None
    cleaned = _SCALE_ECHO.sub(" ", text)
    for match in _NUMBER.finditer(cleaned):
        value = float(match.group())
        if 0 <= value <= 100:
            return value
    return None


_MARKUP = re.compile(r"[*_`#>]")
# The reply is nothing but the letter (either case), maybe bracketed, quoted or punctuated.
_BARE_LETTER = re.compile(r"^\s*[\"'(\[]?\s*([ABab])\s*[\"')\]]?\s*[.!:]?\s*$")
# The reply opens with the letter followed by punctuation or a line break: "B. Because ...".
_LEADING_LETTER = re.compile(r"^\s*[\"'(\[]?([AB])(?:[\"')\]]?\s*[.:)\-–—,]|\s*\n)")
# After a noun that names the option the letter may be lower case ("option b"); after a verb
# it must be a capital, or "I'd choose a different one" would read as option A.
_STATED_CHOICE = re.compile(
    r"(?i:\b(?:answer(?:\s+is)?|option|choice(?:\s+is)?|description|letter))"
    r"[\s\"'*:=(\[]*([ABab])(?![\w])"
    r"|(?i:\b(?:choose|chose|pick|picked|select|selected|go\s+with|prefer|say))"
    r"[\s\"'*:=(\[]*([AB])(?![\w])"
)
# A standalone capital letter. "A" followed by a lower-case word is usually the article
# ("A system that ..."), unless that word is one that follows an option letter in a sentence.
_WORDS_AFTER_LETTER = (
    r"and|or|nor|but|because|since|is|fits|describes|matches|applies|seems|sounds|over|than|"
    r"better|best|more|for|please"
)
_LONE_LETTER = re.compile(
    rf"(?<![\w])(?:(B)|(A)(?!\s+(?!(?:{_WORDS_AFTER_LETTER})\b)[a-z]))(?![\w'])"
)


def parse_forced_choice(text: str | None) -> Literal["A", "B"] | None:
    """The option letter a reply chose, or None when it chose neither or both.

    Checked in order: the reply is just the letter; the reply opens with the letter and
    punctuation; the reply states a choice ("I'd pick B", ``{"answer": "A"}``); a single lone
    capital letter anywhere. A reply naming both letters at the same level is ambiguous.
    """
    if not text:
        return None
    cleaned = _MARKUP.sub("", text)
    for pattern in (_BARE_LETTER, _LEADING_LETTER):
        match = pattern.match(cleaned)
        if match:
            return match.group(1).upper()  # type: ignore[return-value]
    for letters in (
        {(stated.group(1) or stated.group(2)).upper()
         for stated in _STATED_CHOICE.finditer(cleaned)},
        {match.group(1) or match.group(2) for match in _LONE_LETTER.finditer(cleaned)},
    ):
        if len(letters) == 1:
            return letters.pop()  # type: ignore[return-value]
        if len(letters) > 1:
            return None
    return None
