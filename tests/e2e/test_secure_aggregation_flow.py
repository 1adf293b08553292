"""The flow wiring of secure aggregation (``flows/aggregation.py``) under Prefect, with regions
dropping out before and after sending their masked input."""

from __future__ import annotations

import numpy as np
import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.testing.utilities import prefect_test_harness

from connectors import LocalRegionStore
from connectors.keys import IDENTITY_KEY, create_identity, register
from fedcrm.config import load_config
from fedcrm.errors import AggregationAbortedError, FedcrmError
from fedcrm.protocol import Contribution, FeatureStatistics, SecureAggregation
from fedcrm.roster import Roster
from flows.aggregation import federated_sum, set_up_aggregation
from tasks import regional
from tasks.guard import in_region
from tasks.session import RegionSession

pytestmark = pytest.mark.e2e
BOUNDS = np.full(4, 10.0)
VALUES = {"eu": np.array([1.0, 2.0, 3.0, 4.0]), "us": np.array([-1.0, 0.5, 0.0, 2.0]), "apac": np.array([0.25, 0.0, -3.0, 1.0])}


@pytest.fixture(scope="module", autouse=True)
def harness():
    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def config(tmp_path):
    cfg = load_config(overrides=[f"state_dir={tmp_path}", "federation.min_regions=2"])
    for party, root in {**{r: cfg.region_store(r) for r in cfg.federation.regions}, "coordinator": cfg.coordinator_store}.items():
        register(cfg.keyring_path, create_identity(LocalRegionStore(root), party)[0])
    return cfg


@task(name="test-contribution", cache_policy=NO_CACHE, persist_result=False)
def contribute(region, config, job_id, round_number, request, crash_before=(), lose_key_after=()):
    store = LocalRegionStore(config.region_store(region))

    def run():
        if region in crash_before:
            raise FedcrmError(f"{region} crashed before masking")
        contributor, save = RegionSession(config, region, job_id, attempt=1, store=store).contributor()
        masked = contributor.contribute(request, round_number, VALUES[region], BOUNDS)
        save()
        if region in lose_key_after:  # it then cannot answer the unmask request
            store.remove(IDENTITY_KEY)
        return Contribution(masked)

    return in_region(region, store, "test contribution", run)


class InProcessLinks:
    """The transport, replaced by direct task submission: what is under test here is the aggregation
    wiring with dropouts (the exchange transport has its own tests in tests/flows)."""

    def __init__(self, config, job_id):
        self.config, self.job_id = config, job_id
        self.tasks = {SecureAggregation.name: regional.secure_aggregation_step, FeatureStatistics.name: contribute}

    def ask(self, step, regions, per_region=None, **arguments):
        futures = {region: self.tasks[step.name].submit(region=region, config=self.config, job_id=self.job_id, **arguments,
                                                **(per_region or {}).get(region, {})) for region in regions}
        return {region: future.result() for region, future in futures.items()}


@flow(name="secure-sum-under-test", persist_result=False)
def secure_sum(config, crash_before=(), lose_key_after=()):
    roster, links = Roster(list(config.federation.regions)), InProcessLinks(config, "job-1")
    aggregator = set_up_aggregation(config, "job-1", roster, links)
    result, _, _ = federated_sum(config, roster, links, aggregator, round_number=1, step="round 1", request=FeatureStatistics,
                                 bounds=BOUNDS, crash_before=crash_before, lose_key_after=lose_key_after)
    return result, roster.regions


def test_all_regions_give_the_exact_sum(config):
    result, regions = secure_sum(config)
    np.testing.assert_allclose(result.total, sum(VALUES.values()), atol=float(result.error_bound.max()) + 1e-12)
    assert result.contributors == ["apac", "eu", "us"] and all(r.status == "included" for r in regions.values())


def test_a_region_that_crashes_before_masking_is_left_out_and_excluded(config):
    result, regions = secure_sum(config, crash_before=("us",))
    np.testing.assert_allclose(result.total, VALUES["eu"] + VALUES["apac"], atol=float(result.error_bound.max()) + 1e-12)
    assert regions["us"].status == "excluded" and "crashed before masking" in regions["us"].reason
    assert regions["eu"].status == regions["apac"].status == "included"


def test_a_region_that_drops_after_masking_still_counts_and_is_excluded(config):
    result, regions = secure_sum(config, lose_key_after=("apac",))
    np.testing.assert_allclose(result.total, sum(VALUES.values()), atol=float(result.error_bound.max()) + 1e-12)
    assert regions["apac"].status == "excluded" and regions["apac"].excluded_at == "round 1 (unmask)"
    assert "keys init --region apac" in regions["apac"].reason


def test_too_many_dropouts_abort_the_sum(config):
    with pytest.raises(AggregationAbortedError, match="nothing was revealed"):
        secure_sum(config, crash_before=("us", "apac"))
