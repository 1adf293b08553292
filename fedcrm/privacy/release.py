"""How a count that is not DP may leave a region: suppressed below k, else rounded down to a multiple of k.

Validation counts, row counts, quarantine counts, evaluation sizes and drift row counts are not
DP releases and are not charged to any ledger. They repeat across rounds and jobs, so an exact
value (``1 value(s) of 'Contract' are outside the vocabulary``, ``n_train = 1 203``) is a
fingerprint of single records. Every such count therefore passes through ``released_count``
before it leaves, with the public granularity k = ``privacy.min_k``:

* n < k  → ``None`` (shown as "fewer than k"): whether 0, 1 or k − 1 records are concerned stays in
  the region;
* n ≥ k  → ⌊n / k⌋ · k: adding or removing fewer than k records usually leaves the released value
  unchanged, and it never reveals the last digits of a table size.

This is a coarsening, not DP: it is the "aggregate over ≥ k" rule of docs/privacy.md applied to
the count itself. The exact values stay in the region's own report (its store). Pure, torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping

from fedcrm.errors import PrivacyError


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"the release granularity k must be ≥ 1, got {k}")


def released_count(n: int, k: int) -> int | None:
    """``n`` as it may leave the region: ``None`` below ``k``, else rounded down to a multiple of ``k``."""
    _check_k(k)
    n = int(n)
    if n < 0:
        raise ValueError(f"a count cannot be negative, got {n}")
    return None if n < k else (n // k) * k


def released_counts(counts: Mapping[str, int], k: int) -> dict[str, int | None]:
    return {name: released_count(value, k) for name, value in counts.items()}


def describe_count(n: int, k: int) -> str:
    """Text for a count in a message that leaves the region: "fewer than 5", or the range "40–44"."""
    released = released_count(n, k)
    return describe_released(released, k)


def describe_released(released: int | None, k: int) -> str:
    """Text for an already released count (``None`` is "fewer than k")."""
    _check_k(k)
    if released is None:
        return f"fewer than {k}"
    return str(released) if k == 1 else f"{released}–{released + k - 1}"


def released_rate(part: int | None, whole: int | None) -> float | None:
    """A percentage computed from released counts only (so it cannot undo their rounding)."""
    if part is None or not whole:
        return None
    return 100.0 * part / whole


def public_row_count(n: int, k: int) -> int:
    """The training-row count that may leave the region (rounded down to a multiple of k).

    The DP-SGD plan (q = batch / n, steps, σ) and the secure-aggregation weight are functions of it,
    not of the exact n, so they reveal no more than the released count."""
    public = released_count(n, k)
    if public is None:
        raise PrivacyError(f"fewer than privacy.min_k = {k} training rows", hint="the region is too small to take part")
    return public
