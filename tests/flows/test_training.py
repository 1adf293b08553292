"""The job's privacy note: the ε it states, and the warning when that ε does not hold."""

from __future__ import annotations

from fedcrm.config import load_config
from flows.training import _privacy_note


def test_a_secure_job_states_its_epsilon_without_a_warning():
    note = _privacy_note(load_config(), "fedavg")
    assert note.randomness == "secure" and note.epsilon_warning is None
    assert "NOT" not in note.note and "ε ≤ 3" in note.note


def test_a_seeded_job_says_next_to_its_epsilon_that_it_does_not_hold():
    note = _privacy_note(load_config(overrides=["privacy.randomness=seeded"]), "fedavg")
    assert note.randomness == "seeded"
    assert "batch sampling" in str(note.epsilon_warning) and "does NOT hold" in str(note.epsilon_warning)
    assert note.note.startswith("WARNING: ") and "does NOT hold" in note.note
