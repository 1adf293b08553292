"""FedAdam (Reddi et al. 2021): the weighted mean update is a pseudo-gradient for a server-side
Adam optimiser. Its moments live in the strategy object for the job."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from fedcrm.aggregation import Aggregator, weighted_mean
from fedcrm.strategies.base import ClientUpdate


@dataclass
class FedAdam:
    server_learning_rate: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    name: str = "fedadam"
    prox_mu: float = 0.0
    needs_individual_updates: bool = False
    _m: np.ndarray | None = field(default=None, repr=False)
    _v: np.ndarray | None = field(default=None, repr=False)

    def aggregate(self, global_vector: np.ndarray, updates: Mapping[str, ClientUpdate], aggregator: Aggregator) -> np.ndarray:
        mean = weighted_mean(aggregator, {r: u.vector for r, u in updates.items()}, {r: u.weight for r, u in updates.items()})
        delta = mean - global_vector
        if self._m is None or self._v is None:
            self._m, self._v = np.zeros_like(delta), np.zeros_like(delta)
        self._m = self.beta1 * self._m + (1 - self.beta1) * delta
        self._v = self.beta2 * self._v + (1 - self.beta2) * delta * delta
        return global_vector + self.server_learning_rate * self._m / (np.sqrt(self._v) + self.tau)
