"""RDP of the Poisson-subsampled Gaussian mechanism (port of Opacus' analysis/rdp.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special

DEFAULT_ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))


def _log_add(logx: float, logy: float) -> float:
    a, b = min(logx, logy), max(logx, logy)
    if a == -np.inf:
        return b
    return math.log1p(math.exp(a - b)) + b


def _log_sub(logx: float, logy: float) -> float:
    if logx < logy:
        raise ValueError("The result of subtraction must be non-negative.")
    if logy == -np.inf:
        return logx
    if logx == logy:
        return -np.inf
    try:
        return math.log(math.expm1(logx - logy)) + logy
    except OverflowError:
        return logx


def _log_erfc(x: float) -> float:
    return math.log(2) + special.log_ndtr(-x * 2**0.5)


def _log_a_int(q: float, sigma: float, alpha: int) -> float:
    log_a = -np.inf
    for i in range(alpha + 1):
        log_coef = math.log(special.binom(alpha, i)) + i * math.log(q) + (alpha - i) * math.log(1 - q)
        log_a = _log_add(log_a, log_coef + (i * i - i) / (2 * sigma**2))
    return float(log_a)


def _log_a_frac(q: float, sigma: float, alpha: float) -> float:
    log_a0, log_a1 = -np.inf, -np.inf
    i = 0
    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    while True:
        coef = special.binom(alpha, i)
        log_coef = math.log(abs(coef))
        j = alpha - i
        log_t0 = log_coef + i * math.log(q) + j * math.log(1 - q)
        log_t1 = log_coef + j * math.log(q) + i * math.log(1 - q)
        log_e0 = math.log(0.5) + _log_erfc((i - z0) / (math.sqrt(2) * sigma))
        log_e1 = math.log(0.5) + _log_erfc((z0 - j) / (math.sqrt(2) * sigma))
        log_s0 = log_t0 + (i * i - i) / (2 * sigma**2) + log_e0
        log_s1 = log_t1 + (j * j - j) / (2 * sigma**2) + log_e1
        if coef > 0:
            log_a0, log_a1 = _log_add(log_a0, log_s0), _log_add(log_a1, log_s1)
        else:
            log_a0, log_a1 = _log_sub(log_a0, log_s0), _log_sub(log_a1, log_s1)
        i += 1
        if max(log_s0, log_s1) < -30:
            break
    return _log_add(log_a0, log_a1)


def rdp_single_step(q: float, sigma: float, alpha: float) -> float:
    """RDP at order ``alpha`` of one step with sampling rate ``q`` and noise multiplier ``sigma``."""
    if q == 0:
        return 0.0
    if sigma == 0:
        return np.inf
    if q == 1.0:
        return alpha / (2 * sigma**2)
    if np.isinf(alpha):
        return np.inf
    log_a = _log_a_int(q, sigma, int(alpha)) if float(alpha).is_integer() else _log_a_frac(q, sigma, alpha)
    return log_a / (alpha - 1)


def rdp_curve(events: Sequence[tuple[float, float, int]], orders: Sequence[float] = DEFAULT_ORDERS) -> np.ndarray:
    """Summed RDP over ``(noise_multiplier, sample_rate, steps)`` events at each order."""
    total = np.zeros(len(orders))
    for sigma, q, steps in events:
        total += np.array([rdp_single_step(q, sigma, a) for a in orders]) * steps
    return total


def rdp_to_epsilon(rdp: np.ndarray, orders: Sequence[float], delta: float) -> tuple[float, float]:
    """(ε, best order) via Balle et al. 2020, Theorem 21."""
    orders_vec = np.atleast_1d(np.asarray(orders, dtype=float))
    rdp_vec = np.atleast_1d(rdp)
    with np.errstate(invalid="ignore", divide="ignore"):
        eps = rdp_vec - (np.log(delta) + np.log(orders_vec)) / (orders_vec - 1) + np.log((orders_vec - 1) / orders_vec)
    if np.isnan(eps).all():
        return float("inf"), float("nan")
    best = int(np.nanargmin(eps))
    return float(eps[best]), float(orders_vec[best])


def rdp_epsilon(events: Sequence[tuple[float, float, int]], delta: float, orders: Sequence[float] = DEFAULT_ORDERS) -> float:
    if not events:
        return 0.0
    return rdp_to_epsilon(rdp_curve(events, orders), orders, delta)[0]
