"""FedProx (Li et al. 2020): FedAvg aggregation, local training pulled towards the global model
by the proximal term μ/2·‖θ − θ_global‖², which tames client drift under non-IID data."""

from __future__ import annotations

from dataclasses import dataclass

from fedcrm.strategies.fedavg import FedAvg


@dataclass
class FedProx(FedAvg):
    name: str = "fedprox"
    prox_mu: float = 0.01
