"""How regional contributions are combined: always as a *sum*.

Everything federated is phrased as a sum of vectors a region packs itself: feature moments
(count, Σx, Σx² per column) and model updates ([n·Δθ, n·loss, n], so FedAvg's weighted mean
comes from one sum and the weights travel inside it). The coordinator drives a sum through an
``Aggregator`` in three steps, identical for every implementation:

    requests = aggregator.open_round(round, participants, bounds)   # sent to the regions
    unmask   = aggregator.receive(contributions)                    # {} when nothing more is needed
    result   = aggregator.finish(replies_to_unmask)                 # AggregateResult

and a region answers with its ``Contributor``. ``PlainAggregator`` sums in the clear (a trusted
coordinator; needed by the robust strategies); ``fedcrm.secagg.SecureAggregator`` runs secure
aggregation, so the coordinator learns the sum and nothing about any single region. Which one
runs is configuration (``secure_aggregation.enabled``); callers never branch on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fedcrm.contract import DataContract
from fedcrm.errors import FederationError, SecureAggregationError

Screen = Callable[[np.ndarray], "str | None"]

LOSS_CAP = 100.0
"""Losses are reported capped, so a region's packed loss has a public bound."""


@dataclass(frozen=True)
class AggregateResult:
    total: np.ndarray
    contributors: list[str]
    dropped: dict[str, str]
    error_bound: np.ndarray
    """Largest possible |total − exact sum| per coordinate (fixed-point rounding; 0 in the clear)."""


class Aggregator(Protocol):
    """The coordinator's side of a federated sum (see the module docstring)."""

    setup_phases: tuple[str, ...]

    def setup_requests(self, phase: str, parties: list[str]) -> dict[str, Any]: ...

    def receive_setup(self, phase: str, replies: Mapping[str, Any]) -> dict[str, str]:
        """Absorb setup replies; returns the parties that failed, with reasons."""
        ...

    def open_round(
        self, round: int, participants: list[str], bounds: np.ndarray, screen: Screen | None = None
    ) -> dict[str, Any]:
        """Requests for the participants. ``screen`` checks single contributions where the aggregator can see them."""
        ...

    @property
    def excluded(self) -> dict[str, str]:
        """Parties that can no longer take part in this job, and why."""
        ...

    def receive(self, contributions: Mapping[str, Any]) -> dict[str, Any]:
        """Absorb contributions (None or a reason string for a region without one)."""
        ...

    def finish(self, replies: Mapping[str, Any]) -> AggregateResult: ...


class Contributor(Protocol):
    """A region's side of a federated sum."""

    def contribute(self, request: Any, round: int, vector: np.ndarray, bounds: np.ndarray) -> Any: ...

    def respond(self, request: Any) -> Any:
        """Answer a setup or unmask request."""
        ...


@dataclass
class PlainAggregator:
    """Sums in the clear: the coordinator sees every contribution (a *trusted* coordinator).

    Because it can, it screens each one (shape, finiteness, public bounds, ``screen``) and drops
    a bad one from the round with the reason.
    """

    setup_phases: tuple[str, ...] = ()
    _screen: Screen | None = field(default=None, repr=False)
    _bounds: np.ndarray | None = field(default=None, repr=False)
    _participants: list[str] = field(default_factory=list, repr=False)
    _accepted: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _dropped: dict[str, str] = field(default_factory=dict, repr=False)

    def setup_requests(self, phase: str, parties: list[str]) -> dict[str, Any]:
        return {}

    def receive_setup(self, phase: str, replies: Mapping[str, Any]) -> dict[str, str]:
        return {}

    @property
    def excluded(self) -> dict[str, str]:
        return {}

    def open_round(
        self, round: int, participants: list[str], bounds: np.ndarray, screen: Screen | None = None
    ) -> dict[str, Any]:
        self._bounds, self._participants, self._screen = np.asarray(bounds, dtype="float64"), list(participants), screen
        self._accepted, self._dropped = {}, {}
        return {p: None for p in participants}

    def receive(self, contributions: Mapping[str, Any]) -> dict[str, Any]:
        for party in self._participants:
            value = contributions.get(party)
            if value is None or isinstance(value, str):
                self._dropped[party] = value or "no contribution"
                continue
            vector = np.asarray(value, dtype="float64")
            reason = self._check(vector)
            if reason:
                self._dropped[party] = reason
            else:
                self._accepted[party] = vector
        return {}

    def _check(self, vector: np.ndarray) -> str | None:
        if vector.shape != self._bounds.shape:
            return f"contribution has shape {vector.shape}, expected {self._bounds.shape}"
        if not np.all(np.isfinite(vector)):
            return "contribution contains NaN/Inf"
        if np.any(np.abs(vector) > self._bounds * (1 + 1e-9)):
            return "contribution exceeds its public bounds"
        return self._screen(vector) if self._screen else None

    def finish(self, replies: Mapping[str, Any]) -> AggregateResult:
        if not self._accepted:
            raise FederationError("no region contributed to the aggregate", hint="check which regions were excluded and why")
        total = np.sum(np.stack(list(self._accepted.values())), axis=0)
        return AggregateResult(total, sorted(self._accepted), dict(self._dropped), np.zeros_like(total))

    def individual(self) -> dict[str, np.ndarray]:
        """The accepted contributions themselves (only a trusted coordinator can have them)."""
        return dict(self._accepted)


class PlainContributor:
    def contribute(self, request: Any, round: int, vector: np.ndarray, bounds: np.ndarray) -> np.ndarray:
        return np.asarray(vector, dtype="float64")

    def respond(self, request: Any) -> Any:
        raise SecureAggregationError("plain aggregation has no setup or unmask step")


class PlainSumAggregator:
    """In-process convenience (benchmarks, tests): the plain sum of a mapping of vectors."""

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


# --- what regions pack, and the public bounds on it ----------------------------------------------


def pack_update(delta: np.ndarray, n_examples: int, mean_loss: float) -> np.ndarray:
    """[n·Δθ, n·loss, n]: the sum over regions gives the weighted mean update, loss and total weight."""
    n = float(n_examples)
    loss = min(max(float(mean_loss), 0.0), LOSS_CAP) if np.isfinite(mean_loss) else LOSS_CAP
    return np.concatenate([np.asarray(delta, dtype="float64") * n, [n * loss, n]])


@dataclass(frozen=True)
class UpdateTotals:
    mean_delta: np.ndarray
    mean_loss: float
    total_weight: float


def unpack_update_sum(total: np.ndarray) -> UpdateTotals:
    weight = float(total[-1])
    if not np.isfinite(weight) or weight < 0.5:
        raise FederationError("total weight of the contributions is zero", hint="no region had training rows")
    return UpdateTotals(total[:-2] / weight, float(total[-2]) / weight, weight)


def update_bounds(dim: int, max_weight: float, max_update_norm: float) -> np.ndarray:
    """|n·Δθ_j| ≤ W·U (the L2 clip bounds every coordinate), n·loss ≤ W·cap, n ≤ W."""
    return np.concatenate([np.full(dim, max_weight * max_update_norm), [max_weight * LOSS_CAP, max_weight]])


def update_norm_screen(max_update_norm: float) -> Screen:
    """Plain mode's coordinator-side check that a region clipped its update."""

    def screen(packed: np.ndarray) -> str | None:
        n = packed[-1]
        if n < 0.5:
            return "update with no training examples"
        norm = float(np.linalg.norm(packed[:-2] / n))
        return f"update norm {norm:.3g} exceeds the bound {max_update_norm:g}" if norm > max_update_norm * (1 + 1e-6) else None

    return screen


def statistics_bounds(contract: DataContract, max_weight: float, noise_std: float = 0.0) -> np.ndarray:
    """Public bounds on a region's [count, Σx', Σx'²] per numeric column in normalised units.

    Each bounded value lies in [−1, 1] (``fedcrm.features.StatisticsScale``), so every statistic is
    at most the row count W; DP noise of standard deviation ``noise_std`` gets a margin of 12σ
    (exceeded with probability below 10⁻³²).
    """
    unbounded = [c for c, spec in contract.numeric.items() if spec.min is None or spec.max is None]
    if unbounded:
        raise SecureAggregationError(
            f"numeric column(s) {unbounded} have no declared min/max in the contract",
            hint="secure aggregation needs a public bound on every contribution: add min and max to those columns",
        )
    return np.full(3 * len(contract.numeric), float(max_weight) + 12.0 * noise_std)
