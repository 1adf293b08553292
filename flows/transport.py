"""The `RegionTransport` port of the core's `FederatedJob` (fedcrm/federation/job.py), over the exchange.

Each step the round loop names is the Prefect task that regional runs answer (tasks/regional.py);
a sum goes through the job's aggregator (flows/aggregation.py: secure aggregation by default), and
a failed region is excluded from the roster with its reason, the quorum enforced at every step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedcrm.aggregation import Aggregator, Screen
from fedcrm.config import FedcrmConfig
from fedcrm.federation import SummedStep
from fedcrm.federation.job import FEATURE_STATISTICS, LOCAL_EVALUATION, LOCAL_TRAINING
from fedcrm.roster import Roster
from flows.aggregation import federated_sum
from flows.dispatch import RegionLinks, run_step
from tasks import regional

STEPS = {FEATURE_STATISTICS: regional.feature_statistics, LOCAL_TRAINING: regional.local_training,
         LOCAL_EVALUATION: regional.local_evaluation}


class ExchangeTransport:
    """The job's regional runs, reached through signed, encrypted requests on the exchange."""

    def __init__(self, config: FedcrmConfig, roster: Roster, links: RegionLinks, aggregator: Aggregator):
        self.config, self.roster, self.links, self.aggregator = config, roster, links, aggregator

    @property
    def transport_s(self) -> float:
        return self.links.transport_s

    def sum_step(self, step: str, label: str, *, round_number: int, bounds: np.ndarray, screen: Screen | None = None,
                 **arguments: Any) -> SummedStep:
        total, released, aggregation_s = federated_sum(
            self.config, self.roster, self.links, self.aggregator, round_number=round_number, step=label,
            regional_task=STEPS[step], bounds=bounds, screen=screen, **arguments)
        return SummedStep(total=total, released=released, aggregation_s=aggregation_s)

    def run_step(self, step: str, label: str, **arguments: Any) -> dict[str, Any]:
        return run_step(self.roster, self.links, label, STEPS[step], min_regions=self.config.federation.min_regions,
                        **arguments)
