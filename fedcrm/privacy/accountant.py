"""Privacy events, their composition, and noise calibration for a planned job."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fedcrm.errors import PrivacyError
from fedcrm.privacy.prv import prv_epsilon
from fedcrm.privacy.rdp import rdp_epsilon

AccountantName = Literal["prv", "rdp"]
ACCOUNTANTS: dict[str, Callable[[Sequence[tuple[float, float, int]], float], float]] = {
    "prv": prv_epsilon,
    "rdp": rdp_epsilon,
}
MAX_NOISE_MULTIPLIER = 1e4


class PrivacyEvent(BaseModel):
    """``steps`` applications of the Poisson-subsampled Gaussian mechanism (one DP-SGD step each)."""

    model_config = ConfigDict(frozen=True)
    noise_multiplier: float = Field(gt=0)
    sample_rate: float = Field(gt=0, le=1)
    steps: int = Field(ge=0)

    def as_tuple(self) -> tuple[float, float, int]:
        return (self.noise_multiplier, self.sample_rate, self.steps)


def compose_epsilon(events: Sequence[PrivacyEvent], delta: float, accountant: AccountantName = "prv") -> float:
    """ε of all events together at δ: composed by the accountant, never summed per round."""
    merged: dict[tuple[float, float], int] = {}
    for event in events:
        key = (event.noise_multiplier, event.sample_rate)
        merged[key] = merged.get(key, 0) + event.steps
    return ACCOUNTANTS[accountant]([(s, q, n) for (s, q), n in merged.items() if n > 0], delta)


def check_delta(delta: float, n_records: int, *, region: str | None = None) -> None:
    """δ must be below 1/n, otherwise a mechanism could publish one record outright."""
    if n_records <= 0 or delta >= 1.0 / n_records:
        raise PrivacyError(
            f"δ = {delta:g} is not below 1/n = 1/{n_records} for this region's training records",
            hint="lower privacy.delta (a common choice is below 1/(10·n)), or the region needs more records",
            region=region,
        )


def calibrate_noise_multiplier(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: AccountantName = "prv",
    max_noise_multiplier: float = 50.0,
    tolerance: float = 0.01,
) -> float:
    """The smallest noise multiplier (within ``tolerance`` in ε) whose total ε over ``steps`` ≤ target.

    The returned σ is always on the safe side: its composed ε never exceeds ``target_epsilon``.
    """
    if target_epsilon <= 0 or steps <= 0:
        raise PrivacyError("target ε and the planned number of steps must be positive", hint="check privacy.target_epsilon and training")

    def epsilon(sigma: float) -> float:
        return compose_epsilon([PrivacyEvent(noise_multiplier=sigma, sample_rate=sample_rate, steps=steps)], delta, accountant)

    low, high = 0.0, 1.0
    eps_high = epsilon(high)
    while eps_high > target_epsilon:
        low, high = high, high * 2
        if high > max_noise_multiplier:
            raise PrivacyError(
                f"reaching ε = {target_epsilon:g} over {steps} steps at sample rate {sample_rate:.4g} needs a noise "
                f"multiplier above {max_noise_multiplier:g}, which would leave no signal",
                hint="plan fewer rounds or local epochs, use a larger batch on more records, or raise privacy.target_epsilon",
            )
        eps_high = epsilon(high)
    while target_epsilon - eps_high > tolerance and high - low > 1e-4:
        mid = (low + high) / 2
        eps_mid = epsilon(mid)
        if eps_mid <= target_epsilon:
            high, eps_high = mid, eps_mid
        else:
            low = mid
    if not math.isfinite(eps_high) or eps_high > target_epsilon:  # pragma: no cover - guarded by the loop
        raise PrivacyError("noise calibration failed", hint="report this as a bug")
    return high
