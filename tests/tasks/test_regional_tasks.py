"""The regional tasks on a real region store, without orchestration (``task.fn``)."""

from __future__ import annotations

import numpy as np
import pytest

from fedcrm.catalog import RegionCatalog
from fedcrm.features import FeaturePipeline
from fedcrm.model import build_model, get_vector
from fedcrm.validation import build_suite_dict
from tasks import regional


@pytest.fixture
def region_job(tiny_region):
    config, _, _ = tiny_region(
        1500, 90, "training.local_head=true", "privacy.accountant=rdp", "training.learning_rate=0.5",
        "secure_aggregation.enabled=false")  # the region logic in the clear; tests/secagg and e2e cover masking
    contract = config.load_contract()
    prepared = regional.prepare_region.fn("eu", config, "job1", build_suite_dict(contract))
    assert prepared.ok, prepared.reason
    assert regional.plan_privacy.fn("eu", config, "job1").ok  # reserves the job's spend, statistics included
    stats = regional.feature_statistics.fn("eu", config, "job1")
    assert stats.ok, stats.reason
    pipeline = FeaturePipeline.fit(contract, stats.value.contribution)
    start = get_vector(build_model(pipeline.n_features, config.training.hidden_sizes))
    return config, pipeline, start


def model_after(start: np.ndarray, reply) -> np.ndarray:
    """The region's model from its plain contribution [n·Δθ, n·loss, n]."""
    packed = reply.value.contribution
    return start + packed[:-2] / packed[-1]


def test_privacy_plan_and_ledger_are_cumulative_and_bounded(region_job):
    config, pipeline, start = region_job
    plan = regional.plan_privacy.fn("eu", config, "job1")
    assert plan.ok and plan.value.plan.planned_epsilon <= config.privacy.target_epsilon
    first = regional.local_training.fn("eu", config, "job1", pipeline, start, 1)
    second = regional.local_training.fn("eu", config, "job1", pipeline, model_after(start, first), 2)
    assert first.ok and second.ok
    assert 0 < first.value.epsilon_spent < second.value.epsilon_spent <= config.privacy.target_epsilon
    third = regional.local_training.fn("eu", config, "job1", pipeline, model_after(start, second), 3)
    assert not third.ok and "used up" in third.reason


def test_update_is_clipped_to_the_norm_bound(region_job):
    config, pipeline, start = region_job
    tight = config.model_copy(update={"strategy": config.strategy.model_copy(update={"max_update_norm": 0.01})})
    regional.plan_privacy.fn("eu", tight, "job1")
    update = regional.local_training.fn("eu", tight, "job1", pipeline, start, 1)
    assert np.linalg.norm(model_after(start, update) - start) <= 0.01 * (1 + 1e-9)


def test_local_head_personalises_evaluation(region_job):
    config, pipeline, start = region_job
    regional.plan_privacy.fn("eu", config, "job1")
    update = regional.local_training.fn("eu", config, "job1", pipeline, start, 1)
    personal = regional.local_evaluation.fn("eu", config, "job1", pipeline, start, 1)
    plain = config.model_copy(update={"training": config.training.model_copy(update={"local_head": False})})
    shared = regional.local_evaluation.fn("eu", plain, "job1", pipeline, start, 1)
    assert update.ok and personal.ok and shared.ok
    assert personal.value.auc != shared.value.auc  # the region's own trained head, not the untrained global one


def test_a_region_too_small_for_delta_is_refused_at_planning(region_job):
    config, _, _ = region_job
    loose = config.model_copy(update={"privacy": config.privacy.model_copy(update={"delta": 0.01})})
    assert regional.prepare_region.fn("eu", loose, "job2", build_suite_dict(loose.load_contract())).ok
    plan = regional.plan_privacy.fn("eu", loose, "job2")
    assert not plan.ok and "1/n" in plan.reason


def test_dp_feature_statistics_are_charged_to_the_lifetime_ledger_before_release(region_job):
    from connectors import LocalRegionStore
    from connectors.ledger import read_ledger

    config, _, _ = region_job
    ledger = read_ledger(LocalRegionStore(config.region_store("eu")), config.population)
    spends = [s for e in ledger.entries if e.kind == "spend" for s in e.spends]
    assert [s.purpose for s in spends] == ["feature statistics"]
    assert spends[0].event.noise_multiplier == config.privacy.statistics_noise_multiplier and spends[0].event.sample_rate == 1.0
    reserved = {s.purpose for e in ledger.entries if e.kind == "reserve" for s in e.spends}
    assert reserved == {"federated training", "personalisation", "local-only baseline", "feature statistics"}
    again = regional.feature_statistics.fn("eu", config, "job1")  # a second release was not reserved: refused
    assert not again.ok and "no reservation left" in again.reason


def _kinds(config, job_id="job1"):
    from connectors import LocalRegionStore
    from connectors.ledger import read_ledger

    ledger = read_ledger(LocalRegionStore(config.region_store("eu")), config.population)
    return [(e.kind, s.purpose) for e in ledger.entries if e.job_id == job_id for s in (e.spends or [None]) if s]


def test_a_resumed_job_keeps_its_plan_and_reservation_and_never_trains_a_round_twice(region_job, tmp_path):
    config, pipeline, start = region_job
    first = regional.local_training.fn("eu", config, "job1", pipeline, start, 1)
    assert first.ok
    (tmp_path / "eu.csv").unlink()  # the prepared copy is what a resumed job goes on with
    again = regional.prepare_region.fn("eu", config, "job1", build_suite_dict(config.load_contract()))
    assert again.ok and again.value.n_train > 0
    before = _kinds(config)
    resumed = regional.plan_privacy.fn("eu", config, "job1")
    assert resumed.ok and resumed.value.rounds_charged == [1]
    repeat = regional.local_training.fn("eu", config, "job1", pipeline, start, 1)
    assert not repeat.ok and "already trained" in repeat.reason
    assert _kinds(config) == before  # nothing reserved, nothing spent
    assert regional.local_training.fn("eu", config, "job1", pipeline, model_after(start, first), 2).ok


def test_the_local_only_baseline_is_trained_and_charged_once_per_job(region_job):
    config, pipeline, start = region_job
    first = regional.local_only_baseline.fn("eu", config, "job1", pipeline, start)
    spent = _kinds(config).count(("spend", "local-only baseline"))
    second = regional.local_only_baseline.fn("eu", config, "job1", pipeline, start)
    assert first.ok and second.ok and second.value == first.value and spent == 1
    assert _kinds(config).count(("spend", "local-only baseline")) == 1


def _federated_rounds(config, pipeline, start):
    """Every federated round of the job in this one region (its plain contribution is the whole sum)."""
    vector, last = start, None
    for number in range(1, config.training.rounds + 1):
        last = regional.local_training.fn("eu", config, "job1", pipeline, vector, number)
        assert last.ok, last.reason
        vector = model_after(vector, last)
    return vector, last.value.epsilon_spent


def test_personal_rounds_are_charged_inside_the_plan_once_and_the_better_model_is_kept(region_job):
    from fedcrm.learners.base import PersonalisedModel

    config, pipeline, start = region_job
    plan = regional.plan_privacy.fn("eu", config, "job1").value.plan
    assert plan.personal_steps == config.training.personal_rounds * plan.steps_per_round > 0
    final, federated_epsilon = _federated_rounds(config, pipeline, start)
    reply = regional.personalise.fn("eu", config, "job1", pipeline, final)
    assert reply.ok, reply.reason
    result = reply.value
    # the federated rounds left room for the personal ones; together they are the plan, within the target
    assert federated_epsilon < result.epsilon_spent == pytest.approx(plan.planned_epsilon)
    assert result.epsilon_spent <= config.privacy.target_epsilon
    assert result.global_metrics == regional.local_evaluation.fn("eu", config, "job1", pipeline, final, 0).value
    assert (result.chosen == "personalised") == (result.personalised_metrics.auc > result.global_metrics.auc)
    store = regional.region_store(config, "eu")
    kept = PersonalisedModel.model_validate(store.read_json(RegionCatalog(config.use_case).job("job1").personalised_model))
    assert kept.chosen == result.chosen and len(kept.model.parameters) == final.size
    assert not np.allclose(kept.model.parameters, final)  # trained further on the region's rows
    again = regional.personalise.fn("eu", config, "job1", pipeline, final)  # a resumed job: answered, not retrained
    assert again.ok and again.value == result and _kinds(config).count(("spend", "personalisation")) == 1
    late = regional.local_training.fn("eu", config, "job1", pipeline, final, config.training.rounds + 1)
    assert not late.ok and "used up" in late.reason
    assert regional.release_workspace.fn("eu", config, "job1").ok  # the model outlives the job's working copies
    assert store.exists(RegionCatalog(config.use_case).job("job1").personalised_model)


def test_a_personal_step_interrupted_after_its_charge_is_never_charged_twice(region_job):
    config, pipeline, start = region_job
    regional.plan_privacy.fn("eu", config, "job1")
    final, _ = _federated_rounds(config, pipeline, start)
    assert regional.personalise.fn("eu", config, "job1", pipeline, final).ok
    store = regional.region_store(config, "eu")
    store.remove(RegionCatalog(config.use_case).job("job1").personalisation_result)  # as if it died before answering
    again = regional.personalise.fn("eu", config, "job1", pipeline, final)
    assert not again.ok and "already trained and charged" in again.reason
    assert _kinds(config).count(("spend", "personalisation")) == 1


def test_a_job_whose_reservation_was_closed_cannot_resume(region_job):
    config, _, _ = region_job
    assert regional.release_workspace.fn("eu", config, "job1").ok  # e.g. its run's idle timeout
    resumed = regional.plan_privacy.fn("eu", config, "job1")
    assert not resumed.ok and "reservation here is closed" in resumed.reason


def test_reconciliation_closes_a_crashed_jobs_reservation_and_deletes_its_working_copies(tiny_region):
    import time

    from connectors.ledger import read_ledger

    config, _, _ = tiny_region(400, 90, "privacy.accountant=rdp", "baselines.local_only=false",
                               "secure_aggregation.enabled=false", "privacy.reservation_ttl_hours=0.0003")
    suite, store = build_suite_dict(config.load_contract()), regional.region_store(config, "eu")
    for job in ("crashed", "next"):
        assert regional.prepare_region.fn("eu", config, job, suite).ok
    assert not regional.plan_privacy.fn("eu", config, "crashed").value.refused  # then its coordinator is killed
    time.sleep(1.5)  # > reservation_ttl_hours without activity
    assert not regional.plan_privacy.fn("eu", config, "next").value.refused
    assert not store.exists(RegionCatalog(config.use_case).job("crashed").train)
    assert not store.exists(RegionCatalog(config.use_case).job("crashed").holdout)
    assert store.exists(RegionCatalog(config.use_case).job("next").train)  # the running job keeps its copies
    ledger = read_ledger(store, config.population)
    assert ledger.status().open_jobs == ["next"]
    assert any(e.kind == "close" and e.job_id == "crashed" and "stale" in e.note for e in ledger.entries)


def test_a_baseline_interrupted_after_its_spend_is_never_trained_or_charged_twice(region_job, monkeypatch):
    """The local-only baseline writes its own ledger (the "never twice" guard) before the lifetime spend,
    as a round does: a crash right after the lifetime spend leaves the guard in place, so a resumed job
    refuses the baseline instead of charging it again (before, the guard was written after the spend)."""
    from connectors import LocalRegionStore
    from connectors.ledger import read_ledger

    from tasks.budget import LOCAL_ONLY, RegionBudget

    config, pipeline, start = region_job
    spend = RegionBudget._spend_lifetime

    def spend_then_crash(budget, purpose, event):
        spend(budget, purpose, event)
        if purpose == LOCAL_ONLY:
            raise RuntimeError("the region's process died here")

    monkeypatch.setattr(RegionBudget, "_spend_lifetime", spend_then_crash)
    crashed = regional.local_only_baseline.fn("eu", config, "job1", pipeline, start)
    assert not crashed.ok and "RuntimeError" in crashed.reason
    monkeypatch.setattr(RegionBudget, "_spend_lifetime", spend)

    again = regional.local_only_baseline.fn("eu", config, "job1", pipeline, start)
    assert not again.ok and "not trained (or charged) twice" in again.reason
    ledger = read_ledger(LocalRegionStore(config.region_store("eu")), config.population)
    spends = [s for e in ledger.entries if e.kind == "spend" for s in e.spends if s.purpose == LOCAL_ONLY]
    assert len(spends) == 1


def test_a_job_without_protection_keeps_no_ledger_and_charges_nothing(tiny_region) -> None:
    from connectors.ledger import read_ledger
    from tasks.budget import UnchargedBudget, region_budget
    from tasks.session import region_store

    config, _, _ = tiny_region(400, 90, "privacy.mode=off")
    store = region_store(config, "eu")
    budget = region_budget(config, store, "job-off", "eu")
    assert isinstance(budget, UnchargedBudget)
    assert budget.plan().plan is None and budget.charge_round(1) is None and budget.charge_local_only(300) is None
    budget.charge_statistics(None)
    assert budget.close() is None and read_ledger(store, config.population) is None
    dp = region_budget(tiny_region(400, 90)[0], store, "job-dp", "eu")
    assert not isinstance(dp, UnchargedBudget) and hasattr(dp, "lifetime")
