"""PRV accountant (Gopi, Lee & Wutschitz 2021), a port of Opacus' analysis/prv and prv.py.

Each Poisson-subsampled Gaussian step is a privacy random variable; composition is the
convolution of their densities (FFT for self-composition). The returned ε is the *upper*
bound of the numerical estimate, so it is a guarantee, not an estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import integrate
from scipy.fft import irfft, rfft
from scipy.signal import convolve
from scipy.special import erfc

from fedcrm.privacy.rdp import rdp_epsilon

SQRT2 = np.sqrt(2)


class SubsampledGaussianPRV:
    """Propositions B1/B4 of Gopi et al. 2021."""

    def __init__(self, sample_rate: float, noise_multiplier: float):
        self.q = sample_rate
        self.sigma = noise_multiplier

    def pdf(self, t):
        q, sigma = self.q, self.sigma
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            z = np.log((np.exp(t) + q - 1) / q)
            value = (
                sigma * np.exp(-(sigma**2) * z**2 / 2 - 1 / (8 * sigma**2) + 2 * t)
                / (SQRT2 * np.sqrt(np.pi) * (np.exp(t) + q - 1) * ((np.exp(t) + q - 1) / q) ** 0.5)
            )
        return np.where(t > np.log(1 - q), value, 0.0)

    def cdf(self, t):
        q, sigma = self.q, self.sigma
        with np.errstate(divide="ignore"):  # q = 1 (no subsampling): log(1 − q) = −∞, which the branches handle
            return self._cdf(t, q, sigma)

    @staticmethod
    def _cdf(t, q, sigma):
        z = np.log(np.where(t > np.log(1 - q), (np.exp(t) + q - 1) / q, 1))
        return np.where(
            t > np.log(1 - q),
            -q * erfc((2 * z * sigma**2 - 1) / (2 * SQRT2 * sigma)) / 2
            - (1 - q) * erfc((2 * z * sigma**2 + 1) / (2 * SQRT2 * sigma)) / 2
            + 1.0,
            0.0,
        )


class _Truncated:
    def __init__(self, prv: SubsampledGaussianPRV, t_min: float, t_max: float):
        self.prv, self.t_min, self.t_max = prv, t_min, t_max
        self.mass = prv.cdf(t_max) - prv.cdf(t_min)

    def cdf(self, t):
        return np.where(
            t < self.t_min, 0.0, np.where(t < self.t_max, (self.prv.cdf(t) - self.prv.cdf(self.t_min)) / self.mass, 1.0)
        )

    def mean(self) -> float:
        lower, upper = int(np.log10(np.abs(self.t_min))), int(np.log10(self.t_max))
        points = np.concatenate(
            [[self.t_min], -np.logspace(lower, -5, num=10), [0], np.logspace(-5, upper, num=10), [self.t_max]]
        )
        mean = 0.0
        for left, right in zip(points[:-1], points[1:]):
            integral, _ = integrate.quad(self.cdf, left, right, limit=500)
            mean += right * self.cdf(right) - left * self.cdf(left) - integral
        return float(mean)


@dataclass(frozen=True)
class _Domain:
    t_min: float
    t_max: float
    size: int
    shifts: float = 0.0

    @classmethod
    def aligned(cls, t_min: float, t_max: float, dt: float) -> _Domain:
        t_min, t_max = np.floor(t_min / dt) * dt, np.ceil(t_max / dt) * dt
        size = int(np.round((t_max - t_min) / dt)) + 1
        if size % 2 == 1:
            size, t_max = size + 1, t_max + dt
        return cls(float(t_min), float(t_max), size)

    def shift_right(self, dt: float) -> _Domain:
        return _Domain(self.t_min + dt, self.t_max + dt, self.size, self.shifts + dt)

    @property
    def dt(self) -> float:
        return (self.t_max - self.t_min) / (self.size - 1)

    @property
    def ts(self) -> np.ndarray:
        return np.linspace(self.t_min, self.t_max, self.size)


@dataclass(frozen=True)
class _DiscretePRV:
    pmf: np.ndarray
    domain: _Domain

    def epsilon_upper(self, delta: float, delta_error: float, eps_error: float) -> float:
        if np.finfo(np.longdouble).eps * self.domain.size > delta - delta_error:
            raise ValueError("floating point errors dominate for such a small delta")
        t, p = self.domain.ts, self.pmf
        d1 = np.flip(np.flip(p).cumsum())
        d2 = np.flip(np.flip(p * np.exp(-t)).cumsum())
        ndelta = np.exp(t) * d2 - d1
        i = np.searchsorted(ndelta, -(delta - delta_error), side="left")
        if i <= 0:
            raise RuntimeError("cannot compute epsilon")
        return float(np.log((d1[i] - (delta - delta_error)) / d2[i]) + eps_error)


def _discretize(prv: _Truncated, domain: _Domain) -> _DiscretePRV:
    pmf = prv.cdf(domain.ts + domain.dt / 2) - prv.cdf(domain.ts - domain.dt / 2)
    shift = prv.mean() - float(np.dot(domain.ts, pmf))
    if abs(shift) >= domain.dt / 2:
        raise RuntimeError("discrete mean differs significantly from continuous mean")
    return _DiscretePRV(pmf, domain.shift_right(shift))


def _self_compose(dprv: _DiscretePRV, n: int) -> _DiscretePRV:
    pmf = irfft(rfft(dprv.pmf) ** n)
    m = n - 1 + (len(pmf) // 2 if n % 2 == 0 else 0)
    return _DiscretePRV(np.roll(pmf, m), dprv.domain.shift_right(dprv.domain.shifts * (n - 1)))


def prv_epsilon(events: Sequence[tuple[float, float, int]], delta: float, eps_error: float = 0.01) -> float:
    """Upper bound on ε after composing ``(noise_multiplier, sample_rate, steps)`` events."""
    events = [e for e in events if e[2] > 0]
    if not events:
        return 0.0
    delta_error = delta / 1000
    total = sum(steps for _, _, steps in events)
    bound = rdp_epsilon(events, delta_error / 4)
    for sigma, q, _ in events:
        bound = max(bound, rdp_epsilon([(sigma, q, 1)], delta_error / (8 * total)))
    half_width = max(bound, eps_error) + 3
    mesh = eps_error / np.sqrt(total * np.log(12 / delta_error) / 2)
    domain = _Domain.aligned(-half_width, half_width, mesh)
    composed = [
        _self_compose(_discretize(_Truncated(SubsampledGaussianPRV(q, sigma), domain.t_min, domain.t_max), domain), steps)
        for sigma, q, steps in events
    ]
    while len(composed) > 1:
        merged = [composed.pop()] if len(composed) % 2 == 1 else []
        for left, right in zip(composed[:-1:2], composed[1::2]):
            merged.append(_DiscretePRV(convolve(left.pmf, right.pmf, mode="same"), left.domain.shift_right(right.domain.shifts)))
        composed = merged
    return composed[0].epsilon_upper(delta, delta_error, eps_error)
