"""A region's privacy plan and its job ledger: ε is planned for, and charged, cumulatively."""

from __future__ import annotations

import json

import pytest

from fedcrm.errors import PrivacyError
from fedcrm.privacy import PrivacyEvent, compose_epsilon
from fedcrm.privacy.plan import JobLedger, PrivacyPlan, make_plan

PLAN_DEFAULTS = dict(
    batch_size=100, local_epochs=2, rounds=5, target_epsilon=3.0, delta=1e-5, accountant="rdp",
    max_grad_norm=1.0, max_noise_multiplier=50.0,
)


def plan(n_train: int = 10_000, **overrides) -> PrivacyPlan:
    return make_plan(n_train, **(PLAN_DEFAULTS | overrides))


def test_plan_derives_rate_and_steps_from_the_record_count():
    p = plan(10_000, batch_size=100, local_epochs=2, rounds=5)

    assert p.sample_rate == pytest.approx(0.01)
    assert p.steps_per_round == 2 * 100
    assert p.planned_steps == 5 * 200
    assert (p.target_epsilon, p.delta, p.accountant, p.max_grad_norm) == (3.0, 1e-5, "rdp", 1.0)


def test_steps_per_epoch_follow_opacus_int_one_over_q():
    p = plan(10_000, batch_size=128, local_epochs=3, rounds=4)  # q = 0.0128, 1/q = 78.125

    assert p.sample_rate == pytest.approx(128 / 10_000)
    assert p.steps_per_round == 3 * 78
    assert p.planned_steps == 4 * 3 * 78


def test_batch_larger_than_the_region_samples_everything():
    p = plan(500, batch_size=1000, delta=1e-4, rounds=2, local_epochs=1)
    assert p.sample_rate == 1.0
    assert p.steps_per_round == 1 and p.planned_steps == 2


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_planned_epsilon_meets_the_target_tightly(accountant):
    p = plan(10_000, accountant=accountant, target_epsilon=2.0)
    events = [PrivacyEvent(noise_multiplier=p.noise_multiplier, sample_rate=p.sample_rate, steps=p.planned_steps)]

    assert 0 < p.planned_epsilon <= 2.0
    assert p.planned_epsilon == pytest.approx(compose_epsilon(events, p.delta, accountant))
    assert p.planned_epsilon > 2.0 - 0.05  # calibrated, not wastefully noisy


def test_more_planned_steps_need_more_noise():
    few, many = plan(10_000, rounds=2), plan(10_000, rounds=20)
    assert many.noise_multiplier > few.noise_multiplier


def test_delta_not_below_one_over_n_is_refused():
    with pytest.raises(PrivacyError) as info:
        plan(1000, delta=1e-3, region="eu")
    assert "1/n" in str(info.value) and "1/1000" in str(info.value)
    assert info.value.region == "eu"
    with pytest.raises(PrivacyError, match="1/n"):
        plan(1000, delta=2e-3)
    plan(1000, delta=9.9e-4)  # just below 1/n is fine


def test_unreachable_epsilon_names_the_record_count_and_a_hint():
    with pytest.raises(PrivacyError) as info:
        plan(40, batch_size=20, rounds=50, local_epochs=5, target_epsilon=0.05, delta=1e-3, max_noise_multiplier=5.0, region="apac")
    error = info.value
    assert "40 training records" in str(error)
    assert "noise multiplier above 5" in str(error)
    assert error.hint and "fewer rounds" in error.hint
    assert error.region == "apac"


# --- JobLedger ---------------------------------------------------------------------------------


def test_ledger_charges_cumulatively_not_per_round():
    ledger = JobLedger(plan=plan(10_000, rounds=3))
    per_round = ledger.plan.steps_per_round

    eps1 = ledger.charge(per_round)
    eps2 = ledger.charge(per_round)

    assert ledger.steps_taken == 2 * per_round
    assert eps2 > eps1 > 0
    one_shot = compose_epsilon(
        [PrivacyEvent(noise_multiplier=ledger.plan.noise_multiplier, sample_rate=ledger.plan.sample_rate, steps=2 * per_round)],
        ledger.plan.delta,
        "rdp",
    )
    assert eps2 == pytest.approx(one_shot, rel=1e-12)
    assert eps2 == pytest.approx(ledger.epsilon_spent(), rel=1e-12)
    assert eps2 < 2 * eps1  # composition is sub-additive: per-round ε summed would overstate it


def test_ledger_epsilon_reaches_the_planned_epsilon_after_all_rounds():
    ledger = JobLedger(plan=plan(10_000, rounds=3))
    for _ in range(3):
        ledger.check_round()
        spent = ledger.charge(ledger.plan.steps_per_round)
    assert spent == pytest.approx(ledger.plan.planned_epsilon, rel=1e-9)
    assert spent <= ledger.plan.target_epsilon


def test_fresh_ledger_has_spent_nothing():
    ledger = JobLedger(plan=plan())
    assert ledger.steps_taken == 0
    assert ledger.epsilon_spent() == 0.0


def test_check_round_refuses_once_the_plan_is_used_up():
    ledger = JobLedger(plan=plan(10_000, rounds=2))
    ledger.check_round()
    ledger.charge(ledger.plan.steps_per_round)
    ledger.check_round()
    ledger.charge(ledger.plan.steps_per_round)

    with pytest.raises(PrivacyError, match="used up") as info:
        ledger.check_round()
    assert f"{2 * ledger.plan.steps_per_round} of {ledger.plan.planned_steps}" in str(info.value)


def test_check_round_refuses_a_round_that_would_overshoot():
    ledger = JobLedger(plan=plan(10_000, rounds=2))
    ledger.charge(ledger.plan.steps_per_round + 1)  # one step too many in the first round
    with pytest.raises(PrivacyError):
        ledger.check_round()


def test_ledger_json_round_trip():
    ledger = JobLedger(plan=plan(10_000, rounds=4))
    ledger.charge(ledger.plan.steps_per_round)
    ledger.charge(ledger.plan.steps_per_round - 3)

    restored = JobLedger.model_validate(json.loads(json.dumps(ledger.model_dump())))

    assert restored == ledger
    assert restored.plan == ledger.plan
    assert restored.steps_taken == ledger.steps_taken
    assert restored.epsilon_spent() == pytest.approx(ledger.epsilon_spent(), rel=1e-12)
    restored.charge(restored.plan.steps_per_round)
    assert len(ledger.events) == 2  # restored is an independent copy
