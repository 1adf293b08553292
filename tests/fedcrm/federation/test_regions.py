"""A job's privacy reservations are all or nothing: two jobs racing for a budget that fits one end
with one holding every region and the other none (real regional tasks and local stores, threads)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from connectors.ledger import read_ledger
from fedcrm.catalog import RegionCatalog
from fedcrm.config import load_config
from fedcrm.errors import PrivacyError
from fedcrm.federation.regions import reserve_all_or_nothing
from fedcrm.protocol import StepRequest
from fedcrm.roster import Roster
from fedcrm.validation import build_suite_dict
from tasks import regional
from tasks.budget import planned_spends

REGIONS = ("apac", "eu", "us")
CONTRACT = {
    "use_case": "tiny",
    "id_column": "id",
    "target": {"column": "won", "positive": "yes", "negative": "no"},
    "numeric": {"age": {"dtype": "int", "min": 18, "max": 100}},
    "categorical": {"channel": {"vocabulary": ["web", "phone", "store"]}},
    "min_rows": 50,
}


class DirectLinks:
    """The regional runs without the exchange: each request runs the region's task here, as its run would."""

    def __init__(self, config, job_id: str):
        self.config, self.job_id = config, job_id

    def ask(self, step: type[StepRequest], regions: list[str], **arguments: Any) -> dict[str, Any]:
        task = regional.REGIONAL_STEPS[step.name]
        return {r: task.fn(region=r, config=self.config, job_id=self.job_id, **step(**arguments).arguments())
                for r in regions}


def _config(tmp_path, *overrides: str):
    rng = np.random.default_rng(0)
    n = 400
    records = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "age": rng.integers(18, 90, n).astype(str),
                            "channel": rng.choice(["web", "phone", "store"], n),
                            "won": np.where(rng.random(n) < 0.4, "yes", "no")})
    records.to_csv(tmp_path / "records.csv", index=False)
    (tmp_path / "contract.yaml").write_text(yaml.safe_dump(CONTRACT))
    regions = "{" + ", ".join(f"{r}: {{source: {{path: {tmp_path / 'records.csv'}}}}}" for r in REGIONS) + "}"
    return load_config(overrides=[
        "use_case=tiny", f"contract={tmp_path / 'contract.yaml'}", f"state_dir={tmp_path / 'state'}",
        f"federation.regions={regions}", "federation.min_regions=1", "training.rounds=2", "privacy.accountant=rdp",
        "baselines.local_only=false", "secure_aggregation.enabled=false", *overrides])


def _prepared(config, job_id: str, regions: tuple[str, ...] = REGIONS) -> None:
    suite = build_suite_dict(config.load_contract())
    for region in regions:
        assert regional.prepare_region.fn(region, config, job_id, suite).ok


def _fits_one_job(tmp_path) -> float:
    """A lifetime budget that holds one such job but not two (composed at the ledger's δ)."""
    config = _config(tmp_path)
    _prepared(config, "probe", ("eu",))
    n_train = len(regional.region_store(config, "eu").read_frame(RegionCatalog(config.use_case).job("probe").train))
    from fedcrm.privacy.accountant import compose_epsilon

    events = [s.event for s in planned_spends(n_train, config, "eu")]
    one, two = (compose_epsilon(events * k, config.privacy.delta, config.privacy.accountant) for k in (1, 2))
    for region in REGIONS:
        regional.region_store(config, region).remove("work")
    assert two > one
    return (one + two) / 2


def _holders(config) -> dict[str, list[str]]:
    """Per region, the jobs holding an open reservation (a region never asked has no ledger)."""
    ledgers = {r: read_ledger(regional.region_store(config, r), config.population) for r in REGIONS}
    return {r: [] if ledger is None else ledger.status().open_jobs for r, ledger in ledgers.items()}


def test_two_jobs_racing_for_a_budget_that_fits_one_end_all_or_nothing(tmp_path):
    config = _config(tmp_path, f"privacy.lifetime_epsilon={_fits_one_job(tmp_path)}")
    jobs = ("job-a", "job-b")
    for job in jobs:
        _prepared(config, job)
    start, outcome = threading.Barrier(len(jobs)), {}

    def run(job: str) -> None:
        roster = Roster(list(REGIONS))
        start.wait()
        try:
            plans = reserve_all_or_nothing(roster, DirectLinks(config, job), min_regions=1)
            outcome[job] = sorted(plans)
        except PrivacyError as exc:
            outcome[job] = exc

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    winners = [job for job in jobs if outcome[job] == list(REGIONS)]
    losers = [job for job in jobs if isinstance(outcome[job], PrivacyError)]
    assert len(winners) == 1 and len(losers) == 1, outcome
    assert "all or nothing" in outcome[losers[0]].message
    assert _holders(config) == {r: winners for r in REGIONS}  # the loser holds nothing anywhere


def test_a_refusal_releases_what_the_job_already_reserved(tmp_path):
    """The split that parallel planning allowed: another job holds 'eu' only (it reserved there first).
    This job reserves 'apac', is refused at 'eu', and must give 'apac' back and fail."""
    config = _config(tmp_path, f"privacy.lifetime_epsilon={_fits_one_job(tmp_path)}")
    _prepared(config, "other", ("eu",))
    _prepared(config, "this")
    assert not regional.plan_privacy.fn("eu", config, "other").value.refused
    roster = Roster(list(REGIONS))
    with pytest.raises(PrivacyError, match="all or nothing"):
        reserve_all_or_nothing(roster, DirectLinks(config, "this"), min_regions=1)
    assert _holders(config) == {"apac": [], "eu": ["other"], "us": []}
    assert roster.regions["eu"].excluded_at == "privacy planning" and "would be exceeded" in roster.regions["eu"].reason
    assert "was released" in roster.regions["apac"].reason and "all its regions or in none" in roster.regions["us"].reason
    store = regional.region_store(config, "apac")
    assert not store.exists(RegionCatalog(config.use_case).job("this").train)  # its working copy is gone too
