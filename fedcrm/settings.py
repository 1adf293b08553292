"""Settings read from the environment where a run executes: a region's own (`RegionSettings`) and an
installation's (`DeploymentSettings`).

The job's configuration (`FedcrmConfig`) is the coordinator's; a flow parameter, the same for every
region. Where a region's records and store are, where its scores go, which region a worker serves
and where its keyring is are the region's own decisions, set in its work pool's environment (job
variables) and never sent over the exchange. pydantic-settings reads them once, typed, when the
regional run starts (``flows/region.py``); they win over whatever the coordinator's configuration
says about that region.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RegionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FEDCRM_REGION_", extra="ignore", frozen=True, env_ignore_empty=True,
                                      use_attribute_docstrings=True)

    region: str | None = Field(None, validation_alias="FEDCRM_REGION")
    """``FEDCRM_REGION``: the one region this worker serves; it refuses to run another region's flow."""
    store: str | None = None
    """``FEDCRM_REGION_STORE``: the region's private store (a folder, or ``s3://…``), or ``secret:<block>``."""
    source: str | None = None
    """``FEDCRM_REGION_SOURCE``: a records file, a source spec such as ``{kind: sql, url: …, table: leads}``,
    or ``secret:<block>`` holding either."""
    scores: str | None = None
    """``FEDCRM_REGION_SCORES``: where batch scores go, e.g. ``{kind: salesforce, field: Lead_Score__c}``."""
    keyring: Path | None = Field(None, validation_alias="FEDCRM_KEYRING")
    """``FEDCRM_KEYRING``: the job's keyring of registered identity keys, as this region reads it."""


class DeploymentSettings(BaseSettings):
    """Where this installation's state and services are, read from the environment of the process that
    runs a coordinator-side command or flow (the CLI, the coordinator's work pool, a region's scoring run).

    They fill in what the configuration leaves unset and never override it (``FedcrmConfig.with_deployment``):
    the same job file then runs against a laptop's folders or a federation's servers, and a server URL
    that carries a credential (an MLflow backend, an S3 endpoint) stays in the worker's environment
    instead of a deployment's parameters, which Prefect stores and shows.
    """

    model_config = SettingsConfigDict(env_prefix="FEDCRM_", extra="ignore", frozen=True, env_ignore_empty=True,
                                      use_attribute_docstrings=True)

    state_dir: Path | None = None
    """``FEDCRM_STATE_DIR`` → ``state_dir``: embedded mode's folders, the coordinator's store, the default MLflow store."""
    tracking_uri: str | None = None
    """``FEDCRM_TRACKING_URI`` → ``tracking.uri``: the MLflow tracking server (or store) every version is registered in."""
    exchange_url: str | None = None
    """``FEDCRM_EXCHANGE_URL`` → ``exchange.url``: the exchange's folder or ``s3://bucket/prefix``."""
    exchange_endpoint_url: str | None = None
    """``FEDCRM_EXCHANGE_ENDPOINT_URL`` → ``exchange.endpoint_url``: the S3 API endpoint of an ``s3://`` exchange."""
    launcher_mode: Literal["embedded", "distributed"] | None = None
    """``FEDCRM_LAUNCHER_MODE`` → ``launcher.mode``: run the regions in-process, or as their work pools' deployments."""

    def values(self) -> dict[str, Any]:
        """The settings given, by the configuration key each fills in (``tracking.uri``, ...)."""
        given = self.model_dump(exclude_none=True)
        return {CONFIG_KEYS[name]: value for name, value in given.items()}


CONFIG_KEYS = {"state_dir": "state_dir", "tracking_uri": "tracking.uri", "exchange_url": "exchange.url",
               "exchange_endpoint_url": "exchange.endpoint_url", "launcher_mode": "launcher.mode"}
"""Each deployment setting's key in the configuration (``docs/reference/configuration.md``)."""
