"""FedAdam (Reddi et al. 2021): the weighted mean update is a pseudo-gradient for a server-side
Adam optimiser. Its moments live in the strategy object for the job."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np


@dataclass
class FedAdam:
    server_learning_rate: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    name: str = "fedadam"
    prox_mu: float = 0.0
    needs_individual_updates: Literal[False] = False
    _m: np.ndarray | None = field(default=None, repr=False)
    _v: np.ndarray | None = field(default=None, repr=False)

    def state(self) -> dict[str, np.ndarray]:
        """The moments, for the coordinator's checkpoint (a resumed job carries on with them)."""
        return {} if self._m is None or self._v is None else {"m": self._m, "v": self._v}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self._m, self._v = (np.asarray(state["m"]), np.asarray(state["v"])) if state else (None, None)

    def apply(self, global_vector: np.ndarray, mean_delta: np.ndarray) -> np.ndarray:
        delta = mean_delta
        if self._m is None or self._v is None:
            self._m, self._v = np.zeros_like(delta), np.zeros_like(delta)
        self._m = self.beta1 * self._m + (1 - self.beta1) * delta
        self._v = self.beta2 * self._v + (1 - self.beta2) * delta * delta
        return global_vector + self.server_learning_rate * self._m / (np.sqrt(self._v) + self.tau)
