"""End-to-end helpers: run the real ``fedcrm`` CLI in a subprocess with its own Prefect home.

Each run starts Prefect's ephemeral API server (SQLite) under ``PREFECT_HOME``, exactly as a
user's first command does, so these tests exercise the real orchestration path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

E2E_TIMEOUT_S = 420


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(args: list[str], *, cwd: Path, prefect_home: Path) -> CliResult:
    env = {
        **os.environ,
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "COLUMNS": "200",
    }
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=E2E_TIMEOUT_S, check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def cli():
    return run_cli
