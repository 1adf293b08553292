"""Shamir t-of-n secret sharing of 32-byte secrets over the prime field GF(2^521 − 1).

Below the threshold, shares are uniformly distributed and say nothing about the secret. This
is the one construction ``cryptography`` does not provide; it uses only field arithmetic and
``secrets`` for the coefficients.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from fedcrm.errors import AggregationAbortedError

PRIME = 2**521 - 1  # a Mersenne prime, larger than any 32-byte secret
SHARE_BYTES = 66
SECRET_BYTES = 32


def split(secret: bytes, threshold: int, xs: list[int]) -> dict[int, bytes]:
    """Shares of ``secret`` at the points ``xs`` (distinct, non-zero); any ``threshold`` recover it."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"secrets are {SECRET_BYTES} bytes")
    if not 1 <= threshold <= len(xs) or len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError(f"need 1 ≤ threshold ({threshold}) ≤ distinct non-zero points ({len(xs)})")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = {}
    for x in xs:
        y = 0
        for c in reversed(coefficients):  # Horner
            y = (y * x + c) % PRIME
        shares[x] = y.to_bytes(SHARE_BYTES, "big")
    return shares


def combine(shares: Mapping[int, bytes], threshold: int) -> bytes:
    """The secret from at least ``threshold`` shares (Lagrange interpolation at 0)."""
    if len(shares) < threshold:
        raise AggregationAbortedError(
            f"{len(shares)} share(s) received, {threshold} needed to reconstruct a secret",
            hint="too many parties dropped out; the round is aborted and nothing is unmasked",
        )
    points = sorted(shares.items())[:threshold]
    xs = [x for x, _ in points]
    secret = 0
    for i, (x_i, y) in enumerate(points):
        numerator, denominator = 1, 1
        for j, x_j in enumerate(xs):
            if j != i:
                numerator = numerator * x_j % PRIME
                denominator = denominator * (x_j - x_i) % PRIME
        secret = (secret + int.from_bytes(y, "big") * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 2 ** (8 * SECRET_BYTES):
        raise AggregationAbortedError("reconstructed a value that is not a valid secret: inconsistent shares",
                                      hint="a party sent a corrupted share; the round is aborted")
    return secret.to_bytes(SECRET_BYTES, "big")
