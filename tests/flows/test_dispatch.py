"""The coordinator's side of the exchange: replies collected, silence and dead runs turned into reasons."""

from __future__ import annotations

import threading
import time

import pytest

from connectors import LocalRegionStore
from connectors.exchange import Exchange
from fedcrm.channel import CoordinatorChannel, RegionChannel
from fedcrm.config import load_config
from fedcrm.protocol import Finish, RecordModelVersion, StepReply
from fedcrm.secagg.identity import COORDINATOR, Identity, Keyring
from flows.dispatch import RegionLinks

REGIONS = ("eu", "us")


@pytest.fixture
def federation(tmp_path):
    identities = {party: Identity.generate(party) for party in (COORDINATOR, *REGIONS)}
    keyring = Keyring.of(identities)
    exchange = Exchange(LocalRegionStore(tmp_path), "job-1")
    config = load_config(overrides=["launcher.step_timeout_s=1.5", "exchange.poll_interval_s=0.01"])
    links = RegionLinks(config, CoordinatorChannel(exchange, identities[COORDINATOR], keyring, "job-1"))
    links.started.update(REGIONS)
    regions = {r: RegionChannel(exchange, identities[r], keyring, "job-1") for r in REGIONS}
    return links, regions


def answer_once(channel: RegionChannel, reply: StepReply, delay_s: float = 0.0) -> threading.Thread:
    def run() -> None:
        while channel.request(1) is None:
            time.sleep(0.01)
        time.sleep(delay_s)
        channel.reply(1, reply)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_replies_are_collected_and_failures_keep_their_reason(federation):
    links, regions = federation
    answer_once(regions["eu"], StepReply(ok=True, value=None))
    answer_once(regions["us"], StepReply(ok=False, reason="model lineage failed: the store is read-only"))
    replies = links.ask(RecordModelVersion, list(REGIONS), model_version="fedcrm-churn/3")
    assert replies["eu"].ok and not replies["us"].ok and "read-only" in replies["us"].reason
    assert links.answering(list(REGIONS)) == list(REGIONS)


def test_a_silent_region_times_out_is_not_asked_again_and_its_late_answer_is_ignored(federation):
    links, regions = federation
    answer_once(regions["eu"], StepReply(ok=True, value=None))
    late = answer_once(regions["us"], StepReply(ok=True, value=None), delay_s=2.5)
    began = time.monotonic()
    replies = links.ask(RecordModelVersion, list(REGIONS), model_version="fedcrm-churn/3")
    assert 1.5 <= time.monotonic() - began < 2.5
    assert replies["eu"].ok and "no answer to record-model-version within 1.5 s" in replies["us"].reason
    late.join()
    again = links.ask(RecordModelVersion, ["us"], model_version="fedcrm-churn/4")
    assert "stopped answering" in again["us"].reason and links.answering(list(REGIONS)) == ["eu"]


def test_a_run_that_has_ended_fails_its_step_at_once(federation):
    links, regions = federation
    links.liveness_every_s = 0.05
    links.ended = lambda region: "Crashed" if region == "us" else None
    answer_once(regions["eu"], StepReply(ok=True, value=None))
    began = time.monotonic()
    replies = links.ask(RecordModelVersion, list(REGIONS), model_version="fedcrm-churn/3")
    assert time.monotonic() - began < 1.0 and "ended (Crashed)" in replies["us"].reason and replies["eu"].ok


def test_the_coordinator_keeps_the_audit_head_each_region_signed_into_its_reply(federation):
    from fedcrm.audit import AuditHead

    links, regions = federation
    head = AuditHead(sequence=41, hash="b" * 64)
    answer_once(regions["eu"], StepReply(ok=True, value=None, audit_head=head))
    answer_once(regions["us"], StepReply(ok=False, reason="read-only store"))  # an older region: no head
    links.ask(RecordModelVersion, list(REGIONS), model_version="fedcrm-churn/3")
    assert set(links.region_heads) == {"eu"}
    seen = links.region_heads["eu"]
    assert seen.head == head and seen.session == "job-1" and seen.message == "reply 1"


def test_a_region_the_coordinator_cannot_encrypt_to_fails_its_step_with_the_fix(tmp_path):
    """Keyrings out of step (distributed mode: each party has its copy): the region's entry has no
    encryption key at the coordinator. Nothing is sent in clear; the region fails with the command."""
    identities = {party: Identity.generate(party) for party in (COORDINATOR, *REGIONS)}
    keyring = Keyring.of(identities).with_key("us", identities["us"].public_key)  # us: signing key only
    exchange = Exchange(LocalRegionStore(tmp_path), "job-1")
    config = load_config(overrides=["launcher.step_timeout_s=1.5", "exchange.poll_interval_s=0.01"])
    links = RegionLinks(config, CoordinatorChannel(exchange, identities[COORDINATOR], keyring, "job-1"))
    links.started.update(REGIONS)
    answer_once(RegionChannel(exchange, identities["eu"], keyring, "job-1"), StepReply(ok=True, value=None))
    replies = links.ask(RecordModelVersion, list(REGIONS), model_version="fedcrm-churn/3")
    assert replies["eu"].ok and not replies["us"].ok
    assert "no encryption key for 'us'" in replies["us"].reason and "keys init --region us" in replies["us"].reason
    assert exchange.fetch("to-us", 1) is None and links.answering(list(REGIONS)) == ["eu"]
    links.tell(list(REGIONS), Finish())  # no error either
