"""FedAvg (McMahan et al. 2017): the example-weighted mean of the regions' models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass
class FedAvg:
    name: str = "fedavg"
    prox_mu: float = 0.0
    needs_individual_updates: Literal[False] = False

    def apply(self, global_vector: np.ndarray, mean_delta: np.ndarray) -> np.ndarray:
        return global_vector + mean_delta
