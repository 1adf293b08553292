"""Process environment for embedded mode, set before Prefect/MLflow/GX are imported."""

from __future__ import annotations

import os
from pathlib import Path

QUIET_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # A tracking server that is down must fail in seconds, not after minutes of retries.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


STARTUP_TIMEOUT_SETTING = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
EMBEDDED_STARTUP_TIMEOUT_S = 180
"""How long the CLI lets Prefect's embedded server take to start (Prefect's own default, 20 s, is
too short on a loaded 2-core laptop: the server's first start migrates its SQLite database)."""


def prepare_environment(state_dir: Path, *, verbose: bool = False) -> None:
    """Embedded mode keeps Prefect's ephemeral database under the project's state directory.

    A user who points ``PREFECT_API_URL`` (or ``PREFECT_HOME``) elsewhere keeps that setting.
    The embedded server gets ``EMBEDDED_STARTUP_TIMEOUT_S`` to start unless the user set
    ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``.
    Unless ``verbose``, Prefect's console shows warnings only (the CLI draws its own progress);
    every log line still reaches the Prefect API and UI.
    """
    for key, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault(STARTUP_TIMEOUT_SETTING, str(EMBEDDED_STARTUP_TIMEOUT_S))  # the user's own value wins
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    if "PREFECT_API_URL" not in os.environ and "PREFECT_HOME" not in os.environ:
        home = (state_dir / "prefect").resolve()
        home.mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(home)
