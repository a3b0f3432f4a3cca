"""Reads rules.yaml text into plain data: size and depth limits, `${VAR}` interpolation, the line of every setting,
and problems described as 'file:line path: message' for people editing YAML."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml

# Limits checked before a rules file is composed into YAML nodes: reading costs some 800 bytes of memory and
# 45 µs per value, so 1 MiB of `[a,a,a,...]` took 23 s and 420 MB, and 5 MB 630 MB. Ours is 3 KB with 165 values
# nested 5 levels deep; these leave room for far more.
MAX_RULES_BYTES = 1024 * 1024
MAX_RULES_VALUES = 10_000  # settings, list items and values
MAX_NESTING = 32  # lists and mappings open at once

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class RulesError(ValueError):
    """A rules file that cannot be used; `problems` lists every fault as 'file:line path: message'."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class ProblemAt(ValueError):
    """A validator's complaint about a part of its field (e.g. one segment), so the error names that line."""

    def __init__(self, at: tuple, message: str):
        self.at = at
        super().__init__(message)


@dataclass(frozen=True)
class Unset:
    """A `${VAR}` with no value and no default: where it is, and the problem it makes there."""

    path: tuple
    name: str
    problem: str


@dataclass(frozen=True)
class Document:
    """A rules file read into plain data: its settings, the line of every path in them, and what reading found
    wrong (a key given twice, an unset environment variable)."""

    source: str
    data: dict[str, Any]
    lines: dict[tuple, int]
    problems: list[str]
    unset: tuple[Unset, ...] = ()

    def problem(self, line: int | None, path: tuple, message: str) -> str:
        return _problem(self.source, line, path, message)

    def problems_under(self, prefix: str) -> list[str]:
        return [p for p in self.problems if _problem_path(p).startswith(prefix)]

    def describe(self, error: Mapping[str, Any]) -> str:
        """A pydantic error as 'file:line path: message', in a marketer's words."""
        return _describe(error, self.source, self.lines)

    def describe_new(self, errors: Iterable[Mapping[str, Any]], reported: list[str]) -> list[str]:
        """The errors not about a setting that `reported` already names (nor one inside or around it)."""
        seen = [_problem_path(p) for p in reported]
        described = []
        for error in errors:
            problem = self.describe(error)
            path = _problem_path(problem)
            if not any(path.startswith(s) or s.startswith(path) for s in seen):
                described.append(problem)
        return described


def read_document(text: str, source: str, env: Mapping[str, str] | None = None) -> Document:
    """Read rules text whose top level is a mapping; raises RulesError if it is too large, too deep, not YAML,
    empty, or not a mapping."""
    root = _compose(text, source)
    reader = _NodeReader(source, {} if env is None else env)
    data = reader.read(root, ())
    if not isinstance(data, dict):
        raise RulesError([f"{source}:{root.start_mark.line + 1}: the top level must be a mapping of settings"])
    return Document(source, data, reader.lines, reader.problems, tuple(reader.unset))


def refuse_if_too_large(size: int, source: str) -> None:
    """Raise RulesError when `size` bytes is more than a rules file may be (checked before reading a file)."""
    if size > MAX_RULES_BYTES:
        raise RulesError([f"{source}: {size:,} bytes is too large for a rules file (at most {MAX_RULES_BYTES:,} "
                          "bytes, 1 MiB; a rules file is a few KB)"])


def _problem_path(problem: str) -> str:
    return problem.split(": ", 1)[0].split(" ", 1)[-1]


def _compose(text: str, source: str) -> yaml.Node:
    # len() counts characters, never more than the UTF-8 bytes; encoding is only needed when it is close.
    refuse_if_too_large(len(text) if len(text) > MAX_RULES_BYTES else len(text.encode("utf-8")), source)
    try:
        _refuse_unsafe_structure(text, source)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        if context:
            problem = f"{context}, {problem}"
        if "'\\t'" in problem:
            problem += " (indent with spaces, not tabs)"
        raise RulesError([f"{source}{line}: not valid YAML: {problem}"]) from None
    if root is None:
        raise RulesError([f"{source}: the file is empty"])
    return root


def _refuse_unsafe_structure(text: str, source: str) -> None:
    """Refuse, from a stream of parse events and before any node is built, what would make composing slow or
    huge: aliases (*name), which allow self-referencing files and "billion laughs" expansion (a few lines growing
    into millions of values) and which a marketer's file never needs; more than MAX_RULES_VALUES values; and
    nesting deeper than MAX_NESTING (composing recurses once per level). The scan stops at the first excess."""
    depth = values = 0
    try:
        for event in yaml.parse(text, Loader=_FlowDepthLimitedLoader):
            line = event.start_mark.line + 1
            if isinstance(event, yaml.AliasEvent):
                raise RulesError([f"{source}:{line}: anchors and aliases (&name, *name) are not supported; write "
                                  "the value out in full"])
            if isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            elif isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)):
                values += 1
                if values > MAX_RULES_VALUES:
                    raise RulesError([f"{source}:{line}: more than {MAX_RULES_VALUES:,} values; a rules file needs "
                                      "a few hundred"])
                depth += isinstance(event, yaml.CollectionStartEvent)
                if depth > MAX_NESTING:
                    raise _TooDeep(line)
    except _TooDeep as exc:
        raise RulesError([f"{source}:{exc.line}: nested more than {MAX_NESTING} levels deep; a rules file needs "
                          "only a few"]) from None


class _TooDeep(Exception):
    def __init__(self, line: int):
        self.line = line
        super().__init__(f"nested too deeply at line {line}")


class _FlowDepthLimitedLoader(yaml.SafeLoader):
    """Refuses `[[[[...` where the scanner reads the bracket. Before the parser sees the first of them, the scanner
    looks up to 1024 characters ahead for a possible `key:`, checking every open bracket at each step: 100,000
    brackets on one line took 0.6 s to reach the 33rd, and minutes to read in full."""

    def fetch_flow_collection_start(self, token_class: type) -> None:
        if self.flow_level >= MAX_NESTING:
            raise _TooDeep(self.get_mark().line + 1)
        super().fetch_flow_collection_start(token_class)


class _NodeReader:
    """Turns YAML nodes into plain data, remembering the line of every path and interpolating `${VAR}`."""

    def __init__(self, source: str, env: Mapping[str, str]):
        self.source = source
        self.env = env
        self.lines: dict[tuple, int] = {}
        self.problems: list[str] = []
        self.unset: list[Unset] = []

    def read(self, node: yaml.Node, path: tuple) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                if key in result:
                    self._problem(key_node.start_mark.line + 1, path + (key,), "appears twice")
                result[key] = self.read(value_node, path + (key,))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.read(item, path + (i,)) for i, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _scalar(self, node: yaml.ScalarNode, path: tuple) -> Any:
        raw = node.value
        if node.style is None:  # plain scalars: keep numbers exact (never float) and honour null/booleans
            if raw in ("", "~", "null", "Null", "NULL"):
                return None
            if raw in ("true", "True", "TRUE", "false", "False", "FALSE"):
                return raw.lower() == "true"
            try:
                return Decimal(raw)
            except InvalidOperation:
                pass
        text = self._interpolate(raw, node.start_mark.line + 1, path)
        if node.style is None and text != raw:  # `gt: ${VIP_THRESHOLD:-5000}` is still a number
            try:
                return Decimal(text)
            except InvalidOperation:
                pass
        return text

    def _interpolate(self, raw: str, line: int, path: tuple) -> str:
        def substitute(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            value = self.env.get(name)
            if value:
                return value
            if default is not None:
                return default
            self._problem(line, path, f"environment variable {name} is not set")
            self.unset.append(Unset(path, name, self.problems[-1]))
            return ""

        return _ENV_REF.sub(substitute, raw)

    def _problem(self, line: int, path: tuple, message: str) -> None:
        self.problems.append(_problem(self.source, line, path, message))


def _problem(source: str, line: int | None, path: tuple, message: str) -> str:
    return f"{source}:{line} {_dotted(path)}: {message}"


def _describe(error: Mapping[str, Any], source: str, lines: dict[tuple, int]) -> str:
    path = tuple(part for part in error["loc"] if part not in ("function-after", "function-before"))
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ProblemAt):
        path += cause.at
    path = tuple("from" if part == "from_" else part for part in path)
    line = None
    for depth in range(len(path), -1, -1):
        line = lines.get(path[:depth])
        if line is not None:
            break
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = f"unknown setting '{path[-1]}'"
    elif error["type"] == "missing":
        message = f"'{path[-1]}' is required"
    elif error["type"] in _PLAIN_MESSAGES:
        context = {k: int(v) if isinstance(v, float) and v.is_integer() else v
                   for k, v in (error.get("ctx") or {}).items()}
        message = _PLAIN_MESSAGES[error["type"]].format(**context)
    where = f"{source}:{line}" if line else source
    return f"{where} {_dotted(path) or '(top level)'}: {message}"


# pydantic's wording speaks Python ("a valid tuple"); a marketer editing YAML reads these instead.
_PLAIN_MESSAGES = {
    "tuple_type": "should be a list (one '- item' per line, or [a, b])",
    "list_type": "should be a list (one '- item' per line, or [a, b])",
    "dict_type": "should be settings written as 'name: value' (or {{name: value}})",
    "model_type": "should be settings written as 'name: value' (or {{name: value}})",
    "string_type": "should be text",
    "float_parsing": "should be a number",
    "float_type": "should be a number",
    "decimal_parsing": "should be a number",
    "decimal_type": "should be a number",
    "int_parsing": "should be a whole number",
    "int_type": "should be a whole number",
    "int_from_float": "should be a whole number",
    "finite_number": "should be a finite number",
    "greater_than": "must be more than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "string_too_short": "may not be empty",
    "literal_error": "must be {expected}",
    "bool_parsing": "should be true or false",
    "bool_type": "should be true or false",
}


def _dotted(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
