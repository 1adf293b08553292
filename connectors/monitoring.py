"""MLflow runs of monitoring checks (drift): PSI per region and feature, in the use case's experiment.

Explicit URIs only (no process-wide MLflow state). Errors become ``ConnectorError`` naming the
tracking URI without credentials.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from connectors.tracking import redact
from fedcrm.errors import ConnectorError


def metric_key(*parts: str) -> str:
    """An MLflow metric name from parts (characters MLflow refuses become '_')."""
    return ".".join(re.sub(r"[^A-Za-z0-9_\-. /]", "_", part) for part in parts)


def log_drift_run(tracking_uri: str, *, experiment: str, run_name: str, metrics: dict[str, float],
                  params: dict[str, str], tags: dict[str, str], artifact_root: Path | None = None) -> str:
    """Log one finished run (aggregates only) and return its id."""
    def log() -> str:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(
            experiment, artifact_location=artifact_root.resolve().as_uri() if artifact_root else None)
        run = client.create_run(experiment_id, run_name=run_name, tags=tags)
        now = int(time.time() * 1000)
        client.log_batch(run.info.run_id, params=[Param(key, value[:6000]) for key, value in params.items()],
                         tags=[RunTag("mlflow.runName", run_name)])
        values = [Metric(key, float(value), now, 0) for key, value in metrics.items()]
        for start in range(0, len(values), 1000):  # MLflow's limit per batch
            client.log_batch(run.info.run_id, metrics=values[start:start + 1000])
        client.set_terminated(run.info.run_id)
        return run.info.run_id

    try:
        return log()
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types; the caller gets one
        raise ConnectorError(f"could not record the drift check in MLflow ({type(exc).__name__})",
                             source=f"MLflow at {redact(tracking_uri)}",
                             hint="the drift result is in the flow's return value and log; check tracking.uri") from None
