"""The strategy interface. Strategies only configure local training and aggregate; the round
loop in ``flows/training.py`` owns rounds, evaluation and logging."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedcrm.aggregation import Aggregator


@dataclass(frozen=True)
class ClientUpdate:
    vector: np.ndarray
    weight: float


class Strategy(Protocol):
    name: str
    prox_mu: float
    """FedProx proximal coefficient for local training (0 = none)."""
    needs_individual_updates: bool
    """True for robust statistics (median, trimmed mean): incompatible with secure aggregation."""

    def aggregate(self, global_vector: np.ndarray, updates: Mapping[str, ClientUpdate], aggregator: Aggregator) -> np.ndarray: ...


def clip_update(global_vector: np.ndarray, local_vector: np.ndarray, bound: float) -> np.ndarray:
    """Scale the update θ_local − θ_global down to L2 norm ≤ ``bound`` (region side)."""
    delta = local_vector - global_vector
    norm = float(np.linalg.norm(delta))
    return local_vector if norm <= bound else global_vector + delta * (bound / norm)


def screen_updates(
    global_vector: np.ndarray, updates: Mapping[str, ClientUpdate], bound: float
) -> tuple[dict[str, ClientUpdate], dict[str, str]]:
    """Split updates into accepted ones and rejected ones with a reason (coordinator side).

    A non-finite update or one whose norm exceeds the bound (a region that did not clip) is
    dropped from the round, so it can never poison the global model.
    """
    accepted, rejected = {}, {}
    for region, update in updates.items():
        if update.vector.shape != global_vector.shape:
            rejected[region] = f"update has shape {update.vector.shape}, the model {global_vector.shape}"
        elif not np.all(np.isfinite(update.vector)) or not np.isfinite(update.weight) or update.weight <= 0:
            rejected[region] = "update contains NaN/Inf or a non-positive weight"
        elif (norm := float(np.linalg.norm(update.vector - global_vector))) > bound * (1 + 1e-6):
            rejected[region] = f"update norm {norm:.3g} exceeds the bound {bound:g}"
        else:
            accepted[region] = update
    return accepted, rejected
