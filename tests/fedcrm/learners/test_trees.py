"""The boosted-tree learner: its release's sensitivity on neighbouring data sets, its accounting by the
accountant, its noise, the federated sum equal to the pooled one, and a saved model that scores."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from fedcrm.errors import ConfigError
from sklearn.metrics import roc_auc_score

from fedcrm.aggregation import AggregateResult, PlainSumAggregator
from fedcrm.config import load_config
from fedcrm.features import CategoricalFeature, FeaturePipeline, NumericFeature
from fedcrm.learners import TreeLearner, make_learner, make_predictor
from fedcrm.learners.trees import TreeEnsemble, release_sensitivity, tree_depth
from fedcrm.privacy.accountant import PrivacyEvent, compose_epsilon
from fedcrm.privacy.plan import JobLedger
from fedcrm.records import TARGET
from fedcrm.regional import baseline_spec, privacy_plan
from fedcrm.strategies import make_strategy


def _pipeline() -> FeaturePipeline:
    numeric = [NumericFeature(name=n, mean=0.0, std=1.0, min=-4.0, max=4.0) for n in ("a", "b")]
    return FeaturePipeline(use_case="tiny", numeric=numeric, categorical=[CategoricalFeature(name="c", vocabulary=["x", "y"])])


def _records(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.choice(["x", "y", "z"], size=n)})
    frame[TARGET] = (frame["a"] + 0.5 * frame["b"] + (frame["c"] == "x") > 0.5).astype(float)
    return frame


def _config(*overrides: str):
    return load_config(overrides=["training.learner=boosted_trees", "training.rounds=4", "training.trees.trees_per_round=3",
                                  "privacy.randomness=seeded", *overrides])


def _grown(learner: TreeLearner, pipeline: FeaturePipeline, records: pd.DataFrame, depth_rows: int = 10_000) -> TreeEnsemble:
    """A model with one batch of trees grown non-privately, so that the next batch's gradients vary by record."""
    vector = learner.initial(pipeline, [depth_rows], None)
    update = learner.train(records, pipeline, vector, plan=None, seed=0)
    return TreeEnsemble(update.vector)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(2, 60), removed=st.integers(0, 59), seed=st.integers(0, 10_000), batch=st.integers(1, 5))
def test_removing_one_record_moves_the_release_by_at_most_its_stated_sensitivity(n, removed, seed, batch):
    """Neighbouring data sets (one record added/removed): the exact leaf sums differ by that record's
    (g, h) in one leaf of each tree, ‖·‖₂ ≤ √(B · 17/16), whatever the records and the current model."""
    learner = TreeLearner(_config(f"training.trees.trees_per_round={batch}"))
    pipeline, records = _pipeline(), _records(n, seed)
    model = _grown(learner, pipeline, _records(200, seed + 1))
    features, labels = pipeline.transform(records).astype(np.float64), records[TARGET].to_numpy()

    def sums(rows: np.ndarray) -> np.ndarray:
        p = 1 / (1 + np.exp(-model.margin(features[rows])))
        return model.leaf_sums(features[rows], p - labels[rows], p * (1 - p))

    everyone = np.arange(n)
    neighbour = np.delete(everyone, removed % n)
    change = float(np.linalg.norm(sums(everyone) - sums(neighbour)))
    assert change <= release_sensitivity(batch) + 1e-9
    assert change > 0  # the record did contribute (g and h are never both 0 for p ∈ (0, 1))


def test_the_worst_record_reaches_the_sensitivity_so_it_is_not_loose_by_more_than_the_hessian():
    """A record with g = ±1 (p saturated) contributes √B · 1 at least: the bound is within √(17/16) of tight."""
    batch = 4
    model = TreeEnsemble(TreeLearner(_config(f"training.trees.trees_per_round={batch}")).initial(_pipeline(), [1000], None))
    features = np.zeros((1, model.n_features))
    release = model.leaf_sums(features, np.array([1.0]), np.array([0.0]))
    assert math.isclose(np.linalg.norm(release), math.sqrt(batch)) and math.sqrt(batch) <= release_sensitivity(batch)


def test_a_region_s_plan_is_the_gaussian_mechanism_on_every_record_composed_over_the_rounds():
    config = _config("privacy.target_epsilon=1.0", "privacy.accountant=rdp")
    plan = privacy_plan(5000, config, region="eu")
    personal = config.training.personal_rounds
    assert plan.sample_rate == 1.0 and plan.steps_per_round == 1
    assert plan.planned_steps == config.training.rounds + personal and plan.personal_steps == personal == 1
    assert plan.max_grad_norm == pytest.approx(release_sensitivity(3))
    ledger = JobLedger(plan=plan)
    for number in range(1, config.training.rounds + 1):
        ledger.charge(1, number)
    with pytest.raises(Exception, match="used up"):  # the personal round is not a federated one
        ledger.check_round(config.training.rounds + 1)
    spent = ledger.charge_personal()
    assert spent <= 1.0 + 1e-9
    # the Gaussian mechanism's RDP is exact: R releases at σ compose to α·R/(2σ²); convert at the best order
    rounds, sigma, delta = config.training.rounds + personal, plan.noise_multiplier, config.privacy.delta
    closed_form = min(a * rounds / (2 * sigma**2) + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1)
                      for a in np.linspace(1.01, 200, 20_000))
    assert spent == pytest.approx(closed_form, rel=0.02)
    assert spent == compose_epsilon([PrivacyEvent(noise_multiplier=sigma, sample_rate=1.0, steps=1)] * config.training.rounds
                                    + [PrivacyEvent(noise_multiplier=sigma, sample_rate=1.0, steps=personal)], delta, "rdp")
    with pytest.raises(Exception, match="already trained and charged"):
        ledger.charge_personal()
    alone = privacy_plan(5000, baseline_spec(config), region="eu")  # the local-only baseline: as many steps, in one go
    assert alone.steps_per_round == rounds and alone.noise_multiplier == plan.noise_multiplier


def test_the_noise_added_to_a_release_has_the_plan_s_standard_deviation():
    config = _config("privacy.target_epsilon=1.0", "training.rounds=40", "training.trees.trees_per_round=8", "training.trees.depth=6")
    learner, pipeline, records = TreeLearner(config), _pipeline(), _records(400)
    plan = privacy_plan(len(records), config, region="eu")
    vector = learner.initial(pipeline, [400], plan.noise_multiplier)
    exact = learner.train(records, pipeline, vector, plan=None, seed=3).release
    noisy = learner.train(records, pipeline, vector, plan=plan, seed=3).release
    residual = noisy - exact
    expected = plan.noise_multiplier * release_sensitivity(8)
    assert residual.std() == pytest.approx(expected, rel=0.1) and abs(residual.mean()) < 0.1 * expected


def test_the_federated_sum_grows_the_same_trees_as_the_pooled_records_without_dp():
    config = _config("privacy.mode=off")
    learner, pipeline = make_learner(config), _pipeline()
    regions = {"eu": _records(300, 1), "us": _records(500, 2)}
    pooled = pd.concat(regions.values(), ignore_index=True)
    vector = learner.initial(pipeline, [800], None)
    for _ in range(config.training.rounds):
        packed = {r: learner.contribution(vector, learner.train(f, pipeline, vector, plan=None, seed=0), len(f))
                  for r, f in regions.items()}
        total = PlainSumAggregator().sum(packed)
        result = AggregateResult(total=total, contributors=list(regions), dropped={}, error_bound=np.zeros(total.size))
        central = learner.train(pooled, pipeline, vector, plan=None, seed=0).vector
        vector, loss, _ = learner.next_model(make_strategy(config.strategy), None, vector, result)
        np.testing.assert_allclose(vector, central, atol=1e-9)
        assert 0 < loss < 1
    assert TreeEnsemble(vector).grown == config.training.rounds * 3
    holdout = _records(400, 9)
    assert roc_auc_score(holdout[TARGET], learner.predict(pipeline, vector, holdout)) > 0.85


def test_contributions_fit_their_public_bounds_and_the_screen_refuses_an_oversized_one():
    config = _config("privacy.target_epsilon=1.0")
    learner, pipeline, records = TreeLearner(config), _pipeline(), _records(200)
    plan = privacy_plan(len(records), config, region="eu")
    vector = learner.initial(pipeline, [200], plan.noise_multiplier)
    packed = learner.contribution(vector, learner.train(records, pipeline, vector, plan=plan, seed=1), 200)
    bounds = learner.contribution_bounds(vector, max_weight=1000)
    assert packed.shape == bounds.shape and np.all(np.abs(packed) <= bounds)
    screen = learner.screen(vector)
    assert screen(packed) is None
    assert "exceed" in screen(np.concatenate([packed[:-2] * 0 + 10_000, packed[-2:]]))


def test_leaves_with_a_hessian_below_the_noise_get_no_value():
    config = _config("privacy.target_epsilon=1.0")
    model = TreeEnsemble(TreeLearner(config).initial(_pipeline(), [10_000], 2.0))
    release = np.zeros(2 * model.batch * model.n_leaves)
    release[: release.size // 2] = -50.0  # strong gradients, but no hessian mass: noise, not signal
    grown = model.grow(release, contributors=3)
    assert grown.grown == model.batch and np.all(grown.margin(np.zeros((5, model.n_features))) == 0)


def test_the_depth_rule_reads_only_public_quantities_and_grows_with_the_rows():
    spec = _config().training.trees
    depths = [tree_depth(spec, [n] * 3, 20.0) for n in (1_000, 10_000, 100_000, 10_000_000)]
    assert depths == sorted(depths) and depths[0] >= 1 and depths[-1] == 6
    assert tree_depth(spec, [1000], None) == 6  # non-private: the deepest automatic tree
    assert tree_depth(spec.model_copy(update={"depth": 2}), [10**6], 1.0) == 2


def test_a_saved_tree_model_scores_through_its_learner_and_checks_its_shape():
    config = _config("privacy.mode=off")
    learner, pipeline, records = TreeLearner(config), _pipeline(), _records(300)
    vector = learner.train(records, pipeline, learner.initial(pipeline, [300], None), plan=None, seed=0).vector
    saved = learner.save(vector)
    assert saved.learner == "boosted_trees"
    np.testing.assert_allclose(make_predictor(pipeline, saved).predict(records), learner.predict(pipeline, vector, records))
    with pytest.raises(Exception, match="grown on 5 features"):
        narrower = FeaturePipeline(use_case="tiny", numeric=pipeline.numeric, categorical=[])
        make_predictor(narrower, saved).predict(records)


@pytest.mark.parametrize("override, message", [
    ("training.local_epochs=2", "local_epochs=1"),
    ("training.local_head=true", "local_head=false"),
    ("strategy.name=fedadam", "strategy.name=fedavg"),
])
def test_the_config_refuses_what_a_tree_job_cannot_do(override, message):
    with pytest.raises(ConfigError, match=message):
        _config(override)
