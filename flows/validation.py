"""Validate every region's records against the contract (the first step of training, alone)."""

from __future__ import annotations

import uuid

from prefect import flow

from fedcrm.config import FedcrmConfig
from fedcrm.roster import Roster
from fedcrm.summary import RegionSummary
from fedcrm.validation import load_suite_dict
from flows.dispatch import in_each_region
from tasks import regional


@flow(name="fedcrm-validate", persist_result=False, log_prints=False)
def validate_federation(config: FedcrmConfig) -> dict[str, RegionSummary]:
    job_id = "validate-" + uuid.uuid4().hex[:8]
    contract = config.load_contract()
    roster = Roster(list(config.federation.regions))
    replies = in_each_region(
        regional.prepare_region, roster.active, config=config, job_id=job_id, suite=load_suite_dict(contract, config.expectations_dir),
        keep=False,
    )
    for region, reply in replies.items():
        entry = roster.regions[region]
        if not reply.ok:
            roster.exclude(region, "preparation", reply.reason)
            continue
        entry.validation, entry.n_train, entry.n_holdout = reply.value.report, reply.value.n_train, reply.value.n_holdout
        entry.n_quarantined, entry.suppressed = reply.value.report.n_quarantined, reply.value.suppressed
        if not reply.value.report.success:
            roster.exclude(region, "validation", reply.value.report.reason)
    return roster.regions
