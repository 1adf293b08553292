"""How regional contributions are combined.

An ``Aggregator`` returns only the element-wise *sum* of the regions' vectors. Everything
federated is phrased as a sum (feature moments; FedAvg as Σ n_i·θ_i together with Σ n_i), so
a secure-aggregation implementation can replace ``PlainSumAggregator`` without the callers
noticing: the coordinator then learns the sum and nothing about any single region.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from fedcrm.errors import FederationError


class Aggregator(Protocol):
    def sum(self, contributions: Mapping[str, np.ndarray]) -> np.ndarray:
        """Element-wise sum of the contributions of the participating regions."""
        ...


class PlainSumAggregator:
    """Sums in the clear: the coordinator sees each vector (issue 4 replaces this with SecAgg)."""

    def sum(self, contributions: Mapping[str, np.ndarray]) -> np.ndarray:
        if not contributions:
            raise FederationError("no region contributed to the aggregate", hint="check which regions were excluded and why")
        shapes = {region: np.shape(v) for region, v in contributions.items()}
        if len(set(shapes.values())) != 1:
            raise FederationError(
                f"contributions have different shapes {shapes}",
                hint="all regions must run the same contract and model configuration",
            )
        bad = [region for region, v in contributions.items() if not np.all(np.isfinite(v))]
        if bad:
            raise FederationError(f"non-finite contribution from region(s) {bad}", hint="those regions must be excluded")
        return np.sum(np.stack([np.asarray(v, dtype="float64") for v in contributions.values()]), axis=0)


def weighted_mean(aggregator: Aggregator, vectors: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Σ w_i·v_i / Σ w_i, computed from one aggregated sum so weights stay inside the sum."""
    packed = {r: np.append(np.asarray(vectors[r], dtype="float64") * weights[r], weights[r]) for r in vectors}
    total = aggregator.sum(packed)
    if total[-1] <= 0:
        raise FederationError("total weight of the contributions is zero", hint="no region had training rows")
    return total[:-1] / total[-1]
