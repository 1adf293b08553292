"""The Salesforce connector against a faithful local fake of the REST API over HTTPS."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from fakes.salesforce import API, FakeSalesforce

from connectors.salesforce import SalesforceConnector
from fedcrm.config import SalesforceSource
from fedcrm.errors import ConnectorError

TOKEN = "00Dxx0000001gPL!AR8AQJXg5"


def leads(n: int) -> list[dict]:
    return [{"Id": f"00Q{i:015d}", "Age__c": 20 + i % 50, "LeadSource": ["Web", "Phone"][i % 2], "IsConverted": i % 3 == 0,
             "Score__c": None, "LastModifiedDate": f"2026-0{1 + i % 9}-01T00:00:00.000+0000"} for i in range(n)]


@pytest.fixture
def org(tmp_path):
    with FakeSalesforce(tmp_path, objects={"Lead": leads(450)}, token=TOKEN, page_size=200) as fake:
        yield fake


def connector(org, **spec) -> tuple[SalesforceConnector, list[float]]:
    waits: list[float] = []
    source = SalesforceSource(kind="salesforce", instance_url=org.url, object="Lead", ca_bundle=str(org.cert),
                              fields={"id": "Id", "age": "Age__c", "channel": "LeadSource"}, **spec)
    return SalesforceConnector(source, environ={"SALESFORCE_SESSION_ID": TOKEN}, sleep=waits.append), waits


def test_every_page_is_read_and_mapped_to_the_contract(org):
    sf, _ = connector(org)
    records = sf.read_records()
    assert len(records) == 450 and list(records.columns) == ["id", "age", "channel"]
    assert sum(path.startswith(f"{API}/query/01g") for _, path in org.requests) == 2  # pages 2 and 3 by nextRecordsUrl
    assert records.attrs["watermark"] == "2026-09-01T00:00:00.000+0000"


def test_incremental_extraction_and_a_condition(org):
    sf, _ = connector(org, where="IsConverted = false")
    since = datetime(2026, 7, 15, tzinfo=timezone.utc)
    records = sf.read_records(since=since)
    expected = [r for r in org.objects["Lead"] if not r["IsConverted"] and r["LastModifiedDate"] > "2026-07-15"]
    assert sorted(records["id"]) == sorted(r["Id"] for r in expected) and 0 < len(records) < 450
    assert "LastModifiedDate > 2026-07-15T00:00:00Z" in sf.soql(since)


def test_scores_are_written_back_in_batches_of_200_with_per_record_errors(org):
    sf, _ = connector(org)
    scores = [(r["Id"], 0.5) for r in org.objects["Lead"][:430]] + [("00Q999999999999999", 0.9)]
    report = sf.write_back("Score__c", scores)
    assert report.written == 430 and report.failed == [
        {"id": "00Q999999999999999", "code": "INVALID_CROSS_REFERENCE_KEY", "message": "invalid cross reference id"}]
    assert sum(method == "PATCH" for method, _ in org.requests) == 3  # 200 + 200 + 31
    assert all(r["Score__c"] == 0.5 for r in org.objects["Lead"][:430]) and org.objects["Lead"][430]["Score__c"] is None


def test_an_expired_session_reads_the_rotated_token_once_then_says_what_to_do(org):
    sf, _ = connector(org)
    sf.read_records()
    org.tokens = {"ROTATED"}
    sf.environ["SALESFORCE_SESSION_ID"] = "ROTATED"
    assert len(sf.read_records()) == 450  # re-read from the environment after a 401
    org.tokens = set()
    with pytest.raises(ConnectorError, match="session expired or is invalid") as caught:
        sf.read_records()
    assert "ROTATED" not in str(caught.value) and "SALESFORCE_SESSION_ID" in str(caught.value)


def test_the_request_limit_is_retried_with_backoff_then_reported(org):
    sf, waits = connector(org)
    org.limit_exceeded = 2
    assert len(sf.read_records()) == 450 and waits == [2.0, 4.0]
    org.limit_exceeded = 10
    with pytest.raises(ConnectorError, match="REQUEST_LIMIT_EXCEEDED"):
        sf.read_records()


def test_a_malformed_query_names_the_mapping_to_fix(org):
    sf, _ = connector(org)
    sf.spec = sf.spec.model_copy(update={"fields": {"id": "Id", "age": "Age_c"}})
    with pytest.raises(ConnectorError, match=r"400 INVALID_FIELD.*\n.*source.fields"):
        sf.read_records()
    with pytest.raises(ConnectorError, match="not Salesforce API names"):
        SalesforceConnector(SalesforceSource(kind="salesforce", instance_url=org.url, object="Lead; DROP", fields={"id": "Id"}))
    with pytest.raises(ConnectorError, match=r"no Salesforce access token in \$SALESFORCE_SESSION_ID"):
        SalesforceConnector(sf.spec, environ={}).read_records()
