"""The benchmark suite runs end to end on a tiny data set, so it never rots. Timing targets are not asserted here:
`python -m bench --customers 100000` is the real run, by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.report import ERROR, SCENARIOS

REPO = Path(__file__).resolve().parent.parent


def test_tiny_bench_reports_every_scenario_in_table_and_json(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--customers", "300", "--quick", "--out", str(out),
         "--work-dir", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    header = next(line for line in done.stdout.splitlines() if line.startswith("scenario"))
    for column in ("figure", "baseline", "ratio", "target", "result"):
        assert column in header
    table_rows = {line.split()[0] for line in done.stdout.splitlines() if line and line.split()[0] in SCENARIOS}
    assert table_rows == set(SCENARIOS)

    [saved] = out.glob("bench-300-*.json")
    document = json.loads(saved.read_text(encoding="utf-8"))
    assert document["run"]["customers"] == 300
    assert set(document["scenarios"]) == set(SCENARIOS)
    for name, row in document["scenarios"].items():
        assert row["status"] != ERROR, f"{name}: {row['notes']}"
        assert row["figure"] is not None, name
        assert row["target"], name


def test_tiny_dynamodb_bench_runs_against_dynalite_beside_its_bare_boto3_floor(tmp_path: Path) -> None:
    """dynalite is installed from npm on first use (bench/.dynalite); the floor runs on the same server."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.dynamodb", "--customers", "40", "--backends", "dynamodb", "--out",
         str(tmp_path), "--work-dir", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert "x the bare boto3 floor" in done.stdout and "requests," in done.stdout and "customers (" in done.stdout
    [outcome] = json.loads((tmp_path / "dynamodb-40.json").read_text(encoding="utf-8"))
    assert outcome["backend"] == "DynamoDB (dynalite, 127.0.0.1)"
    for phase in ("import_", "evaluation", "unchanged", "floor_import", "floor_evaluation"):
        assert outcome[phase]["seconds"] > 0 and outcome[phase]["requests"], phase
    assert outcome["import_"]["write_units"] >= outcome["orders"]  # every order written at least once


def test_the_latency_proxy_delays_every_request_without_serializing_them() -> None:
    """bench/latency_proxy.py in front of a real HTTP server on 127.0.0.1: each request takes the delay more, the
    answer arrives intact, and requests in flight together are delayed together, not one after the other."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import requests

    from bench.latency_proxy import proxied

    class Echo(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with proxied(f"http://127.0.0.1:{server.server_address[1]}", 200) as url:
            with requests.Session() as session:
                session.post(url, data=b"warm-up", timeout=5)
                started = time.perf_counter()
                answer = session.post(url, data=b"x" * 100_000, timeout=5)
                alone = time.perf_counter() - started
            assert answer.content == b"x" * 100_000
            assert alone >= 0.2

            def one(n: int) -> float:
                begun = time.perf_counter()
                assert requests.post(url, data=str(n).encode(), timeout=5).content == str(n).encode()
                return time.perf_counter() - begun

            started = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                each = list(pool.map(one, range(4)))
            together = time.perf_counter() - started
            assert min(each) >= 0.2 and together < 0.2 * 2.5, (each, together)
    finally:
        server.shutdown()


def test_tiny_scale_out_bench_shares_one_evaluation_between_processes(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.scale_out", "--customers", "60", "--processes", "1,2", "--no-takeover",
         "--latency-ms", "1", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert "| processes | seconds | customers/s | vs 1 process | shards each |" in done.stdout
    trials = json.loads((tmp_path / "scale-out-60.json").read_text(encoding="utf-8"))["trials"]
    assert [t["processes"] for t in trials] == [1, 2]
    for t in trials:  # together the processes took every shard once and evaluated every customer once
        assert sum(t["shards"]) == 16 and t["customers"] == trials[0]["customers"] > 0
