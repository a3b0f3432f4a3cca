"""`pip install .` gives a `segment-worker` command that works from any folder: built from this checkout into a
fresh virtual environment (the test's only network is 127.0.0.1, so the build uses the setuptools and the runtime
dependencies of the test environment instead of downloading them), then run from an empty folder."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import READ_KEY
from tests.server_process import ROOT, free_port, running_server
from worker import __version__

INSTALL_SECONDS = 120


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `segment-worker` script of a new venv into which this checkout was pip-installed."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=INSTALL_SECONDS)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True,
                               check=True).stdout.strip())
    # The dependencies (and pip, setuptools) come from the test environment, after the new venv's own packages.
    (site / "test-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    build = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps",
                            "--no-build-isolation", "--disable-pip-version-check", str(ROOT)],
                           cwd=venv, capture_output=True, text=True, timeout=INSTALL_SECONDS)
    assert build.returncode == 0, build.stdout + build.stderr
    assert (site / "worker" / "cli.py").exists() and not (site / "worker" / "cli.py").is_symlink()
    return venv / "bin" / "segment-worker"


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """An empty folder far from the checkout: nothing there to import `worker` from by accident."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


def run(script: Path, folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "RULES_FILE",
                                                                                     "DATABASE_URL")}
    return subprocess.run([str(script), *args], cwd=folder, env={**environment, **env}, capture_output=True,
                          text=True, timeout=60)


def test_the_command_says_its_version_from_any_folder(installed, elsewhere):
    result = run(installed, elsewhere, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"segment-worker {__version__}\n"
    imported_from = run(installed.parent / "python", elsewhere, "-c", "import worker; print(worker.__file__)")
    assert str(ROOT) not in imported_from.stdout  # the installed copy, not this checkout


def test_rules_init_writes_the_shipped_rules_and_check_accepts_them(installed, elsewhere):
    result = run(installed, elsewhere, "rules", "init")
    assert result.returncode == 0, result.stderr
    assert (elsewhere / "rules.yaml").read_bytes() == (ROOT / "rules.yaml").read_bytes()
    checked = run(installed, elsewhere, "rules", "check")
    assert checked.returncode == 0 and "rules.yaml: ok" in checked.stdout, checked.stderr
    again = run(installed, elsewhere, "rules", "init")
    assert again.returncode == 1 and "exists already" in again.stderr


def test_a_folder_without_rules_gets_told_how_to_make_them(installed, elsewhere):
    result = run(installed, elsewhere, "rules", "check")
    assert result.returncode == 1
    assert "rules.yaml: no such file" in result.stderr and "segment-worker rules init" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def served(installed: Path, elsewhere: Path) -> Iterator[str]:
    run(installed, elsewhere, "rules", "init")
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PORT": str(port), "API_KEYS": READ_KEY,
           "DATABASE_URL": "sqlite:///data/segments.db", "RULES_FILE": str(elsewhere / "rules.yaml")}
    with running_server([str(installed), "api", "--host", "127.0.0.1"], env, elsewhere / "server.log", port,
                        cwd=elsewhere) as base:
        yield base


def test_the_installed_server_serves_the_dashboard_with_its_templates_and_styles(served, elsewhere):
    page = requests.get(f"{served}/", timeout=10)
    assert page.status_code == 200 and "Sign in" in page.text, page.text[:300]
    assert requests.get(f"{served}/static/dashboard.css", timeout=10).status_code == 200
    assert (elsewhere / "data" / "segments.db").exists()  # relative to where it runs, not to the checkout


def test_the_installed_demo_runs_in_an_empty_folder_on_the_shipped_rules(installed, elsewhere):
    result = run(installed, elsewhere, "demo", "--no-serve", "--customers", "50")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the demo uses the shipped rules" in result.stdout
    assert "DATABASE_URL=sqlite:///data/demo.db" in result.stdout
    assert (elsewhere / "data" / "demo.db").exists() and not (elsewhere / "rules.yaml").exists()
