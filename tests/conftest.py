"""Shared tiny fixtures (a small contract, raw CRM-like frames that satisfy it) and a real PostgreSQL."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # a down tracking server fails in seconds
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from fedcrm.contract import DataContract  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # `fakes`: local fakes of services that cannot run here

TINY_CONTRACT = {
    "use_case": "tiny",
    "id_column": "id",
    "target": {"column": "converted", "positive": "yes", "negative": "no"},
    "numeric": {
        "age": {"dtype": "int", "min": 18, "max": 100},
        "spend": {"dtype": "float", "min": 0, "on_missing": "impute"},
    },
    "categorical": {"channel": {"vocabulary": ["web", "phone", "store"]}},
    "drop": ["leak"],
    "min_rows": 20,
    "max_malformed_fraction": 0.1,
}


@pytest.fixture
def contract() -> DataContract:
    return DataContract.model_validate(TINY_CONTRACT)


def make_raw(n: int = 200, seed: int = 0, id_prefix: str = "c") -> pd.DataFrame:
    """Raw text cells, as a CSV export would give them; the label depends on age and channel."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 90, n)
    channel = rng.choice(["web", "phone", "store"], n)
    spend = rng.gamma(2.0, 50.0, n).round(2)
    logit = (age - 50) / 10 + np.where(channel == "web", 1.0, -0.5)
    converted = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    return pd.DataFrame(
        {
            "id": [f"{id_prefix}{i:05d}" for i in range(n)],
            "age": age.astype(str),
            "spend": spend.astype(str),
            "channel": channel,
            "leak": converted,
            "converted": converted,
        }
    )


@pytest.fixture
def raw() -> pd.DataFrame:
    return make_raw()


def _postgres_bindir() -> Path:
    """The PostgreSQL server binaries (Debian puts them under /usr/lib/postgresql/<major>/bin)."""
    found = shutil.which("pg_ctl")
    candidates = [Path(found).parent] if found else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    pytest.fail("PostgreSQL server binaries not found: install PostgreSQL (Debian: apt-get install postgresql)")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server on loopback for this test session, in a throwaway data directory.

    PostgreSQL refuses to run as root; as root the server runs as ``nobody``, from a directory of
    its own outside pytest's private (mode 0700) temporary tree.
    """
    bindir, root = _postgres_bindir(), Path(tempfile.mkdtemp(prefix="fedcrm-postgres-"))
    as_server_user: list[str] = []
    if os.geteuid() == 0:
        as_server_user = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        shutil.chown(root, "nobody", "nogroup")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = root / "data"

    def pg(*args: str) -> None:
        done = subprocess.run([*as_server_user, *args], capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            pytest.fail(f"PostgreSQL: {' '.join(args[:1])} failed: {done.stderr or done.stdout}")

    pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "fedcrm", "-E", "UTF8", "--no-sync")
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "start",
       "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100")
    try:
        yield f"postgresql+psycopg://fedcrm@127.0.0.1:{port}/postgres"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fresh_database(postgres_url) -> str:
    """A new, empty database on the session's server, so tests never see each other's rows."""
    import uuid

    import sqlalchemy as sa

    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"
