"""The `RegionTransport` port of the core's `FederatedJob` (fedcrm/federation/job.py), over the exchange.

Each step is a request of fedcrm/protocol.py, which the regional runs answer with the task of
tasks/regional.py of the same name; a sum goes through the job's aggregator (flows/aggregation.py:
secure aggregation by default, set up once the regions have prepared and reserved), and a failed
region is excluded from the roster with its reason, the quorum enforced at every step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedcrm.aggregation import Aggregator, Screen
from fedcrm.config import FedcrmConfig
from fedcrm.errors import FederationError
from fedcrm.federation import SummedStep
from fedcrm.protocol import RegionReply, StepRequest
from fedcrm.roster import Roster
from flows.aggregation import federated_sum, set_up_aggregation
from flows.dispatch import RegionLinks, run_step


class ExchangeTransport:
    """The job's regional runs, reached through signed, encrypted requests on the exchange."""

    def __init__(self, config: FedcrmConfig, roster: Roster, links: RegionLinks):
        self.config, self.roster, self.links = config, roster, links
        self._aggregator: Aggregator | None = None

    @property
    def transport_s(self) -> float:
        return self.links.transport_s

    @property
    def aggregator(self) -> Aggregator:
        if self._aggregator is None:
            raise FederationError("no federated sum before the job's aggregation is set up",
                                  hint="a bug: the flow sets up aggregation after privacy planning")
        return self._aggregator

    def set_up_aggregation(self, session: str) -> None:
        """Create the job's aggregator and run its key setup among the active regions (secure aggregation)."""
        self._aggregator = set_up_aggregation(self.config, session, self.roster, self.links)

    def ask(self, step: type[StepRequest], regions: list[str], **arguments: Any) -> dict[str, RegionReply[Any]]:
        return self.links.ask(step, regions, **arguments)

    def sum_step(self, step: type[StepRequest], label: str, *, round_number: int, bounds: np.ndarray,
                 screen: Screen | None = None, **arguments: Any) -> SummedStep:
        total, released, aggregation_s = federated_sum(
            self.config, self.roster, self.links, self.aggregator, round_number=round_number, step=label,
            request=step, bounds=bounds, screen=screen, **arguments)
        return SummedStep(total=total, released=released, aggregation_s=aggregation_s)

    def run_step(self, step: type[StepRequest], label: str, **arguments: Any) -> dict[str, Any]:
        return run_step(self.roster, self.links, label, step, min_regions=self.config.federation.min_regions,
                        **arguments)
