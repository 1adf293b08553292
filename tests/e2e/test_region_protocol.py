"""A regional run validates every request against the protocol before it runs anything: a request of
another protocol version is answered with a refusal that says what to upgrade, and the run goes on
to answer the next request and to finish (real Prefect flow, real exchange, signed and encrypted)."""

from __future__ import annotations

import pytest
from prefect.testing.utilities import prefect_test_harness

from connectors import LocalRegionStore
from connectors.exchange import open_exchange
from connectors.keys import create_identity, load_identity, read_keyring, register
from fedcrm.channel import CoordinatorChannel, session_id
from fedcrm.config import load_config
from fedcrm.protocol import PROTOCOL_VERSION, Finish, PlanPrivacy, RecordModelVersion
from fedcrm.secagg.identity import COORDINATOR
from flows.region import regional_participant

pytestmark = pytest.mark.e2e


def test_a_region_refuses_a_request_of_another_protocol_and_answers_the_next(tmp_path):
    config = load_config(overrides=[f"state_dir={tmp_path}"])
    for party, root in {"eu": config.region_store("eu"), COORDINATOR: config.coordinator_store}.items():
        register(config.keyring_path, create_identity(LocalRegionStore(root), party)[0])
    job_id = "job-protocol"
    coordinator = CoordinatorChannel(open_exchange(config, job_id, 1),
                                     load_identity(LocalRegionStore(config.coordinator_store), COORDINATOR),
                                     read_keyring(config.keyring_path), session_id(job_id, 1))
    coordinator.send("eu", RecordModelVersion(model_version="fedcrm-churn/3", protocol=PROTOCOL_VERSION + 1))
    coordinator.send("eu", PlanPrivacy())
    coordinator.send("eu", Finish())
    with prefect_test_harness(server_startup_timeout=180):
        answered = regional_participant(region="eu", job_id=job_id, config=config)
    assert answered == {"answered": 2}
    refused, planned = coordinator.reply("eu", 1), coordinator.reply("eu", 2)
    assert not refused.ok and f"protocol {PROTOCOL_VERSION + 1}" in refused.reason
    assert "work pool image" in refused.reason
    assert not planned.ok and "run the preparation step first" in planned.reason  # it ran, and needs prepared data
