"""The results: one row per scenario (figure, baseline, ratio, target, verdict), as a table and as JSON."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# Every run reports every scenario, in this order; a scenario that was skipped or failed says so in its row.
SCENARIOS: dict[str, str] = {
    "import": "import orders from CSV (CLI: validate, upsert, aggregates)",
    "outcome_import_overhead": "second import with measured campaign events vs without (CLI)",
    "first_eval_vs_groupby": "first full evaluation vs one GROUP BY aggregate",
    "first_eval_vs_naive": "first full evaluation vs per-customer queries (speed-up)",
    "idle_tick": "idle tick (nothing due, nothing new)",
    "idle_tick_flat": "idle tick at N vs at N/10 customers",
    "daily_tick": "daily tick (customers due one day later)",
    "api_get_one": "API GET one customer, in process, p50",
    "api_list_1000": "API list limit=1000, in process, median",
    "campaign_report": "campaign outcome report, one event per customer, warm, median",
    "experiment_eval_overhead": "full re-evaluation with a running threshold experiment vs without",
    "experiment_report": "threshold experiment report over the whole base, 1 in 10 entrants, warm, median",
    "http_throughput": "HTTP GET one customer, `python -m worker api` (waitress), requests/s",
    "http_p99": "HTTP GET one customer, `python -m worker api` (waitress), p99",
    "delivery_rate": "webhook delivery to a local receiver, events/s",
    "delivery_vs_bare": "webhook delivery vs bare requests.Session loop",
    "eval_peak_memory": "peak RSS of the first full evaluation (subprocess)",
    "model_fit": "churn model fit through the product (fit_and_save on the store)",
    "scoring_overhead": "full evaluation with the saved model vs without (subprocesses)",
    "model_fit_1m": "churn model fit at 1M simulated customers",
    "scaling": "first evaluation, time per customer at largest vs smallest N",
}

PASS, FAIL, SKIPPED, ERROR = "pass", "FAIL", "skipped", "error"


@dataclass
class Row:
    """One scenario's outcome. `ratio` is figure/baseline unless the target says otherwise (speed-ups)."""

    scenario: str
    figure: float | None = None
    unit: str = ""
    baseline: float | None = None
    baseline_label: str = ""
    ratio: float | None = None
    target: str = ""
    status: str = SKIPPED
    notes: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def judge(self, passed: bool) -> Row:
        self.status = PASS if passed else FAIL
        return self


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def table(rows: list[Row]) -> str:
    header = ("scenario", "figure", "baseline", "ratio", "target", "result")
    lines = [[r.scenario, _figure(r.figure, r.unit), _baseline(r), _ratio(r.ratio), r.target,
              r.status + (f" ({r.notes})" if r.notes else "")] for r in rows]
    widths = [max(len(header[i]), *(len(line[i]) for line in lines)) for i in range(len(header) - 1)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)) + "  " + header[-1]]
    out.append("  ".join("-" * w for w in widths) + "  " + "-" * len(header[-1]))
    for line in lines:
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)) + "  " + line[-1])
    return "\n".join(out)


def write_json(rows: list[Row], out_dir: Path, run: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"bench-{run['customers']}-{stamp}.json"
    document = {"run": run, "machine": machine(), "scenarios": {r.scenario: asdict(r) for r in rows}}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def _figure(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{_number(value)} {unit}".strip()


def _baseline(row: Row) -> str:
    if row.baseline is None:
        return row.baseline_label or "-"
    return f"{_number(row.baseline)} {row.unit} ({row.baseline_label})" if row.baseline_label else _number(row.baseline)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value < 1 else f"{value:.2f}"
