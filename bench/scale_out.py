"""Evaluation shared across scheduler processes: the throughput of 1, 2 and 4 processes on one DynamoDB store, and
the takeover of a killed process's shards.

    python -m bench.scale_out [--customers 4000] [--latency-ms 5] [--processes 1,2,4] [--no-takeover]
                              [--server dynalite|moto]

dynalite (or moto) on 127.0.0.1 sits behind bench/latency_proxy.py, which adds --latency-ms to every request, so
request counts and concurrency decide the figures, as on AWS, more than the local server's CPU. The generated orders
are imported and evaluated once (the baseline); then, for each process count, the rules change (another
holdout_salt: everyone is evaluated again, nobody moves) and that many real processes, started and ready, each run
one scheduler evaluation pass (`Jobs.evaluate_once`: the shards it can take, one lease each) at the same moment.
Throughput is customers per second of wall time, over all of them; each run checks that together they evaluated
every customer exactly once. The takeover: two processes evaluate in a loop, one is killed with SIGKILL while it
holds a shard, and the time until the other has evaluated everyone is measured (at most one lease TTL plus a tick).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

from bench.dataset import RULES_FILE, WEBHOOK_SECRET
from bench.dynamodb import RESULTS, read_orders
from bench.experiments import revalidated
from bench.generate import AS_OF, generate
from rules import Rules
from tests.server_process import stop
from worker.evaluate import evaluate_due
from worker.ingest import BATCH as IMPORT_BATCH
from worker.rfm_boundaries import evaluation_version, load_cutoffs
from worker.rules_file import load_rules_file
from worker.scheduler import EVALUATION_LEASE_SECONDS, Jobs
from worker.store import open_store
from worker.store.base import SHARDS

ENV = {"WEBHOOK_SECRET": WEBHOOK_SECRET, "N8N_WEBHOOK_URL": "http://127.0.0.1:9/x"}


@dataclass
class Trial:
    processes: int
    customers: int  # evaluated, over every process (each customer exactly once)
    seconds: float  # wall time from the common start to the last process's end
    per_second: float
    shards: list[int]  # how many shards each process took


@dataclass
class Takeover:
    killed_after_seconds: float
    everyone_after_seconds: float  # from the kill until the survivor had evaluated every customer
    lease_ttl_seconds: float
    customers: int


class _Fixed:
    """A rules source that never changes (the bench decides the rules)."""

    def __init__(self, rules: Rules):
        self.rules, self.error = rules, None

    def current(self) -> Rules:
        return self.rules


def base_rules() -> Rules:
    return load_rules_file(RULES_FILE, ENV)


def child(url: str, salt: str, holder: str, loop: bool) -> int:
    """One scheduler process: ready, then on 'go' one evaluation pass (or passes until everyone is evaluated)."""
    rules = revalidated(base_rules(), holdout_salt=salt)
    store = open_store(url)
    began = time.monotonic()  # the clock starts at the moment the orders were made for, and runs (leases expire)
    jobs = Jobs(store, _Fixed(rules), clock=lambda: AS_OF + timedelta(seconds=time.monotonic() - began),
                holder=holder)
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.time()
    customers = shards = 0
    while True:
        result = jobs.evaluate_once()
        if result is not None:
            customers += result.customers
            shards += result.shards
        if not loop:
            break
        print(json.dumps({"customers": customers, "at": time.time()}), flush=True)
        time.sleep(0.5)
    print(json.dumps({"start": started, "end": time.time(), "customers": customers, "shards": shards}), flush=True)
    jobs.leave()
    store.close()
    return 0


def _spawn(url: str, salt: str, holder: str, loop: bool = False) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "bench.scale_out", "--child", url, salt, holder] + (["--loop"] if loop else [])
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if (process.stdout.readline() if process.stdout else "").strip() != "ready":
        stop(process)
        raise RuntimeError(f"a scheduler process for {holder} did not start")
    return process


def trial(url: str, count: int, customers: int) -> Trial:
    salt = f"scale-out-{count}-{time.time_ns()}"
    children = [_spawn(url, salt, f"bench-{count}-{n}") for n in range(count)]
    for process in children:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    reports = []
    for process in children:
        out, _ = process.communicate(timeout=1800)
        reports.append(json.loads(out.strip().splitlines()[-1]))
    evaluated = sum(r["customers"] for r in reports)
    if evaluated != customers:
        raise RuntimeError(f"{count} processes evaluated {evaluated} customers, not each of {customers} once")
    seconds = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    return Trial(count, evaluated, seconds, evaluated / seconds, [r["shards"] for r in reports])


def takeover(url: str, customers: int) -> Takeover:
    salt = f"takeover-{time.time_ns()}"
    survivor, victim = (_spawn(url, salt, f"bench-takeover-{n}", loop=True) for n in range(2))
    store = open_store(url)
    started = time.monotonic()
    for process in (victim, survivor):
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    while "bench-takeover-1" not in store.leases("evaluate:", AS_OF).values():  # killed while it holds a shard
        if time.monotonic() - started > 60:
            raise RuntimeError("the process to kill never held a shard")
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    killed = time.monotonic()
    version = evaluation_version(revalidated(base_rules(), holdout_salt=salt), load_cutoffs(store))
    try:
        # everyone is evaluated once every shard's last run is under this trial's rules
        while not all((store.shard_state(s).version or "").startswith(version) for s in range(SHARDS)):
            if not (survivor.stdout.readline() if survivor.stdout else ""):
                raise RuntimeError("the surviving process stopped")
            if time.monotonic() - killed > 4 * EVALUATION_LEASE_SECONDS:
                raise RuntimeError("the killed process's shards were not taken over")
    finally:
        stop(survivor)
        store.close()
    return Takeover(killed - started, time.monotonic() - killed, EVALUATION_LEASE_SECONDS, customers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=3, metavar=("URL", "SALT", "HOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--loop", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--customers", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--latency-ms", type=float, default=5.0)
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--no-takeover", action="store_true")
    parser.add_argument("--server", choices=("dynalite", "moto"), default="dynalite")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.child:
        return child(*args.child, loop=args.loop)

    from bench.dynalite import Dynalite
    from bench.latency_proxy import proxied
    from tests.dynamo_server import CLIENT_ENV, REGION, DynamoServer
    from worker.store.dynamodb import DynamoConfig, create_tables

    os.environ.update(CLIENT_ENV)  # the children inherit the dummy credentials
    work = Path(tempfile.mkdtemp(prefix="bench-scale-out-"))
    csv_path = work / f"orders-{args.customers}.csv"
    generate(args.customers, csv_path, args.seed)
    orders = read_orders(csv_path)
    with (Dynalite() if args.server == "dynalite" else DynamoServer()) as server, \
            proxied(server.endpoint_url, args.latency_ms) as endpoint:
        config = DynamoConfig(REGION, endpoint, "scale_")
        create_tables(config)
        url = f"dynamodb://?region={REGION}&endpoint_url={endpoint}&table_prefix=scale_"
        store = open_store(url)
        print(f"importing {len(orders)} orders of {args.customers} customers ...", file=sys.stderr, flush=True)
        for start in range(0, len(orders), IMPORT_BATCH):
            store.upsert_orders(orders[start:start + IMPORT_BATCH], AS_OF)
        customers = evaluate_due(store, base_rules(), AS_OF).customers
        store.close()
        trials = []
        for count in (int(n) for n in args.processes.split(",")):
            print(f"{count} process(es) evaluating everyone ...", file=sys.stderr, flush=True)
            trials.append(trial(url, count, customers))
        taken = None if args.no_takeover else takeover(url, customers)
    one = trials[0].per_second
    print(f"\nEvaluation of {customers} customers on DynamoDB ({args.server}, +{args.latency_ms:g} ms a request), "
          f"{os.cpu_count()} CPUs")
    print("| processes | seconds | customers/s | vs 1 process | shards each |")
    print("| --- | --- | --- | --- | --- |")
    for t in trials:
        print(f"| {t.processes} | {t.seconds:.2f} | {t.per_second:.0f} | {t.per_second / one:.2f}x | "
              f"{', '.join(map(str, t.shards))} |")
    if taken is not None:
        print(f"\nkill -9 of one of two processes {taken.killed_after_seconds:.1f} s into a run: the other had "
              f"evaluated everyone {taken.everyone_after_seconds:.1f} s after the kill (lease TTL "
              f"{taken.lease_ttl_seconds:g} s)")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"scale-out-{args.customers}.json"
    out.write_text(json.dumps({"trials": [asdict(t) for t in trials],
                               "takeover": None if taken is None else asdict(taken)}, indent=2), encoding="utf-8")
    print(f"(written to {out}; load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
