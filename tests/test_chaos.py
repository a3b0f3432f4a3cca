"""Crash recovery: the real scheduler and bulk import are killed with SIGKILL at random moments (during ingest,
evaluation and delivery) and restarted; nothing is lost, nothing is counted twice, a duplicate delivery only ever
carries the same webhook-id, and the database stays sound. The harness is bench/chaos.py; CI runs 10 rounds,
`--run-slow` (or `python -m bench.chaos --rounds 50`) the long version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.chaos import PHASES, ChaosReport, run_chaos

SEED = 7


def assert_survived(report: ChaosReport, rounds: int) -> None:
    print("\n" + report.summary())
    assert report.problems == []
    assert report.lost == []
    assert report.integrity == "ok"
    assert sum(report.kills.values()) == rounds
    assert report.events == report.transitions > 0
    assert report.retried > 0, "the receiver's 503s should have made some deliveries retry"


def assert_logs_are_json_lines_naming_events_and_customers(work_dir: Path) -> None:
    delivered = 0
    for log in sorted(work_dir.glob("scheduler-*.log")):
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        for number, line in enumerate(lines, start=1):
            try:
                entry = json.loads(line)
            except ValueError:
                assert number == len(lines), f"{log.name}:{number} is not JSON: {line[:200]}"
                continue  # the last line of a killed process may be cut off mid-write
            assert {"time", "level", "logger", "message"} <= set(entry)
            if entry["message"].startswith("delivered "):
                delivered += 1
                assert entry["event_ids"] and entry["contact_ids"] and entry["webhook"] == "n8n"
    assert delivered > 0


def test_ten_rounds_of_kill_9_lose_nothing(tmp_path: Path) -> None:
    report = run_chaos(10, SEED, tmp_path, log=lambda line: None)

    assert_survived(report, 10)
    assert all(report.kills[phase] > 0 for phase in PHASES), report.kills
    assert_logs_are_json_lines_naming_events_and_customers(tmp_path)


@pytest.mark.slow
def test_fifty_rounds_of_kill_9_lose_nothing(tmp_path: Path) -> None:
    report = run_chaos(50, SEED, tmp_path, log=lambda line: None)

    assert_survived(report, 50)
    assert all(report.kills[phase] >= 10 for phase in PHASES), report.kills
