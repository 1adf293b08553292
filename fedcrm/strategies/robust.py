"""Robust aggregation for a *trusted* aggregator: coordinate-wise median and trimmed mean.

Both need every region's individual update, so they cannot run under secure aggregation
(which reveals only the sum). They ignore example weights by design: one region cannot
dominate by claiming many examples.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fedcrm.strategies.base import ClientUpdate


@dataclass
class CoordinateMedian:
    name: str = "median"
    prox_mu: float = 0.0
    needs_individual_updates: Literal[True] = True

    def combine(self, global_vector: np.ndarray, updates: Mapping[str, ClientUpdate]) -> np.ndarray:
        return global_vector + np.median(np.stack([u.delta for u in updates.values()]), axis=0)


@dataclass
class TrimmedMean:
    """Drops the ``trim_fraction`` largest and smallest values of each coordinate, and at least one
    at each end whenever there are three or more regions (else 0.1 of 3 regions would trim nothing)."""

    trim_fraction: float = 0.1
    name: str = "trimmed_mean"
    prox_mu: float = 0.0
    needs_individual_updates: Literal[True] = True

    def combine(self, global_vector: np.ndarray, updates: Mapping[str, ClientUpdate]) -> np.ndarray:
        stacked = np.sort(np.stack([u.delta for u in updates.values()]), axis=0)
        k = int(np.floor(self.trim_fraction * len(stacked)))
        if self.trim_fraction > 0 and len(stacked) >= 3:
            k = max(k, 1)
        return global_vector + stacked[k : len(stacked) - k].mean(axis=0)
