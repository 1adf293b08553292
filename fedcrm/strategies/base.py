"""The strategy interface. Strategies only configure local training and turn what the
aggregator released into the next global model; the round loop in ``flows/training.py`` owns
rounds, evaluation and logging.

Two kinds, because secure aggregation reveals only a sum:

* ``SumStrategy`` (FedAvg, FedProx, FedAdam) needs only the example-weighted mean update,
  which comes out of one (secure) sum.
* ``RobustStrategy`` (median, trimmed mean) needs every region's update, so it runs only with a
  trusted, plain aggregator (the configuration refuses it under secure aggregation).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np


@dataclass(frozen=True)
class ClientUpdate:
    delta: np.ndarray
    """θ_region − θ_global, clipped in the region."""
    weight: float


class SumStrategy(Protocol):
    name: str
    prox_mu: float
    """FedProx proximal coefficient for local training (0 = none)."""
    needs_individual_updates: Literal[False]

    def apply(self, global_vector: np.ndarray, mean_delta: np.ndarray) -> np.ndarray:
        """The next global model from the example-weighted mean update."""
        ...


class RobustStrategy(Protocol):
    name: str
    prox_mu: float
    needs_individual_updates: Literal[True]

    def combine(self, global_vector: np.ndarray, updates: Mapping[str, ClientUpdate]) -> np.ndarray:
        """The next global model from each region's update (trusted aggregator only)."""
        ...


Strategy = SumStrategy | RobustStrategy


def clip_update(global_vector: np.ndarray, local_vector: np.ndarray, bound: float) -> np.ndarray:
    """Scale the update θ_local − θ_global down to L2 norm ≤ ``bound`` (region side)."""
    delta = local_vector - global_vector
    norm = float(np.linalg.norm(delta))
    return local_vector if norm <= bound else global_vector + delta * (bound / norm)


def strategy_state(strategy: Strategy) -> dict[str, np.ndarray]:
    """The server-side state a resumed job must carry on with (FedAdam's moments); {} if stateless."""
    state = getattr(strategy, "state", None)
    return dict(state()) if state is not None else {}


def restore_strategy_state(strategy: Strategy, state: dict[str, np.ndarray]) -> None:
    if state:
        strategy.load_state(state)
