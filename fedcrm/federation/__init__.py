"""The federated job as a core object: its state, and what it decides between regional steps.

Prefect-free: `FederatedJob` runs the round loop over a `RegionTransport` port, which
`flows/transport.py` implements over the exchange; `flows/training.py` only wires the steps, and
`fedcrm.checkpoint.JobCheckpoint` is what a `JobState` serialises to after each round.
"""

from fedcrm.federation.job import FederatedJob, RegionTransport, SummedStep
from fedcrm.federation.state import JobState, ResumePoint, privacy_note

__all__ = ["FederatedJob", "JobState", "RegionTransport", "ResumePoint", "SummedStep", "privacy_note"]
