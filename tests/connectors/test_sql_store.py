"""The SQL region store against a real PostgreSQL started by the test suite: IO, atomic ledger
reservations in one transaction, and all-or-nothing updates when the holder dies."""

from __future__ import annotations

import multiprocessing
import os
from datetime import datetime, timezone

import pandas as pd
import pytest

from connectors.ledger import read_ledger, updating_ledger
from connectors.sql import SqlRegionStore
from fedcrm.errors import ConnectorError
from fedcrm.privacy.ledger import PlannedSpend


@pytest.fixture
def database(fresh_database) -> str:
    return fresh_database


def test_documents_and_frames_round_trip(database):
    store = SqlRegionStore(database)
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    store.write_frame("work/train.parquet", frame)
    store.write_json("doc.json", {"k": [1, 2]})
    store.write_json("doc.json", {"k": [3]})  # an overwrite, not a second row
    store.append_text("logs/errors.log", "one\n")
    store.append_text("logs/errors.log", "two\n")

    pd.testing.assert_frame_equal(store.read_frame("work/train.parquet"), frame)
    assert store.read_json("doc.json") == {"k": [3]} and store.exists("doc.json") and not store.exists("nope.json")
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT body FROM fedcrm_region_store WHERE key = 'logs/errors.log'"
                                          ).scalar_one() == b"one\ntwo\n"
    store.remove("work")
    assert not store.exists("work/train.parquet") and store.exists("doc.json")
    with pytest.raises(ConnectorError, match="does not exist"):
        store.read_json("nope.json")


def test_a_broken_database_is_a_clear_error_without_the_password(postgres_url):
    wrong = postgres_url.replace("fedcrm@", "fedcrm:s3cret@").rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(ConnectorError, match="could not write x.json") as caught:
        SqlRegionStore(wrong).write_json("x.json", {})
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)
    with pytest.raises(ConnectorError, match="needs PostgreSQL"):
        SqlRegionStore("sqlite:///ledger.db")


@pytest.mark.parametrize("workers", ["threads", "processes"])
def test_concurrent_reservations_in_postgres_never_overspend(database, reservations, workers):
    results = reservations.run(lambda: SqlRegionStore(database), workers)

    ledger = read_ledger(SqlRegionStore(database), "customers")
    assert sum(results) == 3 and sum(e.kind == "reserve" for e in ledger.entries) == 3
    assert ledger.status().committed <= reservations.budget_for(3)
    reservations.assert_audited(SqlRegionStore(database), 3)


def _die_inside_the_update(database: str, budget: float, delta: float, event) -> None:
    store = SqlRegionStore(database)
    with updating_ledger(store, "customers", budget_epsilon=budget, delta=delta, accountant="rdp") as ledger:
        ledger.reserve("dying", "churn", [PlannedSpend(purpose="federated training", event=event)],
                       datetime.now(timezone.utc))
        store.write_json("privacy/ledger/customers.json", {"half": "written"})  # inside the transaction
        os._exit(137)  # killed before the commit


def test_a_holder_killed_inside_an_update_leaves_the_previous_ledger_and_no_lock(database, reservations):
    budget = reservations.budget_for(3)
    assert reservations.try_reserve(lambda: SqlRegionStore(database), "first", budget)
    child = multiprocessing.get_context("fork").Process(
        target=_die_inside_the_update, args=(database, budget, reservations.delta, reservations.job))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 137

    store = SqlRegionStore(database, lock_timeout_s=5)
    ledger = read_ledger(store, "customers")  # the uncommitted write is gone, the ledger intact
    assert [entry.job_id for entry in ledger.entries] == ["first"]
    assert reservations.try_reserve(lambda: store, "next", budget)  # the lock died with its connection


def test_a_held_lock_times_out_with_a_clear_error(database):
    holder = SqlRegionStore(database)
    with holder.locked("doc.json"):
        holder.write_json("doc.json", {"v": 1})
        with pytest.raises(ConnectorError, match="could not lock doc.json within 0.3 s"):
            with SqlRegionStore(database, lock_timeout_s=0.3).locked("doc.json"):
                pass
        assert not SqlRegionStore(database).exists("doc.json")  # not visible before the commit
    assert SqlRegionStore(database).read_json("doc.json") == {"v": 1}


def test_an_exception_inside_the_lock_rolls_the_update_back(database):
    store = SqlRegionStore(database)
    store.write_json("doc.json", {"v": 1})
    with pytest.raises(RuntimeError):
        with store.locked("doc.json"):
            store.write_json("doc.json", {"v": 2})
            raise RuntimeError("the step failed")
    assert store.read_json("doc.json") == {"v": 1}


def test_a_region_store_given_as_a_database_url_in_the_configuration(database, tmp_path):
    from connectors.s3 import S3RegionStore
    from connectors.stores import open_store
    from fedcrm.config import load_config
    from fedcrm.errors import ConfigError
    from tasks.regional import region_store

    config = load_config(overrides=[f"federation.regions.eu.store={database}", "federation.regions.us.store=s3://crm-us/fedcrm",
                                    f"federation.regions.apac.store={tmp_path}/apac"])
    eu = region_store(config, "eu")
    assert isinstance(eu, SqlRegionStore) and isinstance(open_store(config.region_store_location("us")), S3RegionStore)
    eu.write_json("doc.json", {"v": 1})
    assert SqlRegionStore(database).read_json("doc.json") == {"v": 1}
    assert config.region_store("apac") == tmp_path / "apac"
    with pytest.raises(ConfigError, match="not a folder"):
        config.region_store("eu")
