"""A full evaluation in a process of its own, so its time and peak memory are its own.

    python -m bench.child DB AS_OF   ->  one JSON line: seconds, counts, peak RSS, whether a saved model scored
"""

from __future__ import annotations

import json
import resource
import sys
import time

from bench.ruleset import bench_rules
from worker.evaluate import evaluate_due
from worker.prediction import load_model
from worker.serialize import parse_instant
from worker.store.sqlite import SQLiteStore


def peak_rss_kb() -> int:
    """VmHWM from /proc where there is one (Linux), else ru_maxrss (kilobytes on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def main() -> None:
    db, as_of = sys.argv[1], parse_instant(sys.argv[2])
    rules = bench_rules()
    store = SQLiteStore(db)
    # Loading a saved model imports numpy and scipy (about a second) before the clock starts, as in the scheduler's
    # long-lived process; what is timed is the scoring itself.
    scored = load_model(store, rules) is not None
    before_kb = peak_rss_kb()
    started, cpu = time.perf_counter(), time.process_time()
    result = evaluate_due(store, rules, as_of)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    store.close()
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "customers": result.customers,
                      "transitions": result.transitions, "events": result.events, "errors": result.errors,
                      "peak_rss_kb": peak_rss_kb(), "rss_before_kb": before_kb, "scored": scored}))


if __name__ == "__main__":
    main()
