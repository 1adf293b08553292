"""DP-SGD's Poisson batch sampling: secret (CSPRNG) by default, seeded only in research mode."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from fedcrm.privacy.sampling import SecurePoissonSampler, SeededPoissonSampler


@pytest.mark.parametrize("q", [0.01, 0.25, 0.9])
def test_each_row_is_drawn_independently_at_the_sample_rate(q):
    sampler, n, steps = SecurePoissonSampler(), 1000, 200
    masks = np.stack([sampler.poisson_mask(n, q) for _ in range(steps)])
    # batch sizes are Binomial(n, q): a two-sided test on their total
    total = int(masks.sum())
    assert stats.binomtest(total, n * steps, q).pvalue > 1e-4
    # and no row is favoured: per-row counts are Binomial(steps, q)
    per_row = masks.sum(axis=0)
    assert per_row.max() <= stats.binom.ppf(1 - 1e-6 / n, steps, q)
    assert per_row.min() >= stats.binom.ppf(1e-6 / n, steps, q)


def test_two_secure_samplers_draw_different_memberships_and_the_stream_moves_on():
    a, b = SecurePoissonSampler(), SecurePoissonSampler()
    assert not np.array_equal(a.poisson_mask(500, 0.1), b.poisson_mask(500, 0.1))
    assert not np.array_equal(a.poisson_mask(500, 0.1), a.poisson_mask(500, 0.1))


def test_a_given_key_reproduces_its_masks():
    key = bytes(range(32))
    np.testing.assert_array_equal(SecurePoissonSampler(key).poisson_mask(300, 0.2),
                                  SecurePoissonSampler(key).poisson_mask(300, 0.2))


def test_seeded_masks_are_reproducible_and_marked_insecure():
    assert SeededPoissonSampler(3).secure is False and SecurePoissonSampler.secure is True
    np.testing.assert_array_equal(SeededPoissonSampler(3).poisson_mask(300, 0.2), SeededPoissonSampler(3).poisson_mask(300, 0.2))
    assert not np.array_equal(SeededPoissonSampler(3).poisson_mask(300, 0.2), SeededPoissonSampler(4).poisson_mask(300, 0.2))


def test_the_sampler_imports_without_torch():
    code = "import sys, fedcrm.privacy.sampling, fedcrm.privacy.randomness; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
