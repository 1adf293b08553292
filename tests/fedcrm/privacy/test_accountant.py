"""The torch-free accountants agree with Opacus, and calibrated noise never overspends."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcrm.errors import PrivacyError
from fedcrm.privacy import PrivacyEvent, calibrate_noise_multiplier, check_delta, compose_epsilon


def _event(sigma: float, q: float, steps: int) -> PrivacyEvent:
    return PrivacyEvent(noise_multiplier=sigma, sample_rate=q, steps=steps)


def test_privacy_maths_imports_without_torch():
    code = "import sys, fedcrm.privacy; fedcrm.privacy.compose_epsilon([], 1e-5); assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(("sigma", "q", "steps"), [(1.0, 256 / 50000, 196), (0.8, 0.01, 1000), (2.0, 0.05, 300), (1.3, 0.002, 5000)])
@pytest.mark.parametrize("name", ["prv", "rdp"])
def test_matches_opacus_reference(name, sigma, q, steps):
    from opacus.accountants import PRVAccountant, RDPAccountant

    reference = {"prv": PRVAccountant, "rdp": RDPAccountant}[name]()
    reference.history = [(sigma, q, steps)]
    expected = reference.get_epsilon(delta=1e-5)
    assert compose_epsilon([_event(sigma, q, steps)], 1e-5, name) == pytest.approx(expected, rel=1e-9)


def test_known_value_from_the_stack_probe():
    # σ=1.0, q=256/50000, 196 steps, δ=1e-5: Opacus gives PRV 0.458 and RDP 0.975.
    assert compose_epsilon([_event(1.0, 256 / 50000, 196)], 1e-5, "prv") == pytest.approx(0.458, abs=1e-3)
    assert compose_epsilon([_event(1.0, 256 / 50000, 196)], 1e-5, "rdp") == pytest.approx(0.975, abs=1e-3)


def test_prv_is_tighter_than_rdp():
    events = [_event(1.0, 0.01, 2000)]
    assert compose_epsilon(events, 1e-5, "prv") < compose_epsilon(events, 1e-5, "rdp")


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 400), st.integers(1, 400), st.floats(0.6, 3.0), st.floats(0.001, 0.1))
def test_rounds_compose_like_one_long_run(a, b, sigma, q):
    """Per-round events composed = the whole run: ε is cumulative, never per round."""
    split = compose_epsilon([_event(sigma, q, a), _event(sigma, q, b)], 1e-5, "rdp")
    whole = compose_epsilon([_event(sigma, q, a + b)], 1e-5, "rdp")
    assert split == pytest.approx(whole, rel=1e-12)
    assert compose_epsilon([_event(sigma, q, a)], 1e-5, "rdp") <= whole


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    target=st.floats(0.5, 10.0),
    q=st.floats(0.002, 0.1),
    steps=st.integers(10, 3000),
    accountant=st.sampled_from(["rdp", "prv"]),
)
def test_calibrated_noise_never_exceeds_the_target(target, q, steps, accountant):
    sigma = calibrate_noise_multiplier(
        target_epsilon=target, delta=1e-5, sample_rate=q, steps=steps, accountant=accountant, max_noise_multiplier=1e4
    )
    spent = compose_epsilon([_event(sigma, q, steps)], 1e-5, accountant)
    assert spent <= target
    # and it is not wastefully noisy: 10% less noise would overspend (or the noise is already minimal)
    if sigma > 0.05:
        assert compose_epsilon([_event(sigma * 0.9, q, steps)], 1e-5, accountant) > spent


def test_unreachable_target_is_refused_clearly():
    with pytest.raises(PrivacyError) as info:
        calibrate_noise_multiplier(target_epsilon=0.01, delta=1e-5, sample_rate=1.0, steps=10_000, accountant="rdp")
    assert "noise multiplier above" in str(info.value) and "fewer rounds" in str(info.value)


def test_delta_must_be_below_one_over_n():
    check_delta(1e-5, 1000)
    with pytest.raises(PrivacyError) as info:
        check_delta(1e-3, 1000, region="eu")
    assert "1/n = 1/1000" in str(info.value) and "eu" in str(info.value)
    with pytest.raises(PrivacyError):
        check_delta(1e-5, 0)
