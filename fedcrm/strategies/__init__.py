"""Aggregation strategies, one per module, behind ``fedcrm.strategies.base.Strategy``."""

from __future__ import annotations

from fedcrm.config import StrategySpec
from fedcrm.strategies.base import ClientUpdate, RobustStrategy, Strategy, SumStrategy, clip_update
from fedcrm.strategies.fedadam import FedAdam
from fedcrm.strategies.fedavg import FedAvg
from fedcrm.strategies.fedprox import FedProx
from fedcrm.strategies.robust import CoordinateMedian, TrimmedMean


def make_strategy(spec: StrategySpec) -> Strategy:
    if spec.name == "fedavg":
        return FedAvg()
    if spec.name == "fedprox":
        return FedProx(prox_mu=spec.mu)
    if spec.name == "fedadam":
        return FedAdam(server_learning_rate=spec.server_learning_rate, beta1=spec.beta1, beta2=spec.beta2, tau=spec.tau)
    if spec.name == "median":
        return CoordinateMedian()
    return TrimmedMean(trim_fraction=spec.trim_fraction)


__all__ = ["ClientUpdate", "RobustStrategy", "Strategy", "SumStrategy", "clip_update", "make_strategy"]
