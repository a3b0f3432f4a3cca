"""The rules.yaml model (segments, frequency bands, campaigns, orders) and parse_rules, which reads and checks it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from rules.model import SettingsModel
from rules.reader import MAX_NESTING as MAX_NESTING  # the `X as X` imports: tests import these from here
from rules.reader import MAX_RULES_BYTES as MAX_RULES_BYTES
from rules.reader import MAX_RULES_VALUES as MAX_RULES_VALUES
from rules.reader import Document, ProblemAt, RulesError, Unset, read_document
from rules.webhooks import MIN_INTERVAL_SECONDS as MIN_INTERVAL_SECONDS
from rules.webhooks import Schedule, Webhook

RFM_METRICS = ("rfmRecency", "rfmFrequency", "rfmMonetary")
# The churn and value model's figures (null, so no condition on them holds, while no model is fitted).
PREDICTED_METRICS = ("churnRisk", "pAlive", "expectedOrders90d", "predictedClv12m")
METRICS = (("totalSpend", "orderCount", "lastOrderDaysAgo", "firstOrderDaysAgo", "avgDaysBetweenOrders")
           + RFM_METRICS + PREDICTED_METRICS)
MONEY_METRICS = ("totalSpend", "predictedClv12m")  # compared in cents
# Churn risk bands, lowest first; a band trigger (`reached: {churnRiskBand: High}`) fires when the risk rises into it.
BAND_METRIC = "churnRiskBand"
CHURN_BANDS = ("Low", "Medium", "High")
DAY_METRICS = ("lastOrderDaysAgo", "firstOrderDaysAgo")
OPERATORS = ("gt", "gte", "lt", "lte", "eq")
NO_ORDERS_FREQUENCY = "None"
ONE_ORDER_FREQUENCY = "One-time"
# Upper bounds far beyond any real rule, so that date arithmetic cannot overflow and no threshold becomes a
# number so large (or so finely divided, hence MAX_DECIMALS) that comparing with it takes minutes.
MAX_DAYS = 36_500  # a century
MAX_THRESHOLDS = {"totalSpend": Decimal(10**12), "orderCount": Decimal(10**9), "lastOrderDaysAgo": Decimal(MAX_DAYS),
                  "firstOrderDaysAgo": Decimal(MAX_DAYS), "avgDaysBetweenOrders": Decimal(MAX_DAYS),
                  "churnRisk": Decimal(1), "pAlive": Decimal(1), "expectedOrders90d": Decimal(10**6),
                  "predictedClv12m": Decimal(10**12)}
MAX_RFM_SCORE = Decimal(5)
MAX_DECIMALS = 6
# Order statuses that do not count as revenue unless rules.yaml says otherwise (`orders.exclude_statuses`).
DEFAULT_EXCLUDED_STATUSES = ("cancelled", "canceled", "refunded", "void")
# An order may be dated this many days after the server's clock (time zones, a clock a little fast); later is a typo.
DEFAULT_MAX_FUTURE_DAYS = 1
MAX_STATUS_LENGTH = 64
MAX_ARMS = 10


@dataclass(frozen=True)
class Condition:
    metric: str
    op: str
    value: Decimal


class Segment(SettingsModel):
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


class FrequencyBand(SettingsModel):
    name: str = Field(min_length=1)
    max_avg_days: Decimal | None = Field(default=None, ge=0, le=MAX_DAYS)

    @field_validator("max_avg_days")
    @classmethod
    def _plain_days(cls, days: Decimal | None) -> Decimal | None:
        if days is not None and _too_precise(days):
            raise ValueError(f"use at most {MAX_DECIMALS} decimal places")
        return days


class Trigger(SettingsModel):
    entered: str | None = None
    left: str | None = None
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    reached: dict[str, Decimal | str] | None = None

    @property
    def day_milestone(self) -> tuple[str, int] | None:
        """(metric, days) of a `reached` day milestone; None for other triggers."""
        if self.reached is None:
            return None
        metric, value = next(iter(self.reached.items()))
        return (metric, int(value)) if metric in DAY_METRICS else None

    @property
    def band_milestone(self) -> str | None:
        """The churn risk band of a `reached: {churnRiskBand: High}` trigger; None for other triggers."""
        if self.reached is None:
            return None
        metric, value = next(iter(self.reached.items()))
        return str(value) if metric == BAND_METRIC else None

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
            if metric == BAND_METRIC:
                if days not in CHURN_BANDS[1:]:
                    raise ValueError(f"reached {BAND_METRIC} takes {' or '.join(CHURN_BANDS[1:])} (the risk rises into "
                                     f"a band between orders; a new order lowers it), got '{days}'")
                return self
            if metric not in DAY_METRICS:
                raise ValueError(f"reached works on {', '.join(DAY_METRICS + (BAND_METRIC,))}, not '{metric}'")
            if not isinstance(days, Decimal):
                raise ValueError(f"reached {metric} must be a whole number of days, got '{days}'")
            if days < 0 or days != days.to_integral_value():
                raise ValueError(f"reached {metric} must be a whole number of days, got {days}")
            if days > MAX_DAYS:
                raise ValueError(f"reached {metric} {days}: at most {MAX_DAYS} days")
        return self


class Campaign(SettingsModel):
    on: Trigger
    webhook: str
    segment: str | None = None  # for `reached`: only while the customer is in this segment
    # Just before sending, check that the move still holds (the customer is still VIP, no newer order undid the
    # milestone); an event whose move was undone is `superseded`, never sent. False: always send.
    recheck: bool = True
    # While an earlier event of the customer is being retried, this campaign's events wait (a customer never hears
    # "vip" before "welcome"). False: send without waiting and hold nothing back (e.g. a CRM sync).
    ordered: bool = True
    # Conditions on the customer at the moment of the move (the segments' metrics, e.g. predictedClv12m: {gte: 200}):
    # the campaign fires only while they all hold, and its events are re-checked against them before sending.
    when: dict[str, dict[str, Decimal]] = Field(default_factory=dict)
    # A control group: this share of the customers who trigger the campaign (by a hash of campaign, contactID and
    # holdout_salt) are held out: their events are recorded as `held_out`, never sent, so outcomes can be compared.
    holdout_percent: Decimal = Field(default=Decimal(0), ge=0, le=50)
    # How long after an event an order counts as its outcome: through the `outcome_days`-th calendar day.
    outcome_days: int = Field(default=30, ge=1, le=365)

    _known_metrics = field_validator("when", mode="before")(Segment._known_metrics.__func__)

    @field_validator("holdout_percent")
    @classmethod
    def _whole_hundredths(cls, percent: Decimal) -> Decimal:
        if percent != percent.quantize(Decimal("0.01")):
            raise ValueError(f"use at most 2 decimal places, got {percent}")
        return percent

    @property
    def conditions(self) -> tuple[Condition, ...]:
        return tuple(Condition(m, op, v) for m, tests in self.when.items() for op, v in tests.items())


class Arm(SettingsModel):
    """One arm of a threshold experiment: the value its customers' segment condition uses, and its share (%)."""

    value: Decimal
    share: Decimal = Field(gt=0, le=100)

    _whole_hundredths = field_validator("share")(Campaign._whole_hundredths.__func__)


class Experiment(SettingsModel):
    """A threshold A/B test: each customer is drawn into one arm (by a hash of the experiment, contactID and
    holdout_salt) and classified with the segment's condition on `metric` at that arm's value. `winner` ends it:
    everyone is classified at the winner's value, through normal transitions."""

    segment: str = Field(min_length=1)
    metric: str | None = None  # which of the segment's conditions; may be left out when it has only one
    arms: dict[str, Arm]
    winner: str | None = None
    # How long after entering the segment an order counts in the report: through the `outcome_days`-th day.
    outcome_days: int = Field(default=30, ge=1, le=365)

    @field_validator("arms")
    @classmethod
    def _arms_add_up(cls, arms: dict[str, Arm]) -> dict[str, Arm]:
        if not 2 <= len(arms) <= MAX_ARMS:
            raise ValueError(f"give 2 to {MAX_ARMS} arms, got {len(arms)}")
        for name in arms:
            if not name or len(name) > 64:
                raise ValueError(f"arm names must be 1 to 64 characters, got '{name}'")
        total = sum(arm.share for arm in arms.values())
        if total != 100:
            raise ValueError(f"the arms' shares must add up to 100, they add up to {total}")
        return arms

    @model_validator(mode="after")
    def _winner_is_an_arm(self) -> Experiment:
        if self.winner is not None and self.winner not in self.arms:
            raise ValueError(f"winner '{self.winner}' is not one of the arms ({', '.join(self.arms)})")
        return self

    @property
    def running(self) -> bool:
        return self.winner is None

    @property
    def shares(self) -> tuple[tuple[str, Decimal], ...]:
        """(arm, share) in the order the arms are listed: the order the draw fills them in."""
        return tuple((name, arm.share) for name, arm in self.arms.items())


def status_key(status: str | None) -> str:
    """How order statuses are compared: 'Cancelled ', 'CANCELLED' and 'cancelled' are one status."""
    return (status or "").strip().casefold()


class OrderRules(SettingsModel):
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


class ChurnBands(SettingsModel):
    """Cut points of churnRiskBand: High from `high` up, Medium from `medium`, Low below."""

    medium: Decimal = Field(default=Decimal("0.5"), gt=0, lt=1)
    high: Decimal = Field(default=Decimal("0.8"), gt=0, lt=1)

    @model_validator(mode="after")
    def _ascending(self) -> ChurnBands:
        if self.medium >= self.high:
            raise ValueError(f"medium ({self.medium}) must be below high ({self.high})")
        return self

    def band(self, churn_risk: float) -> str:
        if churn_risk >= self.high:
            return "High"
        return "Medium" if churn_risk >= self.medium else "Low"


class PredictionRules(SettingsModel):
    """The churn and value model (BG/NBD and Gamma-Gamma): when it is fitted, over what horizon, how it is shown."""

    enabled: bool = True
    horizon_days: int = Field(default=90, ge=7, le=730)  # churnRisk = P(no order in the next horizon_days)
    churn_bands: ChurnBands = Field(default_factory=ChurnBands)
    monthly_discount_rate: Decimal = Field(default=Decimal("0.01"), ge=0, le=1)  # for predictedClv12m
    refit_every_hours: int = Field(default=24, ge=1, le=24 * 366)
    # The gate below which no prediction is made (Klaviyo's published one, and some repeat buyers).
    min_customers_with_orders: int = Field(default=500, ge=1)
    min_history_days: int = Field(default=180, ge=0, le=MAX_DAYS)
    min_customers_with_3_orders: int = Field(default=50, ge=0)


class RfmGroupRule(SettingsModel):
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


class Rules(SettingsModel):
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
    prediction: PredictionRules = Field(default_factory=PredictionRules)
    holdout_salt: str = Field(default="segment-worker", min_length=1, max_length=200)  # see Campaign.holdout_percent
    experiments: dict[str, Experiment] = Field(default_factory=dict)
    currency: str = "USD"  # how people see money (dashboard); amounts are stored and sent without it
    # Webhooks whose `${VAR}`s are unset: name -> the variables. They are left out of `webhooks`, and nothing is
    # delivered while any is (see `delivery_problem`); everything else works without delivery settings.
    _undeliverable: dict[str, tuple[str, ...]] = PrivateAttr(default_factory=dict)

    @field_validator("currency")
    @classmethod
    def _currency_code(cls, code: str) -> str:
        if not (len(code) == 3 and code.isascii() and code.isalpha() and code.isupper()):
            raise ValueError(f"'{code}' is not a currency code; use ISO 4217's three capital letters, e.g. USD or EUR")
        return code

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
            raise ProblemAt((repeated, "name"), f"segment names must be unique; repeated: {names[repeated]}")
        if segments[-1].when:
            raise ProblemAt((len(segments) - 1, "when"),
                            f"the last segment must have no `when` so every customer gets one (last is '{names[-1]}')")
        default = next((i for i, s in enumerate(segments[:-1]) if not s.when), None)
        if default is not None:
            raise ProblemAt((default,),
                            f"segment '{names[default]}' has no `when`, so the segments after it can never match")
        return segments

    @field_validator("purchase_frequency")
    @classmethod
    def _bands_ascend(cls, bands: tuple[FrequencyBand, ...]) -> tuple[FrequencyBand, ...]:
        if not bands or bands[-1].max_avg_days is not None:
            raise ProblemAt((len(bands) - 1, "max_avg_days") if bands else (),
                            "the last purchase_frequency band must have no max_avg_days (it catches the rest)")
        limits = [b.max_avg_days for b in bands[:-1]]
        if None in limits:
            raise ProblemAt((limits.index(None),), "only the last purchase_frequency band may omit max_avg_days")
        descending = next((i for i in range(1, len(limits)) if limits[i] < limits[i - 1]), None)
        if descending is not None:
            raise ProblemAt((descending, "max_avg_days"),
                            "purchase_frequency bands must be listed with max_avg_days ascending")
        return bands

    @model_validator(mode="after")
    def _references_exist(self) -> Rules:
        names = {s.name for s in self.segments}
        if self.no_orders_segment not in names:
            raise ProblemAt(("no_orders_segment",), f"'{self.no_orders_segment}' is not one of the segments")
        for key, campaign in self.campaigns.items():
            if campaign.webhook not in self.webhooks:
                raise ProblemAt(("campaigns", key, "webhook"),
                                f"webhook '{campaign.webhook}' is not defined under webhooks")
            trigger = campaign.on
            for at, value in ((("on", "entered"), trigger.entered), (("on", "left"), trigger.left),
                              (("on", "from"), trigger.from_), (("on", "to"), trigger.to),
                              (("segment",), campaign.segment)):
                if value is not None and value not in names:
                    raise ProblemAt(("campaigns", key, *at), f"{at[-1]} names unknown segment '{value}'")
        return self

    @model_validator(mode="after")
    def _experiments_make_sense(self) -> Rules:
        by_name = {s.name: s for s in self.segments}
        tested: dict[tuple[str, str], str] = {}
        for key, experiment in self.experiments.items():
            if key in self.campaigns:
                raise ProblemAt(("experiments", key), f"'{key}' is also a campaign's name; give the experiment its own")
            segment = by_name.get(experiment.segment)
            if segment is None:
                raise ProblemAt(("experiments", key, "segment"),
                                f"segment names unknown segment '{experiment.segment}'")
            if not segment.when:
                raise ProblemAt(("experiments", key, "segment"),
                                f"segment '{segment.name}' has no condition for the arms to change")
            metric = experiment.metric
            if metric is None:
                if len(segment.conditions) != 1:
                    raise ProblemAt(("experiments", key),
                                    f"segment '{segment.name}' has several conditions: say which one the arms change "
                                    f"with `metric` (one of {', '.join(segment.when)})")
                metric = segment.conditions[0].metric
            elif metric not in segment.when:
                raise ProblemAt(("experiments", key, "metric"),
                                f"segment '{segment.name}' has no condition on '{metric}' (it has "
                                f"{', '.join(segment.when)})")
            if len(segment.when[metric]) != 1:
                raise ProblemAt(("experiments", key, "metric"),
                                f"the condition on '{metric}' of segment '{segment.name}' has several comparisons; "
                                "an experiment changes a condition with one")
            op = next(iter(segment.when[metric]))
            for arm, settings in experiment.arms.items():
                problem = _condition_problem(metric, {op: settings.value})
                if problem:
                    raise ProblemAt(("experiments", key, "arms", arm, "value"), problem)
            if (segment.name, metric) in tested:
                raise ProblemAt(("experiments", key),
                                f"experiment '{tested[(segment.name, metric)]}' already changes {metric} of segment "
                                f"'{segment.name}'; run one experiment per condition")
            tested[(segment.name, metric)] = key
        return self

    @property
    def undeliverable(self) -> Mapping[str, tuple[str, ...]]:
        """The webhooks that cannot deliver for want of environment variables: name -> the variables unset."""
        return self._undeliverable

    @property
    def unset_variables(self) -> tuple[str, ...]:
        return tuple(sorted({name for names in self._undeliverable.values() for name in names}))

    @property
    def delivery_problem(self) -> str | None:
        """Why nothing is delivered, in one line, or None when every webhook has its settings."""
        if not self._undeliverable:
            return None
        names = self.unset_variables
        verb = "is" if len(names) == 1 else "are"
        return (f"delivery is disabled: {', '.join(names)} {verb} not set (needed by webhook"
                f"{'s' if len(self._undeliverable) > 1 else ''} {', '.join(self._undeliverable)}); set "
                f"{'it' if len(names) == 1 else 'them'} in the environment and restart. Evaluation goes on, and "
                "events wait in the outbox")

    @cached_property
    def uses_predictions(self) -> bool:
        """Whether a segment condition or a campaign trigger reads the model's figures (so they decide moves)."""
        return (any(c.metric in PREDICTED_METRICS for s in self.segments for c in s.conditions)
                or any(c.on.band_milestone is not None or any(k.metric in PREDICTED_METRICS for k in c.conditions)
                       for c in self.campaigns.values()))

    @cached_property
    def experiment_conditions(self) -> Mapping[str, tuple[int, str, str]]:
        """Experiment -> (index of its segment, metric, operator): the condition its arms change."""
        index = {s.name: i for i, s in enumerate(self.segments)}
        found = {}
        for key, experiment in self.experiments.items():
            i = index[experiment.segment]
            metric = experiment.metric or self.segments[i].conditions[0].metric
            found[key] = (i, metric, next(iter(self.segments[i].when[metric])))
        return found

    @cached_property
    def running_experiments(self) -> tuple[str, ...]:
        """The experiments without a winner yet: each customer's arm decides its segment."""
        return tuple(key for key, experiment in self.experiments.items() if experiment.running)

    def segments_under(self, arms: Mapping[str, str]) -> tuple[Segment, ...]:
        """The segments as a customer in these arms is classified: each experiment's condition at the value of the
        customer's arm, or of its winner once it has one; a running experiment without an arm here leaves the
        condition as written in `segments`."""
        segments = list(self.segments)
        for key, experiment in self.experiments.items():
            arm = arms.get(key) or experiment.winner
            if arm is None:
                continue
            i, metric, op = self.experiment_conditions[key]
            when = {**segments[i].when, metric: {op: experiment.arms[arm].value}}
            segments[i] = segments[i].model_copy(update={"when": when})
        return tuple(segments)

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def segment_names(self) -> tuple[str, ...]:
        """The segments in priority order."""
        return tuple(segment.name for segment in self.segments)

    @cached_property
    def frequency_names(self) -> tuple[str, ...]:
        """Every purchase frequency a customer can have: the bands, then One-time and None."""
        return tuple(band.name for band in self.purchase_frequency) + (ONE_ORDER_FREQUENCY, NO_ORDERS_FREQUENCY)

    @cached_property  # hashing the model costs ~50 µs; evaluation asks for it per transition
    def rules_version(self) -> str:
        """Content hash of everything that decides segments and campaigns (not secrets, URLs or schedule)."""
        semantic = self.model_dump(mode="json", by_alias=True, include={
            "version", "timezone", "segments", "no_orders_segment", "purchase_frequency", "campaigns", "rfm_groups",
            "holdout_salt",
            *(("prediction",) if self.uses_predictions else ()), *(("experiments",) if self.experiments else ())})
        canonical = json.dumps(semantic, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def parse_rules(text: str, source: str = "rules.yaml", env: Mapping[str, str] | None = None) -> Rules:
    """Parse and validate rules text; raises RulesError naming `source`, line and field of every problem."""
    document = read_document(text, source, env)
    undeliverable = _unset_in_webhooks(document.unset)
    unset_problems = {unset.problem for unset in document.unset if _is_delivery_setting(unset.path)}
    problems = [p for p in document.problems if p not in unset_problems] + _condition_problems(document)
    try:
        rules = Rules.model_validate(_with_placeholders(document.data, document.unset, undeliverable))
    except ValidationError as exc:
        problems += document.describe_new(exc.errors(), problems)
    if problems:
        raise RulesError(problems)
    if undeliverable:
        rules = rules.model_copy(update={"webhooks": {name: webhook for name, webhook in rules.webhooks.items()
                                                      if name not in undeliverable}})
        rules._undeliverable = undeliverable
    return rules


# What a webhook setting whose variable is unset is checked as, so the rest of that webhook is still checked.
_PLACEHOLDERS = {"url": "https://unset.invalid/"}
_PLACEHOLDER = "unset"


def _unset_in_webhooks(unset: tuple[Unset, ...]) -> dict[str, tuple[str, ...]]:
    """Webhook name -> the unset variables in its settings. Delivery needs them; checking and evaluating do not."""
    found: dict[str, dict[str, None]] = {}
    for item in unset:
        if _is_delivery_setting(item.path):
            found.setdefault(item.path[1], {})[item.name] = None
    return {name: tuple(names) for name, names in found.items()}


def _is_delivery_setting(path: tuple) -> bool:
    """A webhook's url, secret or a header value: what only sending needs (a retry delay or a timeout taken from
    an unset variable is a mistake in the file, refused as any other)."""
    return (len(path) in (3, 4) and path[0] == "webhooks" and isinstance(path[1], str)
            and (path[2:] in (("url",), ("secret",)) or (len(path) == 4 and path[2] == "headers")))


def _with_placeholders(data: dict[str, Any], unset: tuple[Unset, ...],
                       undeliverable: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    if not undeliverable:
        return data
    webhooks = {name: dict(settings) if isinstance(settings, dict) else settings
                for name, settings in data["webhooks"].items()}
    for item in unset:
        if not _is_delivery_setting(item.path):
            continue
        settings, key = webhooks[item.path[1]], item.path[2]
        if len(item.path) == 3:
            settings[key] = _PLACEHOLDERS.get(key, _PLACEHOLDER)
        elif isinstance(settings.get(key), dict):  # a header's value
            settings[key] = {**settings[key], item.path[3]: _PLACEHOLDER}
    return {**data, "webhooks": webhooks}


def parse_order_rules(text: str, source: str = "rules.yaml", env: Mapping[str, str] | None = None) -> OrderRules:
    """Only the `orders` settings of a rules file: what storing orders needs, without webhook secrets or URLs."""
    document = read_document(text, source, env)
    problems = document.problems_under("orders")
    try:
        orders = OrderRules.model_validate(document.data.get("orders") or {})
    except ValidationError as exc:
        problems += [document.describe({**err, "loc": ("orders", *err["loc"])}) for err in exc.errors()]
    if problems:
        raise RulesError(problems)
    return orders


def _condition_problems(document: Document) -> list[str]:
    """Check segment conditions before the model so each message can name the exact metric or operator."""
    segments = document.data.get("segments")
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
                line = document.lines.get(path + (op,)) if op else None
                problems.append(document.problem(line or document.lines.get(path), path, problem))
    return problems
