"""The dashboard's charts as plain SVG geometry the templates draw: horizontal bars, transitions per day stacked by
segment, a campaign's conversion per month by group (sent beside held out) with the uplift's interval, an
experiment's spend per customer by arm with its interval, and the colour class each segment is drawn in."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from rules.money import format_money
from worker.api.dashboard.formats import number, points, share
from worker.experiments import ArmReport, Interval
from worker.outcomes import Group, Period

SEGMENT_COLOURS = 6  # seg-0 ... seg-5 in dashboard.css; further segments reuse them


def colour_classes(names: list[str]) -> defaultdict[str, str]:
    classes = defaultdict(lambda: "seg-none")
    classes.update({name: f"seg-{index % SEGMENT_COLOURS}" for index, name in enumerate(names)})
    return classes


# --- horizontal bars ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Bar:
    label: str
    value: str
    css: str
    y: float
    text_y: float
    width: float
    value_x: float


@dataclass(frozen=True)
class BarChart:
    """Horizontal bars in a BARS_WIDTH x height viewBox: labels left, bars from BARS_LEFT, values after them."""

    bars: list[Bar]
    width: float
    height: float
    left: float
    bar_height: float


BARS_WIDTH = 440.0
BARS_LEFT = 90.0
BARS_MAX = 240.0
BAR_HEIGHT = 22.0
BAR_GAP = 8.0


def horizontal_bars(rows: list[tuple[str, int, str, str]]) -> BarChart:
    """(label, size, value text, css class) rows as one chart, the largest bar BARS_MAX wide."""
    largest = max((size for _, size, _, _ in rows), default=0)
    bars = []
    for index, (label, size, text, css) in enumerate(rows):
        width = round(BARS_MAX * size / largest, 1) if largest else 0.0
        y = index * (BAR_HEIGHT + BAR_GAP)
        bars.append(Bar(label, text, css, y, y + BAR_HEIGHT * 0.7, width, BARS_LEFT + width + 6))
    return BarChart(bars, BARS_WIDTH, max(len(rows) * (BAR_HEIGHT + BAR_GAP) - BAR_GAP, BAR_HEIGHT), BARS_LEFT,
                    BAR_HEIGHT)


# --- transitions per day ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    y: float
    height: float
    css: str


@dataclass(frozen=True)
class Column:
    day: str
    x: float
    total: int
    blocks: list[Block]
    detail: str  # '1 to VIP, 2 to New': segments in the rules' order

    @property
    def title(self) -> str:
        plural = "" if self.total == 1 else "s"
        return f"{self.day}: {self.total} transition{plural}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class DayChart:
    """A columns chart in a width x height viewBox: the plot spans (left, top) to (right, bottom), y ticks at the
    left, date labels below."""

    columns: list[Column]
    column_width: float
    y_ticks: list[tuple[float, str]]
    x_labels: list[tuple[float, str]]
    legend: list[tuple[str, str]]
    total: int
    width: float
    height: float
    left: float
    right: float
    top: float
    bottom: float


# About the pixel size it is shown at, so that its text reads like the page's.
CHART_WIDTH = 1000.0
CHART_HEIGHT = 220.0
PLOT_LEFT = 40.0
PLOT_RIGHT = CHART_WIDTH - 24  # room for the last date label
PLOT_TOP = 10.0
PLOT_BOTTOM = 190.0
X_LABEL_EVERY = 15


def transitions_chart(counts: list[tuple[str, str, int]], today: date, days: int, segments: list[str]) -> DayChart:
    """Stacked columns per day, oldest left, one colour per segment entered (in `segments` order, then any other),
    scaled to the busiest day."""
    per_day: dict[str, dict[str, int]] = defaultdict(dict)
    for day_text, segment, count in counts:
        per_day[day_text][segment] = per_day[day_text].get(segment, 0) + count
    shown = [(today - timedelta(days=offset)).isoformat() for offset in range(days - 1, -1, -1)]
    entered = {d: per_day.get(d, {}) for d in shown}
    names = segments + sorted({s for e in entered.values() for s in e} - set(segments))
    colours = colour_classes(names)
    top = _round_up(max((sum(e.values()) for e in entered.values()), default=0))
    plot_height = PLOT_BOTTOM - PLOT_TOP
    step = (PLOT_RIGHT - PLOT_LEFT) / days
    columns, x_labels = [], []
    for index, day_text in enumerate(shown):
        x = PLOT_LEFT + index * step
        blocks, y = [], PLOT_BOTTOM
        for name in (n for n in names if entered[day_text].get(n)):
            height = plot_height * entered[day_text][name] / top
            y -= height
            blocks.append(Block(round(y, 2), round(height, 2), colours[name]))
        detail = ", ".join(f"{entered[day_text][n]} to {n}" for n in names if entered[day_text].get(n))
        columns.append(Column(day_text, round(x, 2), sum(entered[day_text].values()), blocks, detail))
        if index % X_LABEL_EVERY == 0 or index == days - 1:
            x_labels.append((round(x + step / 2, 2), date.fromisoformat(day_text).strftime("%b %d")))
    ticks = [(round(PLOT_BOTTOM - plot_height * share, 2), number(top * share)) for share in (0, 0.5, 1)]
    used = [n for n in names if any(n in e for e in entered.values())]
    return DayChart(columns, round(step * 0.8, 2), ticks, x_labels, [(n, colours[n]) for n in used],
                    sum(c.total for c in columns), CHART_WIDTH, CHART_HEIGHT, PLOT_LEFT, PLOT_RIGHT, PLOT_TOP,
                    PLOT_BOTTOM)


def _round_up(value: int) -> int:
    """The chart's top: the first of 2, 4, 10, 20, 40, 50, 100, 200 ... not below `value`; always even, so the
    middle gridline is a whole number."""
    magnitude = 1
    while True:
        for factor in (2, 4, 5, 10):
            if factor * magnitude >= value and factor * magnitude % 2 == 0:
                return factor * magnitude
        magnitude *= 10


# --- a campaign's conversion per month, sent beside held out --------------------------------------------------

@dataclass(frozen=True)
class GroupBar:
    """One group's bar in a month: `conversion` None when none of its windows has closed (no bar, a dash)."""

    group: str  # 'sent' or 'held out', as the legend and the table say it
    css: str
    conversion: float | None
    x: float
    y: float
    width: float
    height: float

    @property
    def value(self) -> str:
        return share(self.conversion)

    @property
    def middle(self) -> float:
        return round(self.x + self.width / 2, 2)


@dataclass(frozen=True)
class MonthBars:
    month: str  # YYYY-MM
    label: str  # 'Jan 2026', or '' where labels would collide
    centre: float
    bars: tuple[GroupBar, ...]  # sent, then held out (when the campaign has a control group)
    title: str


@dataclass(frozen=True)
class ConversionChart:
    """Paired columns per month in a width x height viewBox: the plot spans (left, top) to (right, bottom),
    conversion ticks at the left, months below; values above the bars where they fit."""

    months: list[MonthBars]
    y_ticks: list[tuple[float, str]]
    show_values: bool
    width: float
    height: float
    left: float
    right: float
    top: float
    bottom: float


@dataclass(frozen=True)
class Whisker:
    """A month's uplift in points (the dot) and its 95 % interval (the line from low to high)."""

    month: str
    x: float
    y: float
    low_y: float
    high_y: float
    title: str


@dataclass(frozen=True)
class UpliftChart:
    whiskers: list[Whisker]
    x_labels: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    zero_y: float
    width: float
    height: float
    left: float
    right: float
    top: float
    bottom: float


# Narrower than the day chart and shown at most 680 px wide (dashboard.css), so that its text reads like the page's;
# on a phone the stylesheet enlarges the text instead, which the bars' and labels' spacing leaves room for.
CAMPAIGN_WIDTH = 600.0
CAMPAIGN_LEFT = 52.0
CAMPAIGN_RIGHT = CAMPAIGN_WIDTH - 12
CONVERSION_HEIGHT = 280.0
CONVERSION_TOP = 28.0  # room for the values above the tallest bars
CONVERSION_BOTTOM = 226.0
UPLIFT_HEIGHT = 214.0
UPLIFT_TOP = 26.0  # room for the axis title above the top tick
UPLIFT_BOTTOM = 164.0
BAR_MAX_WIDTH = 56.0
VALUE_MIN_BAR = 34.0  # narrower bars carry no value text ('29.6 %' would overlap); their titles and the table do
MONTH_LABEL_WIDTH = 80.0  # 'Dec 2025' at a phone's enlarged text, with a gap


def conversion_chart(months: Sequence[Period], held_out: bool = True) -> ConversionChart | None:
    """Each month's conversion of sent and of held-out customers (closed windows), side by side, on a scale from 0
    to the first multiple of 10 % above the highest; sent alone for a campaign without a control group (`held_out`
    False). None while no window has closed: there is nothing to draw yet."""
    groups = [("sent", "group-sent")] + ([("held out", "group-held")] if held_out else [])
    conversions = [(p.sent if g == "sent" else p.held_out).conversion for p in months for g, _ in groups]
    if all(c is None for c in conversions):
        return None
    top = _share_top(max(c for c in conversions if c is not None))
    step = (CAMPAIGN_RIGHT - CAMPAIGN_LEFT) / len(months)
    width = round(min(step * 0.36, BAR_MAX_WIDTH), 2)
    gap = min(4.0, step * 0.04)
    every = max(1, math.ceil(MONTH_LABEL_WIDTH / step))
    plot = CONVERSION_BOTTOM - CONVERSION_TOP
    shown = []
    for index, period in enumerate(months):
        centre = CAMPAIGN_LEFT + step * (index + 0.5)
        left = centre - (len(groups) * width + (len(groups) - 1) * gap) / 2
        bars = []
        for place, (group, css) in enumerate(groups):
            conversion = (period.sent if group == "sent" else period.held_out).conversion
            height = 0.0 if conversion is None else round(plot * conversion / top, 2)
            bars.append(GroupBar(group, css, conversion, round(left + place * (width + gap), 2),
                                 round(CONVERSION_BOTTOM - height, 2), width, height))
        label = _month_label(period.label) if index % every == 0 else ""
        shown.append(MonthBars(period.label, label, round(centre, 2), tuple(bars), _month_title(period, held_out)))
    ticks = [(round(CONVERSION_BOTTOM - plot * part, 2), share(top * part, 0)) for part in (0, 0.5, 1)]
    return ConversionChart(shown, ticks, width >= VALUE_MIN_BAR, CAMPAIGN_WIDTH, CONVERSION_HEIGHT, CAMPAIGN_LEFT,
                           CAMPAIGN_RIGHT, CONVERSION_TOP, CONVERSION_BOTTOM)


def uplift_chart(months: Sequence[Period]) -> UpliftChart | None:
    """Each month's uplift (sent minus held out, in points) with its 95 % interval, around a zero line; None when
    no month has an interval yet (no held-out window closed)."""
    measured = [(index, p, p.comparison.absolute_interval) for index, p in enumerate(months)
                if p.comparison.absolute_interval is not None]
    if not measured:
        return None
    top = _points_top(max(abs(end) for _, _, pair in measured for end in pair))
    step = (CAMPAIGN_RIGHT - CAMPAIGN_LEFT) / len(months)
    every = max(1, math.ceil(MONTH_LABEL_WIDTH / step))
    middle = (UPLIFT_TOP + UPLIFT_BOTTOM) / 2
    half = (UPLIFT_BOTTOM - UPLIFT_TOP) / 2

    def y_of(difference: float) -> float:
        return round(middle - half * difference / top, 2)

    whiskers = []
    for index, period, (low, high) in measured:
        c = period.comparison
        whiskers.append(Whisker(period.label, round(CAMPAIGN_LEFT + step * (index + 0.5), 2), y_of(c.absolute or 0.0),
                                y_of(low), y_of(high),
                                f"{period.label}: uplift {points(c.absolute)} points, 95 % interval {points(low)} to "
                                f"{points(high)} ({c.verdict})"))
    labels = [(round(CAMPAIGN_LEFT + step * (index + 0.5), 2), _month_label(p.label))
              for index, p in enumerate(months) if index % every == 0]
    ticks = [(y_of(value), f"{round(value * 100):+d}" if value else "0") for value in (top, 0.0, -top)]
    return UpliftChart(whiskers, labels, ticks, y_of(0.0), CAMPAIGN_WIDTH, UPLIFT_HEIGHT, CAMPAIGN_LEFT,
                       CAMPAIGN_RIGHT, UPLIFT_TOP, UPLIFT_BOTTOM)


def _month_label(month: str) -> str:
    return date.fromisoformat(f"{month}-01").strftime("%b %Y")


def _month_title(period: Period, held_out: bool) -> str:
    """The month's bars in words: '2026-01: sent 29.6 % ordered (266 of 900), held out 20.0 % ordered (20 of
    100)'."""
    def group(g: Group) -> str:
        if not g.customers:
            return "no closed window yet"
        return f"{share(g.conversion)} ordered ({number(g.converted)} of {number(g.customers)})"

    return f"{period.label}: sent {group(period.sent)}" + (f", held out {group(period.held_out)}" if held_out else "")


def _share_top(highest: float) -> float:
    """The conversion scale's top: the first of 10 %, 20 % ... 100 % not below `highest`."""
    return min(10, max(1, math.ceil(round(highest * 100, 6) / 10))) / 10


def _points_top(reach: float) -> float:
    """The uplift scale's reach either side of 0: the first of 5, 10, 20, 25, 50, 100 points not below `reach`."""
    return next((p for p in (5, 10, 20, 25, 50) if p >= round(reach * 100, 6)), 100) / 100


# --- an experiment's spend per customer per arm, with its 95 % interval ---------------------------------------

@dataclass(frozen=True)
class ArmBar:
    """One arm's mean spend per customer (the bar's top) and its interval (the whisker from low to high); `y` None
    when none of its windows has closed (no bar, a dash)."""

    arm: str
    x: float
    centre: float
    width: float
    y: float | None
    low_y: float | None
    high_y: float | None
    title: str

    @property
    def height(self) -> float:
        return 0.0 if self.y is None else round(CONVERSION_BOTTOM - self.y, 2)


@dataclass(frozen=True)
class SpendChart:
    bars: list[ArmBar]
    y_ticks: list[tuple[float, str]]
    width: float
    height: float
    left: float
    right: float
    top: float
    bottom: float


def spend_chart(arms: Sequence[ArmReport], currency: str, spend: Callable[[Interval], str]) -> SpendChart | None:
    """Each arm's spend per customer in the outcome window (closed windows) as a bar with its 95 % interval as a
    whisker, on a scale from 0 to the first of 1, 2, 5, 10 ... currency units above the highest; `spend` writes a
    figure with its interval for the bars' titles ('$24.50 ($18.10 to $30.90)'). None while no arm has a closed
    window: there is nothing to draw yet."""
    figures = [a.spend_per_customer for a in arms]
    if all(f.value is None for f in figures):
        return None
    top = _money_top(max(max(f.value, f.high or 0.0) for f in figures if f.value is not None))
    step = (CAMPAIGN_RIGHT - CAMPAIGN_LEFT) / len(arms)
    plot = CONVERSION_BOTTOM - CONVERSION_TOP

    def y_of(value: float | None) -> float | None:
        # a t interval of skewed spend can reach below 0: drawn from 0, the bar's title keeps the figure
        return None if value is None else round(CONVERSION_BOTTOM - plot * max(value, 0.0) / top, 2)

    bars = []
    for index, arm in enumerate(arms):
        f = arm.spend_per_customer
        title = f"{arm.arm}: no closed window yet" if f.value is None else \
            f"{arm.arm}: {spend(f)} per customer, {arm.measured} closed windows"
        centre, width = CAMPAIGN_LEFT + step * (index + 0.5), min(step * 0.5, BAR_MAX_WIDTH)
        bars.append(ArmBar(arm.arm, round(centre - width / 2, 2), round(centre, 2), round(width, 2), y_of(f.value),
                           y_of(f.low), y_of(f.high), title))
    ticks = [(y_of(top * part), format_money(Decimal(repr(top * part)), currency, cents=False))
             for part in (0, 0.5, 1)]
    return SpendChart(bars, ticks, CAMPAIGN_WIDTH, CONVERSION_HEIGHT, CAMPAIGN_LEFT, CAMPAIGN_RIGHT, CONVERSION_TOP,
                      CONVERSION_BOTTOM)


def _money_top(reach: float) -> float:
    """The scale's top: the first of 1, 2, 5, 10, 20, 50 ... currency units not below `reach`."""
    magnitude = 10 ** max(0, math.floor(math.log10(reach))) if reach > 0 else 1
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= reach)
