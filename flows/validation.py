"""Validate every region's records against the contract (the first step of training, alone):

    start-regions → prepare-region (each region, nothing kept) → finish → anchor-audit
"""

from __future__ import annotations

import uuid

from prefect import flow

from connectors.exchange import open_exchange
from fedcrm import protocol
from fedcrm.config import FedcrmConfig
from fedcrm.federation.regions import record_preparation
from fedcrm.roster import Roster
from fedcrm.summary import RegionSummary
from fedcrm.validation import load_suite_dict
from flows.launch import finish_regions, start_regions


@flow(name="fedcrm-validate", persist_result=False, log_prints=False)
def validate_federation(config: FedcrmConfig) -> dict[str, RegionSummary]:
    config, job_id = config.with_deployment(), "validate-" + uuid.uuid4().hex[:8]
    contract = config.load_contract()
    roster = Roster(list(config.federation.regions))
    running = start_regions(config, open_exchange(config, job_id), roster, purpose="validate")
    try:
        replies = running.links.ask(
            protocol.PrepareRegion, roster.active, suite=load_suite_dict(contract, config.expectations_dir), keep=False,
        )
        record_preparation(roster, replies)
    finally:
        finish_regions(running)
    return roster.regions
