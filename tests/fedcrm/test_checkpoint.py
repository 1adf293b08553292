"""What a resumed job may differ in from its first attempt, and the server optimiser's state."""

from __future__ import annotations

import numpy as np

from connectors import LocalRegionStore
from connectors.exchange import Exchange
from fedcrm.checkpoint import resume_fingerprint
from fedcrm.config import load_config
from fedcrm.strategies import FedAdam
from fedcrm.strategies.base import restore_strategy_state, strategy_state


def test_only_what_is_computed_must_match_when_resuming(tmp_path):
    base = load_config(overrides=[f"state_dir={tmp_path}"])
    moved = load_config(overrides=[f"state_dir={tmp_path / 'elsewhere'}", f"secure_aggregation.keyring={tmp_path / 'k.json'}",
                                   "tracking.enabled=false"])
    regions = {**moved.federation.regions, "eu": moved.federation.regions["eu"].model_copy(update={"store": "s3://eu/x"})}
    moved = moved.model_copy(update={"federation": moved.federation.model_copy(update={"regions": regions})})
    assert resume_fingerprint(moved) == resume_fingerprint(base)
    for change in ("training.rounds=7", "privacy.target_epsilon=1.5", "strategy.name=fedprox", "federation.min_regions=3"):
        assert resume_fingerprint(load_config(overrides=[f"state_dir={tmp_path}", change])) != resume_fingerprint(base), change


def test_fedadam_carries_on_from_restored_moments():
    rng = np.random.default_rng(1)
    deltas = [rng.normal(size=5) for _ in range(3)]
    straight, first = FedAdam(), FedAdam()
    vector = np.zeros(5)
    for delta in deltas:
        vector = straight.apply(vector, delta)
    halfway = first.apply(first.apply(np.zeros(5), deltas[0]), deltas[1])
    restarted = FedAdam()
    restore_strategy_state(restarted, strategy_state(first))
    np.testing.assert_allclose(restarted.apply(halfway, deltas[2]), vector)
    assert strategy_state(FedAdam()) == {}


def test_each_attempt_has_its_own_mailboxes_and_the_latest_checkpoint_wins(tmp_path):
    exchange = Exchange(LocalRegionStore(tmp_path), "job-1")
    assert exchange.latest_checkpoint() is None
    first = exchange.begin_attempt("t0")
    first.post("to-eu", 1, b"a")
    second = exchange.begin_attempt("t1")
    assert (first.attempt, second.attempt) == (1, 2)
    assert second.fetch("to-eu", 1) is None and first.fetch("to-eu", 1) == b"a"
    assert first.first_free("to-eu") == 2 and second.first_free("to-eu") == 1
    exchange.save_checkpoint(0, b"zero")
    exchange.save_checkpoint(1, b"one")
    assert exchange.latest_checkpoint() == (1, b"one")
