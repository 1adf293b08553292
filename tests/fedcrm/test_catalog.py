"""The catalog names every key of a region's store; a finished job's workspace holds all its working copies."""

from __future__ import annotations

from datetime import datetime, timezone

from fedcrm.catalog import RegionCatalog


def test_a_job_s_working_copies_all_live_under_its_workspace() -> None:
    keys = RegionCatalog("churn").job("3f9c2a7b1d04")
    copies = [keys.train, keys.holdout, keys.prepared, keys.local_head, keys.local_only_result, keys.secure_aggregation(2)]
    assert all(key.startswith(keys.workspace + "/") for key in copies)  # `finish` deletes them in one remove


def test_what_outlives_a_job_is_outside_its_workspace() -> None:
    """Ledgers, the exact report, the quarantine and the drift snapshot are kept after the job ends."""
    keys = RegionCatalog("churn").job("j1")
    kept = [keys.ledger, keys.local_only_ledger, keys.validation_report, keys.quarantine, keys.drift_snapshot]
    assert not any(key.startswith(keys.workspace) for key in kept)
    assert len(set(kept)) == len(kept)


def test_keys_of_two_use_cases_or_two_jobs_never_collide() -> None:
    a, b, c = RegionCatalog("churn").job("j1"), RegionCatalog("lead-scoring").job("j1"), RegionCatalog("churn").job("j2")
    for left, right in ((a, b), (a, c)):
        assert {left.workspace, left.ledger, left.drift_snapshot}.isdisjoint({right.workspace, right.ledger, right.drift_snapshot})
    moment = datetime(2026, 12, 7, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert RegionCatalog("churn").scores(moment) != RegionCatalog("churn").scoring_failures(moment)
