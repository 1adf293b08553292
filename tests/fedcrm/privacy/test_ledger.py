"""The lifetime ledger: reservations, spends, closing, composition and refusal."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrm.errors import PrivacyError
from fedcrm.privacy.accountant import PrivacyEvent, compose_epsilon
from fedcrm.privacy.ledger import BudgetExceededError, PlannedSpend, PrivacyLedger

T0 = datetime(2026, 11, 23, tzinfo=timezone.utc)
TRAIN = PrivacyEvent(noise_multiplier=1.2, sample_rate=0.1, steps=50)


def ledger(budget: float = 10.0, accountant: str = "rdp") -> PrivacyLedger:
    return PrivacyLedger(population="customers", budget_epsilon=budget, delta=1e-5, accountant=accountant)


def plan(event: PrivacyEvent = TRAIN, purpose: str = "federated training") -> list[PlannedSpend]:
    return [PlannedSpend(purpose=purpose, event=event)]


def run_job(book: PrivacyLedger, job: str, event: PrivacyEvent = TRAIN, rounds: int = 5, use_case: str = "churn") -> None:
    book.reserve(job, use_case, plan(event), T0)
    per_round = event.model_copy(update={"steps": event.steps // rounds})
    for _ in range(rounds):
        book.spend(job, use_case, "federated training", per_round, T0)
    book.close(job, T0)


def test_a_reservation_holds_budget_until_closed_and_spends_stay():
    book = ledger()
    book.reserve("j1", "churn", plan(), T0)
    held = book.status()
    assert held.spent == 0 and held.committed == pytest.approx(compose_epsilon([TRAIN], 1e-5, "rdp")) and held.open_jobs == ["j1"]

    book.spend("j1", "churn", "federated training", TRAIN.model_copy(update={"steps": 20}), T0)
    book.close("j1", T0)

    done = book.status()
    expected = compose_epsilon([TRAIN.model_copy(update={"steps": 20})], 1e-5, "rdp")
    assert done.spent == pytest.approx(expected) and done.committed == pytest.approx(expected) and done.open_jobs == []


def test_a_job_that_does_not_fit_is_refused_with_the_numbers():
    book = ledger(budget=5.0)  # one job (ε ≈ 4.17) fits, two (ε ≈ 5.66 composed) do not
    run_job(book, "j1")
    spent = book.status().spent
    with pytest.raises(BudgetExceededError) as refused:
        book.reserve("j2", "churn", plan(), T0, region="eu")
    err = refused.value
    assert err.spent == pytest.approx(spent) and err.remaining == pytest.approx(5.0 - spent)
    assert err.required == pytest.approx(compose_epsilon([TRAIN], 1e-5, "rdp"))
    text = str(err)
    for number in (f"{spent:.2f}", f"{5.0 - spent:.2f}", f"{err.required:.2f}", "5.00"):
        assert number in text
    assert "training.rounds" in text and "target_epsilon" in text and "[region eu]" in text
    assert not book.is_open("j2")


def test_open_reservations_of_other_jobs_count_against_a_new_one():
    book = ledger(budget=compose_epsilon([TRAIN], 1e-5, "rdp") * 1.2)
    book.reserve("running", "churn", plan(), T0)
    with pytest.raises(BudgetExceededError, match="reserved by running jobs"):
        book.reserve("second", "lead-scoring", plan(), T0)


def test_spending_more_than_reserved_is_refused():
    book = ledger()
    book.reserve("j1", "churn", plan(), T0)
    book.spend("j1", "churn", "federated training", TRAIN.model_copy(update={"steps": 50}), T0)
    with pytest.raises(PrivacyError, match="no reservation left"):
        book.spend("j1", "churn", "federated training", TRAIN.model_copy(update={"steps": 1}), T0)
    with pytest.raises(PrivacyError, match="no reservation left"):
        book.spend("nobody", "churn", "federated training", TRAIN, T0)


def test_a_resumed_job_does_not_reserve_twice():
    book = ledger()
    first = book.reserve("j1", "churn", plan(), T0)
    again = book.reserve("j1", "churn", plan(), T0)
    assert again is first and sum(e.kind == "reserve" for e in book.entries) == 1


def test_a_stale_reservation_is_reconciled_to_what_the_job_recorded():
    book = ledger()
    book.reserve("crashed", "churn", plan(), T0)
    book.spend("crashed", "churn", "federated training", TRAIN.model_copy(update={"steps": 10}), T0)
    assert book.close_stale(T0 + timedelta(hours=1), timedelta(hours=24)) == []  # still within its lease
    assert book.close_stale(T0 + timedelta(hours=25), timedelta(hours=24)) == ["crashed"]
    status = book.status()
    assert status.open_jobs == [] and status.committed == pytest.approx(status.spent)
    assert status.spent == pytest.approx(compose_epsilon([TRAIN.model_copy(update={"steps": 10})], 1e-5, "rdp"))


def test_by_use_case_and_by_job_with_the_model_version():
    book = ledger()
    run_job(book, "a", use_case="churn")
    run_job(book, "b", use_case="lead-scoring")
    book.record_model("a", "fedcrm-churn/4", T0)
    assert set(book.by_use_case()) == {"churn", "lead-scoring"}
    assert book.by_job()["a"] == ("churn", pytest.approx(book.epsilon(book.spent_events(job_id="a"))), False, "fedcrm-churn/4")
    assert book.by_job()["b"][2] is False and book.by_job()["b"][3] is None
    with pytest.raises(PrivacyError, match="no entry"):
        book.record_model("never-ran", "fedcrm-churn/5", T0)


def test_dashboard_line():
    book = ledger(budget=10.0)
    run_job(book, "a")
    status = book.status()
    assert status.dashboard_line() == f"Privacy budget: {status.spent:.1f}/10.0 ({100 * (10 - status.spent) / 10:.0f}% remaining)"


@settings(max_examples=15, deadline=None)
@given(
    jobs=st.lists(
        st.tuples(st.floats(0.6, 3.0), st.floats(0.01, 0.3), st.integers(1, 200)), min_size=1, max_size=4,
    ),
    accountant=st.sampled_from(["rdp", "prv"]),
)
def test_the_ledger_composes_events_tighter_than_adding_per_job_epsilons(jobs, accountant):
    book = ledger(budget=1e6, accountant=accountant)
    events = [PrivacyEvent(noise_multiplier=s, sample_rate=q, steps=n) for s, q, n in jobs]
    for i, event in enumerate(events):
        run_job(book, f"j{i}", event, rounds=1)

    ledger_epsilon = book.status().spent
    direct = compose_epsilon(events, 1e-5, accountant)
    naive = sum(compose_epsilon([e], 1e-5, accountant) for e in events)

    assert ledger_epsilon == pytest.approx(direct, rel=1e-9)
    assert ledger_epsilon <= naive * (1 + 1e-6)
