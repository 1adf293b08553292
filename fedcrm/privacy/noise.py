"""Where DP noise comes from.

``SecureUniform`` is the cryptographically secure generator every privacy-relevant random choice
draws from (this noise, and DP-SGD's Poisson batch masks in ``fedcrm.privacy.sampling``): the
ChaCha20 keystream under a fresh 256-bit key from the OS, turned into uniforms with 53 random
bits each. ``SecureGaussian`` (the default noise) turns them into Gaussians by Box–Muller. Each sample is the normalised sum of four such
Gaussians, the mitigation Opacus' ``secure_mode`` uses against floating-point attacks on
Gaussian sampling (Holohan & Braghin 2021, §5.1). Opacus' own secure mode needs ``torchcsprng``,
which cannot be installed here; this source plugs into Opacus' optimiser instead
(``fedcrm.training``).

``SeededGaussian`` is for research only: reproducible, and therefore *not* private against anyone
who knows the seed. It is only handed out with its warning (``fedcrm.privacy.randomness``).

Pure numpy + ``cryptography``: importable without torch.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

_TWO_PI = 2.0 * np.pi
_SUMMANDS = 4


class NoiseSource(Protocol):
    secure: bool

    def standard_normal(self, size: int) -> np.ndarray:
        """``size`` independent N(0, 1) samples (float64)."""
        ...


class SecureUniform:
    """Uniforms from the ChaCha20 keystream under a fresh OS key (or a given one, for tests)."""

    secure = True

    def __init__(self, key: bytes | None = None):
        self._stream = Cipher(algorithms.ChaCha20(key or os.urandom(32), bytes(16)), mode=None).encryptor()

    def uniform(self, size: int) -> np.ndarray:
        """Uniform on (0, 1): 53 keystream bits per sample, never exactly 0 or 1."""
        words = np.frombuffer(self._stream.update(bytes(8 * size)), dtype="<u8")
        return ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


class SecureGaussian(SecureUniform):
    """N(0, 1) from ``SecureUniform``: Box–Muller, four summands per sample."""

    secure = True

    def _box_muller(self, size: int) -> np.ndarray:
        pairs = (size + 1) // 2
        u1, u2 = self.uniform(pairs), self.uniform(pairs)
        radius = np.sqrt(-2.0 * np.log(u1))
        return np.concatenate([radius * np.cos(_TWO_PI * u2), radius * np.sin(_TWO_PI * u2)])[:size]

    def standard_normal(self, size: int) -> np.ndarray:
        return self._box_muller(_SUMMANDS * size).reshape(_SUMMANDS, size).sum(axis=0) / np.sqrt(_SUMMANDS)


class SeededGaussian:
    """Research mode: reproducible noise from a seed. NOT private against anyone who knows the seed."""

    secure = False

    def __init__(self, seed: int):
        self._rng = np.random.default_rng(seed)

    def standard_normal(self, size: int) -> np.ndarray:
        return self._rng.standard_normal(size)
