"""A seeded sampler (or seeded noise) can only be obtained together with the warning that ε does not hold."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrm.config import load_config
from fedcrm.privacy.noise import SecureGaussian, SeededGaussian
from fedcrm.privacy.plan import make_plan
from fedcrm.privacy.randomness import EPSILON_DOES_NOT_HOLD, Randomness, job_randomness, randomness_warning
from fedcrm.privacy.sampling import SecurePoissonSampler, SeededPoissonSampler

seeds = st.integers(min_value=0, max_value=2**62)
noises = st.one_of(st.builds(SecureGaussian), st.builds(SeededGaussian, seeds))
samplers = st.one_of(st.builds(SecurePoissonSampler), st.builds(SeededPoissonSampler, seeds))


def _says_epsilon_does_not_hold(randomness: Randomness) -> bool:
    return randomness.warning is not None and EPSILON_DOES_NOT_HOLD in randomness.warning


@given(noise=noises, sampler=samplers)
@settings(max_examples=60, deadline=None)
def test_any_composition_warns_exactly_when_a_source_is_seeded(noise, sampler):
    randomness = Randomness(noise=noise, sampler=sampler)
    if not sampler.secure:
        assert _says_epsilon_does_not_hold(randomness) and "batch sampling" in randomness.warning
    if not noise.secure:
        assert _says_epsilon_does_not_hold(randomness) and "DP noise" in randomness.warning
    if sampler.secure and noise.secure:
        assert randomness.secure and randomness.warning is None  # no false alarm to get used to


@lru_cache
def _config(override: str):
    return load_config(overrides=[override])


@lru_cache
def _plan():
    return make_plan(1000, batch_size=100, local_epochs=1, rounds=2, target_epsilon=3, delta=1e-5, accountant="rdp",
                     max_grad_norm=1.0, max_noise_multiplier=50)


@given(mode=st.sampled_from(["secure", "seeded"]), seed=seeds, spelling=st.sampled_from(["randomness", "noise"]))
@settings(max_examples=40, deadline=None)
def test_the_job_factory_hands_out_a_seeded_sampler_only_with_the_warning(mode, seed, spelling):
    from fedcrm.regional import make_trainer

    trainer = make_trainer(_config(f"privacy.{spelling}={mode}"), _plan(), np.array([0.0, 1.0] * 10), seed=seed)
    randomness = trainer.randomness
    assert randomness.sampler.secure == (mode == "secure") == randomness.noise.secure
    assert (not randomness.sampler.secure) == _says_epsilon_does_not_hold(randomness)
    assert randomness.warning == job_randomness(mode, seed).warning == randomness_warning(mode)  # one wording
