"""The coordinator's checkpoint after each completed round: what a restarted coordinator needs to
go on with the same job, and nothing a region has not already released.

It holds the roster (counts, reasons, plans), the rounds so far, the agreed feature pipeline
(built from DP statistics), the global model and the server optimiser's state: all of it either
an aggregate or a function of DP releases. It is sealed in an ``Envelope`` signed by the
coordinator, so a checkpoint altered in the exchange is refused rather than resumed from.
"""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, Field

from fedcrm.config import JobSpec
from fedcrm.errors import FedcrmError
from fedcrm.features import FeaturePipeline
from fedcrm.messages import Vector
from fedcrm.summary import RegionSummary, ResumeRecord, RoundSummary

RESUME_SENSITIVE = ("use_case", "federation", "training", "strategy", "privacy", "features", "holdout", "baselines",
                    "secure_aggregation")
"""Configuration sections a resumed job must share with its first attempt (the rest, such as where
the state or the tracking server is, may differ between coordinators)."""


def resume_fingerprint(config: JobSpec) -> str:
    dumped = config.model_dump(mode="json")
    relevant = {section: dumped.get(section) for section in RESUME_SENSITIVE}
    for spec in relevant["federation"]["regions"].values():  # where things are may differ, not what is computed
        spec.pop("store", None)
        spec.pop("source", None)
    relevant["secure_aggregation"].pop("keyring", None)
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()


class JobCheckpoint(BaseModel):
    job_id: str
    attempt: int = Field(ge=1, description="The attempt that completed this round.")
    round: int = Field(ge=0, description="The last completed round (0: the features are agreed, no round yet).")
    started_at: str
    config_fingerprint: str
    regions: dict[str, RegionSummary]
    rounds: list[RoundSummary]
    pipeline: FeaturePipeline
    vector: Vector
    initial_vector: Vector
    strategy_state: dict[str, Vector] = Field(default_factory=dict)
    warned_small_aggregate: bool = False
    resumes: list[ResumeRecord] = Field(default_factory=list)

    def check_resumable(self, config: JobSpec) -> None:
        if self.config_fingerprint != resume_fingerprint(config):
            raise FedcrmError(
                f"job {self.job_id} was started with a different configuration than the one given to resume it",
                hint="resume with the job's own configuration (sections " + ", ".join(RESUME_SENSITIVE)
                     + " must match), or start a new job",
            )
