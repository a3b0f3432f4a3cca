"""Start-up errors of the serving commands (`api`, `serve`, `scheduler`), as an operator meets them: the real
process, a setting that cannot work, and one line that names the setting and the fix, exit code 2, no traceback,
and no port bound first."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import READ_KEY, RULES_YAML
from tests.server_process import ROOT, free_port

SERVING = ["api", "serve", "scheduler"]
TIMEOUT_SECONDS = 60
# No credentials anywhere botocore looks, and never the instance-metadata address: tests reach only 127.0.0.1.
NO_AWS = {"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent",
          "AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"}
AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_YAML, encoding="utf-8")
    env = {name: value for name, value in os.environ.items() if name not in AWS_VARIABLES}
    return {**env, **NO_AWS, "RULES_FILE": str(rules), "DATABASE_URL": f"sqlite:///{tmp_path}/segments.db",
            "API_KEYS": READ_KEY, "PORT": str(free_port()), "LOG_FORMAT": "text"}


def start(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker", command], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_SECONDS)


def assert_refused(result: subprocess.CompletedProcess, *words: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output and 'File "' not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, output
    for word in words:
        assert word in errors[0], output
    return errors[0]


# Every serving command goes through the same check before it starts (worker.cli Context.ready_to_serve): each
# case runs on all three where a command could differ (its store, its port), and on `api` alone otherwise.
@pytest.mark.parametrize("command", SERVING)
@pytest.mark.parametrize(("url", "words"), [
    ("postgres://db.example.com/segments", ("DATABASE_URL", "unsupported scheme 'postgres'", "sqlite:///")),
    ("sqlite://relative.db", ("DATABASE_URL", "expected sqlite:///path/to/file.db")),
    ("sqlite:////proc/no-such-folder/segments.db", ("DATABASE_URL", "cannot open the SQLite file")),
    ("dynamodb://?region=us-east-1&endpoint_url=http://127.0.0.1:9", ("DATABASE_URL is DynamoDB",
                                                                      "AWS_ACCESS_KEY_ID")),
], ids=["postgres", "sqlite-two-slashes", "sqlite-unwritable", "dynamodb-without-credentials"])
def test_an_unusable_database_url_is_one_line_and_exit_2(base_env, command, url, words):
    assert_refused(start(command, {**base_env, "DATABASE_URL": url}), *words)


@pytest.mark.parametrize("command", SERVING)
def test_dynamodb_without_tables_says_to_run_init_db(base_env, dynamodb_endpoint, command):
    url = f"dynamodb://?region=us-east-1&endpoint_url={dynamodb_endpoint}&table_prefix=never_made_"
    env = {**base_env, "DATABASE_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    assert_refused(start(command, env), "never_made_", "init-db")


@pytest.mark.parametrize("command", ["api", "scheduler"])
def test_a_refused_rules_file_stops_the_start_naming_file_and_line(base_env, tmp_path, command):
    broken = tmp_path / "broken.yaml"
    broken.write_text(RULES_YAML.replace("{gt: 90}", "{gtt: 90}"), encoding="utf-8")
    result = start(command, {**base_env, "RULES_FILE": str(broken)})
    assert_refused(result, "the rules were refused")
    assert "broken.yaml:" in result.stderr and "unknown operator 'gtt'" in result.stderr


@pytest.mark.parametrize("command", ["serve"])
def test_a_short_api_key_is_refused_without_repeating_it(base_env, command):
    error = assert_refused(start(command, {**base_env, "API_KEYS": "changeme"}), "API_KEYS", "at least 20")
    assert "changeme" not in error


@pytest.mark.parametrize("command", ["api", "serve"])
def test_a_port_in_use_is_one_line_naming_port(base_env, command):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_refused(start(command, {**base_env, "PORT": str(port)}), f":{port}", "in use", "PORT")


def test_a_missing_rules_file_says_how_to_get_one(base_env, tmp_path):
    result = start("api", {**base_env, "RULES_FILE": str(tmp_path / "missing.yaml")})
    assert_refused(result, "the rules were refused")
    assert "no such file" in result.stderr and "rules init" in result.stderr
