"""What a regional deployment run is given as its parameter."""

from __future__ import annotations

import json

from fedcrm.config import SqlSource, load_config
from flows.launch import settings_for_regions


def test_no_region_location_or_credential_becomes_a_flow_parameter(tmp_path):
    config = load_config(overrides=[f"state_dir={tmp_path}"])
    apac = config.federation.regions["apac"].model_copy(update={
        "source": SqlSource(kind="sql", url="postgresql+psycopg://crm:s3cret@db.apac.internal/crm", table="leads"),
        "store": "s3://apac-private/fedcrm", "work_pool": "crm-apac-sg"})
    config = config.model_copy(update={"federation": config.federation.model_copy(
        update={"regions": {**config.federation.regions, "apac": apac}}),
        "tracking": config.tracking.model_copy(update={"uri": "postgresql://mlflow:hunter2@db/mlflow"})})
    sent = settings_for_regions(config, tracking=False)  # a job's regional run: it never reads MLflow
    assert "s3cret" not in json.dumps(sent) and "apac-private" not in json.dumps(sent)
    assert "hunter2" not in json.dumps(sent)
    scoring = settings_for_regions(config)  # a scoring run loads the champion from MLflow
    assert scoring["tracking"]["uri"] == "postgresql://mlflow:hunter2@db/mlflow" and "s3cret" not in json.dumps(scoring)
    assert sent["federation"]["regions"]["apac"]["work_pool"] == "crm-apac-sg"  # the job's own settings stay
    assert sent["training"] == config.model_dump(mode="json")["training"]


def test_the_audit_head_in_a_hello_is_taken_out_of_the_residency_evidence():
    from fedcrm.audit import AuditHead
    from flows.launch import _head_in

    evidence = {"region": "eu", "host": "h", "audit_head": "41:" + "c" * 64}
    assert _head_in(evidence) == AuditHead(sequence=41, hash="c" * 64) and "audit_head" not in evidence
    assert _head_in({"region": "eu"}) is None  # a region from before heads were sent
    assert _head_in({"audit_head": "41:not-a-hash"}) is None


def test_a_failure_notice_posted_while_the_hello_was_read_is_the_reason_not_the_malformed_hello(tmp_path):
    """A region that cannot sign posts its reason where its hello would be; one that lands between the
    coordinator's two looks made the hello read as malformed (bad magic), hiding the region's own reason."""
    from connectors.exchange import open_exchange
    from fedcrm.errors import FedcrmError, MessageRejectedError
    from flows.launch import _why_not_started

    config = load_config(overrides=[f"state_dir={tmp_path}"])
    exchange = open_exchange(config, "job1")
    malformed = MessageRejectedError("malformed protocol message (bad magic)")
    assert "bad magic" in _why_not_started(malformed, exchange, "eu")  # no notice: the rejection is the reason
    exchange.post_unsigned_failure("eu", "'eu''s identity key is not the one the keyring lists")
    reason = _why_not_started(malformed, exchange, "eu")
    assert "not the one the keyring lists" in reason and "bad magic" not in reason
    other = FedcrmError("its residency could not be confirmed")
    assert _why_not_started(other, exchange, "eu") == str(other)  # only a rejected hello looks again
