"""The federated job as a core object: its state, and what it decides between regional steps.

Prefect-free: `flows/training.py` wires these decisions to the regional runs and the coordinator's
tasks, and `fedcrm.checkpoint.JobCheckpoint` is what a `JobState` serialises to after each round.
"""

from fedcrm.federation.state import JobState, ResumePoint, privacy_note

__all__ = ["JobState", "ResumePoint", "privacy_note"]
