"""The DP noise source: secure by default, Gaussian in distribution, seeded only on request."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from scipy import stats

from fedcrm.privacy.noise import SecureGaussian, SeededGaussian


def test_secure_samples_are_standard_normal():
    sample = SecureGaussian().standard_normal(200_000)
    assert stats.kstest(sample, "norm").pvalue > 1e-4
    assert abs(sample.mean()) < 0.01 and abs(sample.std() - 1) < 0.01
    # tails: about 0.27 % beyond 3σ, 6.3e-5 beyond 4σ
    assert np.mean(np.abs(sample) > 3) == pytest.approx(0.0027, rel=0.15)
    assert stats.normaltest(sample).pvalue > 1e-4


def test_secure_uniforms_are_uniform_and_never_0_or_1():
    u = SecureGaussian().uniform(200_000)
    assert u.min() > 0 and u.max() < 1
    assert stats.kstest(u, "uniform").pvalue > 1e-4


def test_every_secure_source_is_fresh_and_odd_sizes_work():
    a, b = SecureGaussian().standard_normal(1001), SecureGaussian().standard_normal(1001)
    assert a.shape == (1001,) and not np.allclose(a, b)
    source = SecureGaussian()
    assert not np.allclose(source.standard_normal(7), source.standard_normal(7))  # the stream moves on


def test_a_given_key_reproduces_its_stream():
    key = bytes(range(32))
    np.testing.assert_array_equal(SecureGaussian(key).standard_normal(100), SecureGaussian(key).standard_normal(100))


def test_seeded_noise_is_reproducible_and_marked_insecure():
    assert SeededGaussian(3).secure is False and SecureGaussian.secure is True
    np.testing.assert_array_equal(SeededGaussian(3).standard_normal(10), SeededGaussian(3).standard_normal(10))


def test_the_noise_source_imports_without_torch():
    import subprocess

    code = "import sys, fedcrm.privacy.noise, fedcrm.privacy.ledger; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_dp_sgd_draws_its_noise_from_the_source():
    from fedcrm.config import TrainingSpec
    from fedcrm.training import DPSGDTrainer

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    start = np.zeros(3 * 4 + 4 + 4 + 1)  # hidden [4]: 3·4 + 4, then 4 + 1

    from fedcrm.privacy.randomness import Randomness
    from fedcrm.privacy.sampling import SeededPoissonSampler

    def train(noise):  # the same (test-only, seeded) batches, so that only the noise can differ
        trainer = DPSGDTrainer(TrainingSpec(hidden_sizes=[4], learning_rate=0.1), noise_multiplier=1.0, max_grad_norm=1.0,
                               sample_rate=0.1, expected_batch_size=40, randomness=Randomness(noise=noise, sampler=SeededPoissonSampler(0)))
        return trainer.train(start, x, y, seed=5).vector

    np.testing.assert_array_equal(train(SeededGaussian(1)), train(SeededGaussian(1)))  # research mode: reproducible
    assert not np.allclose(train(SeededGaussian(1)), train(SeededGaussian(2)))
    assert not np.allclose(train(SecureGaussian()), train(SecureGaussian()))  # default: fresh every time


def test_make_trainer_uses_secure_noise_and_sampling_unless_research_mode_asks_for_seeded():
    from fedcrm.config import load_config
    from fedcrm.privacy.plan import make_plan
    from fedcrm.privacy.sampling import SecurePoissonSampler, SeededPoissonSampler
    from fedcrm.regional import make_trainer

    plan = make_plan(1000, batch_size=100, local_epochs=1, rounds=2, target_epsilon=3, delta=1e-5, accountant="rdp",
                     max_grad_norm=1.0, max_noise_multiplier=50)
    labels = np.array([0.0, 1.0] * 10)
    default = make_trainer(load_config(), plan, labels).randomness
    assert isinstance(default.noise, SecureGaussian) and isinstance(default.sampler, SecurePoissonSampler)
    assert default.warning is None
    for override in ("privacy.randomness=seeded", "privacy.noise=seeded"):  # privacy.noise: the old name
        seeded = make_trainer(load_config(overrides=[override]), plan, labels, seed=4).randomness
        assert isinstance(seeded.noise, SeededGaussian) and isinstance(seeded.sampler, SeededPoissonSampler)
        assert "does NOT hold" in seeded.warning
