"""Who masks with whom, and who holds shares of whose secrets.

Small federations use the complete graph (Bonawitz et al. 2017). Large ones use SecAgg+
(Bell et al. 2020): a random k-regular Harary graph, k = O(log n), so each party's work grows
with log n instead of n. The graph is derived from the job id and the list of parties, so every
party computes the same graph without trusting the coordinator to choose it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np



@dataclass(frozen=True)
class GraphParams:
    threshold_fraction: float = 2 / 3
    """Share of a party's group (its neighbours and itself) needed to reconstruct its secrets."""
    neighbours: int | None = None
    """k for SecAgg+; None = complete graph up to ``full_graph_max_parties``, else ≈ 3·log2(n)."""
    full_graph_max_parties: int = 100


def default_degree(n: int) -> int:
    k = 2 * math.ceil(1.5 * math.log2(max(n, 2)))
    return min(k, n - 1)


@dataclass(frozen=True)
class MaskingGraph:
    parties: tuple[str, ...]
    ring: tuple[str, ...]
    """Parties in the graph's random ring order; neighbours are the k/2 nearest on each side."""
    degree: int
    threshold: int

    @classmethod
    def build(cls, parties: list[str], job_id: str, params: GraphParams) -> MaskingGraph:
        ordered = tuple(sorted(parties))
        n = len(ordered)
        k = params.neighbours
        if k is None:
            k = n - 1 if n <= params.full_graph_max_parties else default_degree(n)
        k = max(0, min(k, n - 1))
        if k < n - 1 and k % 2:
            k = min(k + 1, n - 1)  # Harary graphs of odd degree need n even; round up instead
        ring = ordered
        if k < n - 1:
            digest = hashlib.sha256(f"fedcrm-secagg-graph|{job_id}|{','.join(ordered)}".encode()).digest()
            ring = tuple(ordered[i] for i in np.random.default_rng(int.from_bytes(digest[:8], "big")).permutation(n))
        group = k + 1  # threshold_fraction ≤ 1, so t ≤ group; at least 2 so one party alone never unmasks another
        threshold = min(group, max(2, math.ceil(params.threshold_fraction * group)))
        return cls(ordered, ring, k, threshold)

    @cached_property
    def _points(self) -> dict[str, int]:
        return {p: i + 1 for i, p in enumerate(self.parties)}

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.ring)}

    @property
    def complete(self) -> bool:
        return self.degree == len(self.parties) - 1

    def neighbours(self, party: str) -> frozenset[str]:
        if self.complete:
            return frozenset(self.parties) - {party}
        n, at = len(self.ring), self._positions[party]
        return frozenset(self.ring[(at + s) % n] for step in range(1, self.degree // 2 + 1) for s in (step, -step))

    def group(self, party: str) -> frozenset[str]:
        """Holders of shares of ``party``'s secrets: its neighbours and itself."""
        return self.neighbours(party) | {party}

    def index(self, party: str) -> int:
        """The party's Shamir evaluation point (1-based)."""
        return self._points[party]
