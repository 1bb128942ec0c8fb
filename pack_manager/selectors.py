"""Label selectors a job puts on the nodes that may run it. Pure: parse text, match labels.

Kubernetes label-selector syntax, comma-separated requirements that must all hold:
    k=v  k==v  k!=v  k in (a,b)  k notin (a,b)  k  (exists)  !k  (does not exist)
plus integer comparisons on a label's value: k>N  k<N  k>=N  k<=N (a node whose value is not
a whole number fails them). Each requirement has one canonical text (`Selector.text`), which
is what a job spec carries, so every node parses the same bytes into the same requirement.
`k!=v` and `k notin (...)` hold for a node without the label, as in Kubernetes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

OPERATORS = ("=", "!=", "in", "notin", "exists", "!", ">", "<", ">=", "<=")
MAX_VALUES = 64
MAX_SELECTORS = 64
LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,251}[A-Za-z0-9])?$")
_VALUE = re.compile(r"^[A-Za-z0-9._:/@+-]{0,256}$")
_INTEGER = re.compile(r"^-?[0-9]{1,18}$")
_COMPARE = re.compile(r"^(?P<key>[^!=<>\s]+)\s*(?P<op>>=|<=|>|<|==|=|!=)\s*(?P<value>.*)$")
_SET = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")


class SelectorError(ValueError):
    """A selector that cannot be parsed; the message names the requirement."""


@dataclass(frozen=True, slots=True)
class Selector:
    key: str
    op: str  # one of OPERATORS
    values: tuple[str, ...] = ()  # sorted for in/notin; one value for =, !=; one integer text for >, <, ...

    @property
    def text(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!":
            return f"!{self.key}"
        if self.op in ("in", "notin"):
            return f"{self.key} {self.op} ({','.join(self.values)})"
        return f"{self.key}{self.op}{self.values[0]}"

    def failure(self, labels: Mapping[str, str]) -> str | None:
        """None when the labels satisfy this requirement, else why not (names the requirement)."""
        have = labels.get(self.key)
        shown = "no such label" if have is None else f"{have!r}"
        if self.op == "exists":
            ok = have is not None
        elif self.op == "!":
            ok = have is None
        elif self.op == "=":
            ok = have == self.values[0]
        elif self.op == "!=":
            ok = have != self.values[0]
        elif self.op == "in":
            ok = have in self.values
        elif self.op == "notin":
            ok = have not in self.values
        else:
            if have is None or not _INTEGER.match(have):
                return f"select {self.text}: node has {shown}" + (
                    "" if have is None else ", not a whole number"
                )
            ok = _compare(int(have), self.op, int(self.values[0]))
        return None if ok else f"select {self.text}: node has {shown}"


def _compare(have: int, op: str, wanted: int) -> bool:
    if op == ">":
        return have > wanted
    if op == "<":
        return have < wanted
    if op == ">=":
        return have >= wanted
    return have <= wanted


def split_requirements(expression: str) -> list[str]:
    """Split on commas outside parentheses: 'a in (x,y),b' -> ['a in (x,y)', 'b']."""
    parts, depth, current = [], 0, []
    for ch in expression:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"select: {expression!r} has an unmatched ')'")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth:
        raise SelectorError(f"select: {expression!r} has an unclosed '('")
    parts.append("".join(current))
    return [part.strip() for part in parts]


def parse_one(text: str) -> Selector:
    """One requirement, e.g. 'zone in (a,b)', or SelectorError naming it."""
    text = text.strip()
    if not text:
        raise SelectorError("select: empty requirement (a stray comma?)")
    found = _SET.match(text)
    if found:
        values = [v.strip() for v in found["values"].split(",")]
        if not values or any(not v for v in values):
            raise SelectorError(f"select {text!r}: give at least one value, like 'k in (a,b)'")
        if len(values) > MAX_VALUES:
            raise SelectorError(f"select {text!r}: at most {MAX_VALUES} values")
        return _checked(found["key"], found["op"], tuple(sorted(set(values))), text)
    if text.startswith("!"):
        return _checked(text[1:].strip(), "!", (), text)
    found = _COMPARE.match(text)
    if found:
        op = "=" if found["op"] == "==" else found["op"]
        value = found["value"].strip()
        if op in (">", "<", ">=", "<="):
            if not _INTEGER.match(value):
                raise SelectorError(f"select {text!r}: {op} compares whole numbers; {value!r} is not one")
            value = str(int(value))
        return _checked(found["key"], op, (value,), text)
    return _checked(text, "exists", (), text)


def _checked(key: str, op: str, values: tuple[str, ...], text: str) -> Selector:
    if not LABEL_KEY.match(key):
        raise SelectorError(
            f"select {text!r}: key {key!r} must be letters, digits, '.', '_', '-' or '/' "
            "(operators: =, ==, !=, in, notin, !, >, <, >=, <=)"
        )
    for value in values:
        if not _VALUE.match(value):
            raise SelectorError(
                f"select {text!r}: value {value!r} must be letters, digits or . _ : / @ + - (at most 256)"
            )
    return Selector(key, op, values)


def parse_selectors(expressions: list[str] | tuple[str, ...]) -> tuple[Selector, ...]:
    """Every requirement of every expression, duplicates dropped, in canonical order."""
    found: dict[str, Selector] = {}
    for expression in expressions:
        if not isinstance(expression, str):
            raise SelectorError(f"select: expected text, got {type(expression).__name__}")
        for part in split_requirements(expression):
            selector = parse_one(part)
            found[selector.text] = selector
    if len(found) > MAX_SELECTORS:
        raise SelectorError(f"select: at most {MAX_SELECTORS} requirements")
    return tuple(found[text] for text in sorted(found))


def selector_failures(selectors: tuple[Selector, ...], labels: Mapping[str, str]) -> tuple[str, ...]:
    """Why the labels fail the selectors, one reason per failed requirement (empty: they match)."""
    return tuple(reason for s in selectors if (reason := s.failure(labels)) is not None)
