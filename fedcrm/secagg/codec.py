"""Fixed-point encoding of real vectors into Z_(2^64), where masks cancel exactly.

Each coordinate j has a public bound B_j on every party's contribution; its scale is the power
of two s_j with n·B_j·s_j < 2^63, so the sum of n contributions never wraps and decodes as a
signed integer. Stochastic rounding keeps each encoding unbiased; a party's rounding error is
below 1/s_j, so the sum is within n/s_j of the exact sum (``error_bound``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedcrm.errors import SecureAggregationError

MODULUS_BITS = 64
_HEADROOM = float(2 ** (MODULUS_BITS - 1) - 2**20)  # keep clear of float rounding at the edge


@dataclass(frozen=True)
class FixedPointCodec:
    bounds: np.ndarray
    """Public bound on |x_j| of a single contribution, per coordinate."""
    n_parties: int

    def __post_init__(self) -> None:
        bounds = np.asarray(self.bounds, dtype="float64")
        if bounds.ndim != 1 or not np.all(np.isfinite(bounds)) or np.any(bounds <= 0):
            raise SecureAggregationError("fixed-point bounds must be positive and finite",
                                         hint="every coordinate needs a public bound on its contributions")
        if self.n_parties < 1:
            raise SecureAggregationError("a secure sum needs at least one party")
        object.__setattr__(self, "bounds", bounds)

    @property
    def scales(self) -> np.ndarray:
        raw = _HEADROOM / (self.n_parties * self.bounds)
        return np.exp2(np.floor(np.log2(raw)))

    @property
    def error_bound(self) -> np.ndarray:
        """Largest possible |decoded sum − exact sum| per coordinate."""
        return self.n_parties / self.scales

    def encode(self, vector: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        x = np.asarray(vector, dtype="float64")
        if x.shape != self.bounds.shape:
            raise SecureAggregationError(f"contribution has shape {x.shape}, the codec {self.bounds.shape}",
                                         hint="every party must contribute vectors of the agreed length")
        if not np.all(np.isfinite(x)):
            raise SecureAggregationError("contribution contains NaN/Inf", hint="the region must not contribute it")
        over = np.abs(x) > self.bounds * (1 + 1e-9)
        if over.any():
            raise SecureAggregationError(
                f"{int(over.sum())} coordinate(s) exceed their public bound",
                hint="contributions must be clipped before masking (update norm, weights, contract ranges)",
            )
        rng = rng or np.random.default_rng()
        scaled = np.clip(x, -self.bounds, self.bounds) * self.scales
        floor = np.floor(scaled)
        rounded = floor + (rng.random(x.shape) < (scaled - floor))
        return rounded.astype(np.int64).view(np.uint64)

    def decode(self, total: np.ndarray) -> np.ndarray:
        return np.asarray(total, dtype=np.uint64).view(np.int64).astype("float64") / self.scales
