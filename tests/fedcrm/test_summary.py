"""The job summary's privacy note is typed: old summaries (with ``noise``) still read, and ε holds only when it should."""

from __future__ import annotations

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
