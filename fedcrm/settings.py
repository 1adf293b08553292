"""What a region decides for itself, read inside the region: `RegionSettings`.

The job's configuration (`FedcrmConfig`) is the coordinator's; a flow parameter, the same for every
region. Where a region's records and store are, where its scores go, which region a worker serves
and where its keyring is are the region's own decisions, set in its work pool's environment (job
variables) and never sent over the exchange. pydantic-settings reads them once, typed, when the
regional run starts (``flows/region.py``); they win over whatever the coordinator's configuration
says about that region.
"""

from __future__ import annotations

from pathlib import Path

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
