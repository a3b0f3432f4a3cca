"""One large SQLite base end to end: import and first evaluation of a million customers, each beside its floor in the
same run, with the peak memory of each step's own process.

    python -m bench.million [--customers 1000000] [--seed 42] [--work-dir DIR]

The orders are generated (about 16.5 a customer), imported with `python -m worker import-orders` (its peak RSS is
the process's own, from the kernel), then evaluated once in a child process (bench/child.py: seconds and peak RSS;
the bench's rules, with `first_run: emit`, so every customer moves and most get an outbox event).
The floors are sqlite3's `.import` of the same CSV into a bare table and one bare GROUP BY of the stored orders.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from bench.dataset import baseline_import, import_with_cli
from bench.dynamodb import RESULTS
from bench.evaluation import first_full_evaluation, group_by_baseline
from bench.generate import AS_OF, generate

RSS_GOAL_MB = 500


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-million-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        csv_path, db = work / "orders.csv", work / "segments.db"
        orders = generate(args.customers, csv_path, args.seed)
        generated = time.perf_counter() - started
        import_seconds, _ = import_with_cli(csv_path, db)
        import_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child so far
        floor_import, _, floor_how = baseline_import(csv_path, work)
        evaluated = first_full_evaluation(db, AS_OF)
        floor_group_by, _ = group_by_baseline(db, repeats=1)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    rows = [("import-orders", import_seconds, floor_import, floor_how, import_rss_mb),
            ("first evaluation (emit)", evaluated.seconds, floor_group_by, "bare GROUP BY", evaluated.peak_rss_mb)]
    print(f"\n{args.customers:,} customers, {orders:,} orders (generated in {generated:.0f} s), {os.cpu_count()} CPUs")
    print("| step | seconds | floor | vs floor | peak RSS |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, seconds, floor, how, rss in rows:
        print(f"| {name} | {seconds:.1f} | {floor:.1f} ({how}) | {seconds / floor:.1f}x | {rss:.0f} MB "
              f"({'within' if rss <= RSS_GOAL_MB else 'over'} {RSS_GOAL_MB} MB) |")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"million-{args.customers}.json"
    out.write_text(json.dumps({"customers": args.customers, "orders": orders, "steps": [
        {"step": name, "seconds": seconds, "floor_seconds": floor, "floor": how, "peak_rss_mb": rss}
        for name, seconds, floor, how, rss in rows]}, indent=2), encoding="utf-8")
    print(f"(written to {out}; load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
