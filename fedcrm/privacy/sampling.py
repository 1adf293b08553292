"""Which records are in each DP-SGD step: Poisson subsampling, drawn in secret.

Amplification by subsampling (the accountant's sample rate q) assumes that nobody but the region
knows which records were in which batch. Each step therefore includes every record independently
with probability q, decided by ``SecureUniform`` (the ChaCha20 CSPRNG under a fresh OS key, the
same generator as the DP noise): two trainings with the same configuration draw different batches.

``SeededPoissonSampler`` reproduces the batches from a seed, for research only: with the seed
public (``training.seed`` is an MLflow param and a Prefect parameter), the batches are public and
the ε the accountant reports does not hold. It is only handed out together with that warning
(``fedcrm.privacy.randomness``).

Pure numpy + ``cryptography``: importable without torch.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from fedcrm.privacy.noise import SecureUniform


class BatchSampler(Protocol):
    secure: bool

    def poisson_mask(self, n: int, sample_rate: float) -> np.ndarray:
        """One step's membership: ``n`` booleans, each True with probability ``sample_rate``."""
        ...


class SecurePoissonSampler:
    """Poisson masks from the cryptographically secure generator (the default)."""

    secure = True

    def __init__(self, key: bytes | None = None):
        self._uniforms = SecureUniform(key)

    def poisson_mask(self, n: int, sample_rate: float) -> np.ndarray:
        return self._uniforms.uniform(n) < sample_rate


class SeededPoissonSampler:
    """Research mode: Poisson masks reproducible from a seed. The ε does NOT hold against anyone who knows it."""

    secure = False

    def __init__(self, seed: int):
        self._rng = np.random.default_rng([seed, 1])  # a stream apart from SeededGaussian(seed)

    def poisson_mask(self, n: int, sample_rate: float) -> np.ndarray:
        return self._rng.random(n) < sample_rate
