"""The dashboard's charts as plain SVG geometry the templates draw: horizontal bars, transitions per day stacked by
segment, and the colour class each segment is drawn in."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta

from worker.api.dashboard.formats import number

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
