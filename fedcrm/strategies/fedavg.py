"""FedAvg (McMahan et al. 2017): the example-weighted mean of the regions' models."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedcrm.aggregation import Aggregator, weighted_mean
from fedcrm.strategies.base import ClientUpdate


@dataclass
class FedAvg:
    name: str = "fedavg"
    prox_mu: float = 0.0
    needs_individual_updates: bool = False

    def aggregate(self, global_vector: np.ndarray, updates: Mapping[str, ClientUpdate], aggregator: Aggregator) -> np.ndarray:
        return weighted_mean(aggregator, {r: u.vector for r, u in updates.items()}, {r: u.weight for r, u in updates.items()})
