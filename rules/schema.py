"""The rules.yaml model: parsing, `${VAR}` interpolation, validation, and errors that name file and line."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cached_property
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

RFM_METRICS = ("rfmRecency", "rfmFrequency", "rfmMonetary")
METRICS = ("totalSpend", "orderCount", "lastOrderDaysAgo", "firstOrderDaysAgo", "avgDaysBetweenOrders") + RFM_METRICS
DAY_METRICS = ("lastOrderDaysAgo", "firstOrderDaysAgo")
OPERATORS = ("gt", "gte", "lt", "lte", "eq")
NO_ORDERS_FREQUENCY = "None"
ONE_ORDER_FREQUENCY = "One-time"
DEFAULT_RETRY_SCHEDULE = (5, 30, 120, 600, 1800, 3600, 10800, 21600, 43200)
# Upper bounds far beyond any real rule, so that date arithmetic cannot overflow and no threshold becomes a
# number so large (or so finely divided, hence MAX_DECIMALS) that comparing with it takes minutes.
MAX_DAYS = 36_500  # a century
MAX_THRESHOLDS = {"totalSpend": Decimal(10**12), "orderCount": Decimal(10**9), "lastOrderDaysAgo": Decimal(MAX_DAYS),
                  "firstOrderDaysAgo": Decimal(MAX_DAYS), "avgDaysBetweenOrders": Decimal(MAX_DAYS)}
MAX_RFM_SCORE = Decimal(5)
MAX_DECIMALS = 6
MAX_DELAY_SECONDS = 7 * 24 * 3600
MAX_INTERVAL_SECONDS = 24 * 3600
# A floor that stops a typo such as 0.001 from running the scheduler's jobs hundreds of times a second (one core
# busy for nothing); fast enough for the crash-recovery harness (bench/chaos.py runs every 0.3 s and 0.1 s).
MIN_INTERVAL_SECONDS = 0.1
# Limits checked before a rules file is composed into YAML nodes: reading costs some 800 bytes of memory and
# 45 µs per value, so 1 MiB of `[a,a,a,...]` took 23 s and 420 MB, and 5 MB 630 MB. Ours is 3 KB with 165 values
# nested 5 levels deep; these leave room for far more.
MAX_RULES_BYTES = 1024 * 1024
MAX_RULES_VALUES = 10_000  # settings, list items and values
MAX_NESTING = 32  # lists and mappings open at once
# Order statuses that do not count as revenue unless rules.yaml says otherwise (`orders.exclude_statuses`).
DEFAULT_EXCLUDED_STATUSES = ("cancelled", "canceled", "refunded", "void")
# An order may be dated this many days after the server's clock (time zones, a clock a little fast); later is a typo.
DEFAULT_MAX_FUTURE_DAYS = 1
MAX_STATUS_LENGTH = 64

SIGNATURE_HEADERS = frozenset({"webhook-id", "webhook-timestamp", "webhook-signature"})
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class RulesError(ValueError):
    """A rules file that cannot be used; `problems` lists every fault as 'file:line path: message'."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class _At(ValueError):
    """A validator's complaint about a part of its field (e.g. one segment), so the error names that line."""

    def __init__(self, at: tuple, message: str):
        self.at = at
        super().__init__(message)


@dataclass(frozen=True)
class Condition:
    metric: str
    op: str
    value: Decimal


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Segment(_Model):
    name: str = Field(min_length=1)
    when: dict[str, dict[str, Decimal]] = Field(default_factory=dict)

    @field_validator("when", mode="before")
    @classmethod
    def _known_metrics(cls, when: Any) -> Any:
        if not isinstance(when, dict):
            return when
        for metric, tests in when.items():
            problem = _condition_problem(metric, tests)
            if problem:
                raise ValueError(problem)
        return when

    @property
    def conditions(self) -> tuple[Condition, ...]:
        return tuple(Condition(m, op, v) for m, tests in self.when.items() for op, v in tests.items())


def _condition_problem(metric: str, tests: Any) -> str | None:
    if metric not in METRICS:
        return f"unknown metric '{metric}' (use one of: {', '.join(METRICS)})"
    if not isinstance(tests, dict) or not tests:
        return f"'{metric}' needs a comparison such as {{gt: 90}}"
    for op, value in tests.items():
        if op not in OPERATORS:
            return f"unknown operator '{op}' (use one of: {', '.join(OPERATORS)})"
        if not isinstance(value, Decimal) or value.is_nan():
            return f"{op} needs a number, got '{value}'"
        if value < 0:
            return f"{op} {value}: thresholds cannot be negative"
        limit = MAX_THRESHOLDS.get(metric, MAX_RFM_SCORE)
        if value > limit:
            return f"{op} {value}: too large for {metric} (at most {limit})"
        if _too_precise(value):
            return f"{op} {value}: use at most {MAX_DECIMALS} decimal places"
    return None


def _too_precise(value: Decimal) -> bool:
    return value.is_finite() and value != 0 and value.normalize().as_tuple().exponent < -MAX_DECIMALS


class FrequencyBand(_Model):
    name: str = Field(min_length=1)
    max_avg_days: Decimal | None = Field(default=None, ge=0, le=MAX_DAYS)

    @field_validator("max_avg_days")
    @classmethod
    def _plain_days(cls, days: Decimal | None) -> Decimal | None:
        if days is not None and _too_precise(days):
            raise ValueError(f"use at most {MAX_DECIMALS} decimal places")
        return days


class Trigger(_Model):
    entered: str | None = None
    left: str | None = None
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    reached: dict[str, Decimal] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Trigger:
        kinds = [k for k in ("entered", "left", "reached") if getattr(self, k) is not None]
        if self.from_ is not None or self.to is not None:
            kinds.append("from/to")
        if len(kinds) != 1:
            raise ValueError("say exactly one of: entered, left, from/to, reached")
        if self.reached is not None:
            if len(self.reached) != 1:
                raise ValueError("reached takes exactly one day metric, e.g. {lastOrderDaysAgo: 75}")
            metric, days = next(iter(self.reached.items()))
            if metric not in DAY_METRICS:
                raise ValueError(f"reached works on {' or '.join(DAY_METRICS)}, not '{metric}'")
            if days < 0 or days != days.to_integral_value():
                raise ValueError(f"reached {metric} must be a whole number of days, got {days}")
            if days > MAX_DAYS:
                raise ValueError(f"reached {metric} {days}: at most {MAX_DAYS} days")
        return self


class Campaign(_Model):
    on: Trigger
    webhook: str
    segment: str | None = None  # for `reached`: only while the customer is in this segment
    # Just before sending, check that the move still holds (the customer is still VIP, no newer order undid the
    # milestone); an event whose move was undone is `superseded`, never sent. False: always send.
    recheck: bool = True
    # While an earlier event of the customer is being retried, this campaign's events wait (a customer never hears
    # "vip" before "welcome"). False: send without waiting and hold nothing back (e.g. a CRM sync).
    ordered: bool = True


def status_key(status: str | None) -> str:
    """How order statuses are compared: 'Cancelled ', 'CANCELLED' and 'cancelled' are one status."""
    return (status or "").strip().casefold()


class OrderRules(_Model):
    """Which orders count, and how far ahead of the server's clock an order may be dated."""

    exclude_statuses: tuple[str, ...] = DEFAULT_EXCLUDED_STATUSES
    max_future_days: int = Field(default=DEFAULT_MAX_FUTURE_DAYS, ge=0, le=366)

    @field_validator("exclude_statuses")
    @classmethod
    def _plain_statuses(cls, statuses: tuple[str, ...]) -> tuple[str, ...]:
        for status in statuses:
            if not status_key(status) or len(status) > MAX_STATUS_LENGTH:
                raise ValueError(f"each status must be a word of 1 to {MAX_STATUS_LENGTH} characters, got '{status}'")
        return statuses

    @cached_property
    def excluded(self) -> frozenset[str]:
        """The statuses that do not count, as compared (see status_key)."""
        return frozenset(status_key(status) for status in self.exclude_statuses)


class Webhook(_Model):
    url: str
    secret: str = Field(min_length=1)
    timeout_seconds: float = Field(default=10, gt=0, le=120)
    headers: dict[str, str] = Field(default_factory=dict)
    batch_size: int = Field(default=1, ge=1, le=500)
    max_concurrency: int = Field(default=4, ge=1, le=32)
    # n8n keeps an execution per call and takes some 15-75 calls/s on a small host: pace the sends to it
    max_per_second: float | None = Field(default=None, gt=0, le=10_000)
    retry_schedule_seconds: tuple[float, ...] = Field(default=DEFAULT_RETRY_SCHEDULE)

    @field_validator("url")
    @classmethod
    def _http_only(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return url

    @field_validator("secret")
    @classmethod
    def _usable_secret(cls, secret: str) -> str:
        # Checked here, not at the first send, so a bad secret is refused with its line instead of killing events.
        # The message never repeats the secret.
        if secret.startswith("whsec_"):
            try:
                key = base64.b64decode(secret.removeprefix("whsec_") + "==")  # as standardwebhooks reads it
            except binascii.Error:
                key = b""
            if not key:
                raise ValueError("a 'whsec_...' secret must be base64 after 'whsec_' (as Standard Webhooks "
                                 "generates it); or use any other text without the prefix")
        return secret

    @field_validator("headers")
    @classmethod
    def _drop_empty_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"'{name}' is not a valid header name (letters, digits and dashes, no spaces)")
            if name.lower() in SIGNATURE_HEADERS:
                raise ValueError(f"'{name}' is set for each event by the signature; remove it from headers")
            if any(ch in value for ch in "\r\n\0"):
                raise ValueError(f"the value of header '{name}' may not contain line breaks")
        # `${TOKEN:-}` makes a header optional: unset means the header is not sent at all.
        return {name: value for name, value in headers.items() if value}

    @field_validator("retry_schedule_seconds")
    @classmethod
    def _positive_delays(cls, schedule: tuple[float, ...]) -> tuple[float, ...]:
        if not all(0 < delay <= MAX_DELAY_SECONDS for delay in schedule):  # also refuses nan and inf
            raise ValueError(f"every retry delay must be a number of seconds from 0 to {MAX_DELAY_SECONDS} (a week)")
        return schedule


class RfmGroupRule(_Model):
    name: str = Field(min_length=1)
    recency: tuple[int, int]
    frequency_monetary: tuple[int, int]

    @field_validator("recency", "frequency_monetary")
    @classmethod
    def _score_range(cls, bounds: tuple[int, int]) -> tuple[int, int]:
        low, high = bounds
        if not 1 <= low <= high <= 5:
            raise ValueError("give [lowest, highest] scores between 1 and 5, e.g. [4, 5]")
        return bounds


class Schedule(_Model):
    evaluate_every_seconds: float = Field(default=60, le=MAX_INTERVAL_SECONDS)
    deliver_every_seconds: float = Field(default=5, le=MAX_INTERVAL_SECONDS)

    @field_validator("evaluate_every_seconds", "deliver_every_seconds")
    @classmethod
    def _not_too_often(cls, seconds: float) -> float:
        if not seconds >= MIN_INTERVAL_SECONDS:  # also refuses nan
            raise ValueError(f"must be at least {MIN_INTERVAL_SECONDS} seconds (more often only keeps a CPU busy; "
                             "the defaults are 60 for evaluate and 5 for deliver)")
        return seconds


class Rules(_Model):
    version: Literal[1] = 1
    timezone: str = "UTC"
    segments: tuple[Segment, ...]
    no_orders_segment: str = "New"
    purchase_frequency: tuple[FrequencyBand, ...]
    campaigns: dict[str, Campaign] = Field(default_factory=dict)
    webhooks: dict[str, Webhook] = Field(default_factory=dict)
    schedule: Schedule = Field(default_factory=Schedule)
    rfm_groups: tuple[RfmGroupRule, ...] | None = None  # None: the usual RFM segment map
    first_run: Literal["baseline", "emit"] = "baseline"
    orders: OrderRules = Field(default_factory=OrderRules)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone '{name}' (use an IANA name such as Europe/Berlin)") from None
        return name

    @field_validator("segments")
    @classmethod
    def _segments_make_sense(cls, segments: tuple[Segment, ...]) -> tuple[Segment, ...]:
        if not segments:
            raise ValueError("list at least one segment")
        names = [s.name for s in segments]
        repeated = next((i for i, n in enumerate(names) if n in names[:i]), None)
        if repeated is not None:
            raise _At((repeated, "name"), f"segment names must be unique; repeated: {names[repeated]}")
        if segments[-1].when:
            raise _At((len(segments) - 1, "when"),
                      f"the last segment must have no `when` so every customer gets one (last is '{names[-1]}')")
        default = next((i for i, s in enumerate(segments[:-1]) if not s.when), None)
        if default is not None:
            raise _At((default,), f"segment '{names[default]}' has no `when`, so the segments after it can never match")
        return segments

    @field_validator("purchase_frequency")
    @classmethod
    def _bands_ascend(cls, bands: tuple[FrequencyBand, ...]) -> tuple[FrequencyBand, ...]:
        if not bands or bands[-1].max_avg_days is not None:
            raise _At((len(bands) - 1, "max_avg_days") if bands else (),
                      "the last purchase_frequency band must have no max_avg_days (it catches the rest)")
        limits = [b.max_avg_days for b in bands[:-1]]
        if None in limits:
            raise _At((limits.index(None),), "only the last purchase_frequency band may omit max_avg_days")
        descending = next((i for i in range(1, len(limits)) if limits[i] < limits[i - 1]), None)
        if descending is not None:
            raise _At((descending, "max_avg_days"),
                      "purchase_frequency bands must be listed with max_avg_days ascending")
        return bands

    @model_validator(mode="after")
    def _references_exist(self) -> Rules:
        names = {s.name for s in self.segments}
        if self.no_orders_segment not in names:
            raise _At(("no_orders_segment",), f"'{self.no_orders_segment}' is not one of the segments")
        for key, campaign in self.campaigns.items():
            if campaign.webhook not in self.webhooks:
                raise _At(("campaigns", key, "webhook"), f"webhook '{campaign.webhook}' is not defined under webhooks")
            trigger = campaign.on
            for at, value in ((("on", "entered"), trigger.entered), (("on", "left"), trigger.left),
                              (("on", "from"), trigger.from_), (("on", "to"), trigger.to),
                              (("segment",), campaign.segment)):
                if value is not None and value not in names:
                    raise _At(("campaigns", key, *at), f"{at[-1]} names unknown segment '{value}'")
        return self

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @cached_property  # hashing the model costs ~50 µs; evaluation asks for it per transition
    def rules_version(self) -> str:
        """Content hash of everything that decides segments and campaigns (not secrets, URLs or schedule)."""
        semantic = self.model_dump(mode="json", by_alias=True, include={
            "version", "timezone", "segments", "no_orders_segment", "purchase_frequency", "campaigns", "rfm_groups"})
        canonical = json.dumps(semantic, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def segment_names(rules: Rules) -> list[str]:
    return [segment.name for segment in rules.segments]


def frequency_names(rules: Rules) -> list[str]:
    """Every purchase frequency a customer can have: the bands, then One-time and None."""
    return [band.name for band in rules.purchase_frequency] + [ONE_ORDER_FREQUENCY, NO_ORDERS_FREQUENCY]


def parse_rules(text: str, source: str = "rules.yaml", env: Mapping[str, str] | None = None) -> Rules:
    """Parse and validate rules text; raises RulesError naming `source`, line and field of every problem."""
    env = {} if env is None else env
    root = _compose(text, source)
    reader = _NodeReader(source, env)
    data = reader.read(root, ())
    if not isinstance(data, dict):
        raise RulesError([f"{source}:{root.start_mark.line + 1}: the top level must be a mapping of settings"])
    problems = reader.problems + _condition_problems(data, source, reader.lines)
    try:
        rules = Rules.model_validate(data)
    except ValidationError as exc:
        reported = [_problem_path(p) for p in problems]
        for err in exc.errors():
            described = _describe(err, source, reader.lines)
            path = _problem_path(described)
            if not any(path.startswith(seen) or seen.startswith(path) for seen in reported):
                problems.append(described)
    if problems:
        raise RulesError(problems)
    return rules


def parse_order_rules(text: str, source: str = "rules.yaml", env: Mapping[str, str] | None = None) -> OrderRules:
    """Only the `orders` settings of a rules file: what storing orders needs, without webhook secrets or URLs."""
    root = _compose(text, source)
    reader = _NodeReader(source, {} if env is None else env)
    data = reader.read(root, ())
    if not isinstance(data, dict):
        raise RulesError([f"{source}:{root.start_mark.line + 1}: the top level must be a mapping of settings"])
    problems = [p for p in reader.problems if _problem_path(p).startswith("orders")]
    try:
        orders = OrderRules.model_validate(data.get("orders") or {})
    except ValidationError as exc:
        problems += [_describe({**err, "loc": ("orders", *err["loc"])}, source, reader.lines) for err in exc.errors()]
    if problems:
        raise RulesError(problems)
    return orders


def refuse_if_too_large(size: int, source: str) -> None:
    """Raise RulesError when `size` bytes is more than a rules file may be (checked before reading a file)."""
    if size > MAX_RULES_BYTES:
        raise RulesError([f"{source}: {size:,} bytes is too large for a rules file (at most {MAX_RULES_BYTES:,} "
                          "bytes, 1 MiB; a rules file is a few KB)"])


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


def _condition_problems(data: dict, source: str, lines: dict[tuple, int]) -> list[str]:
    """Check segment conditions before the model so each message can name the exact metric or operator."""
    segments = data.get("segments")
    if not isinstance(segments, list):
        return []
    problems = []
    for i, segment in enumerate(segments):
        when = segment.get("when") if isinstance(segment, dict) else None
        if not isinstance(when, dict):
            continue
        for metric, tests in when.items():
            problem = _condition_problem(metric, tests)
            if problem:
                path = ("segments", i, "when", metric)
                op = next((op for op in (tests if isinstance(tests, dict) else {}) if op not in OPERATORS), None)
                line = lines.get(path + (op,)) if op else None
                problems.append(f"{source}:{line or lines.get(path)} {_dotted(path)}: {problem}")
    return problems


class _NodeReader:
    """Turns YAML nodes into plain data, remembering the line of every path and interpolating `${VAR}`."""

    def __init__(self, source: str, env: Mapping[str, str]):
        self.source = source
        self.env = env
        self.lines: dict[tuple, int] = {}
        self.problems: list[str] = []

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
            return ""

        return _ENV_REF.sub(substitute, raw)

    def _problem(self, line: int, path: tuple, message: str) -> None:
        self.problems.append(f"{self.source}:{line} {_dotted(path)}: {message}")


def _describe(error: Mapping[str, Any], source: str, lines: dict[tuple, int]) -> str:
    path = tuple(part for part in error["loc"] if part not in ("function-after", "function-before"))
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, _At):
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


def _problem_path(problem: str) -> str:
    return problem.split(": ", 1)[0].split(" ", 1)[-1]


def _dotted(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
