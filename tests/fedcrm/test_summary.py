"""The job summary's privacy note is typed: old summaries (with ``noise``) still read, and ε holds only when it should."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fedcrm.summary import PrivacyNote


def test_a_summary_written_before_privacy_randomness_still_reads() -> None:
    old = PrivacyNote.model_validate({"differential_privacy": True, "noise": "seeded", "epsilon_warning": "seeded noise"})
    assert old.randomness == "seeded" and not old.epsilon_holds
    both = PrivacyNote.model_validate({"noise": "seeded", "randomness": "secure"})
    assert both.randomness == "secure"  # the new name wins


def test_epsilon_holds_only_for_a_private_job_without_a_warning() -> None:
    assert PrivacyNote(differential_privacy=True, randomness="secure").epsilon_holds
    assert not PrivacyNote(differential_privacy=False).epsilon_holds
    assert not PrivacyNote(differential_privacy=True, epsilon_warning="the ε does NOT hold").epsilon_holds
    assert PrivacyNote().model_dump()["unit"] == "record"


def test_a_region_s_budget_and_residency_are_typed_and_stored_summaries_still_read() -> None:
    from fedcrm.summary import LifetimeBudget, RegionSummary, RunResidency

    stored = {"status": "included",
              "privacy_budget": {"population": "churn", "budget": 10.0, "spent": 3.4, "committed": 3.4, "open_jobs": [],
                                 "reserved": 0.0, "remaining": 6.6, "dashboard": "Privacy budget: 3.4/10.0 (66% remaining)",
                                 "job_epsilon": 3.4},
              "residency": {"region": "eu", "flow_run_id": "r1", "worker": None, "deployment": None, "host": "h",
                            "work_pool": "crm-eu", "launcher": "distributed", "verified": True, "rack": "b7"}}
    entry = RegionSummary.model_validate(stored)
    assert isinstance(entry.privacy_budget, LifetimeBudget) and entry.privacy_budget.remaining == 6.6
    assert isinstance(entry.residency, RunResidency) and entry.residency.work_pool == "crm-eu"
    dumped = entry.model_dump(mode="json")
    assert dumped["privacy_budget"] == stored["privacy_budget"]
    assert dumped["residency"] == stored["residency"]  # nothing a region's hello said is dropped ("rack")
    with pytest.raises(ValidationError):
        RegionSummary.model_validate({**stored, "privacy_budget": {"population": "churn", "spent": "a lot"}})
