"""Salesforce, through simple-salesforce's REST client: SOQL extraction with field mapping,
incremental extraction by ``LastModifiedDate`` watermark, pagination (``nextRecordsUrl``), and
score write-back through ``composite/sobjects`` PATCH in batches of 200 with per-record errors.

Handled: an expired session (401: the token is read again from the environment once, then a
clear error), the request limit (403 ``REQUEST_LIMIT_EXCEEDED``: retried with backoff, then a
clear error) and a malformed query (400: the error names the field mapping to fix). The access
token never appears in an error or a log.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pandas as pd

from fedcrm.config import SalesforceSource
from fedcrm.errors import ConnectorError

T = TypeVar("T")
BATCH = 200  # composite/sobjects takes at most 200 records per request
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(__[a-z]+)?$")


@dataclass
class WriteBackReport:
    """Counts, and per-record errors (record id, Salesforce error code and message)."""

    written: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)


class SalesforceConnector:
    def __init__(self, spec: SalesforceSource, *, environ: dict[str, str] | None = None, sleep: Callable[[float], None] = time.sleep,
                 limit_retries: int = 3):
        bad = [name for name in [spec.object, *spec.fields.values()] if not _NAME.match(name)]
        if bad:
            raise ConnectorError(f"not Salesforce API names: {bad}", source=f"Salesforce {spec.instance_url}",
                                 hint="use API names such as Lead, Age__c")
        self.spec, self.environ, self.sleep, self.limit_retries = spec, environ if environ is not None else os.environ, sleep, limit_retries
        self._client = None

    @property
    def description(self) -> str:
        return f"Salesforce {self.spec.object} at {urlsplit(self.spec.instance_url).netloc}"

    def _connect(self) -> Any:
        import requests
        from simple_salesforce import Salesforce

        if self.spec.session_id_secret:
            from connectors.secrets import read_secret

            token = read_secret(self.spec.session_id_secret)
        else:
            token = self.environ.get(self.spec.session_id_env)
        if not token:
            raise ConnectorError(f"no Salesforce access token in ${self.spec.session_id_env}", source=self.description,
                                 hint="set it in the region's worker environment, or name a Prefect Secret block "
                                      "in the source's session_id_secret")
        session = requests.Session()
        session.trust_env = False  # a CA bundle from the environment must not override ours
        session.verify = self.spec.ca_bundle or True
        return Salesforce(instance_url=self.spec.instance_url, session_id=token, session=session,
                          version=self.spec.api_version)

    def _call(self, action: Callable[[Any], T]) -> T:
        from simple_salesforce.exceptions import (
            SalesforceExpiredSession,
            SalesforceMalformedRequest,
            SalesforceRefusedRequest,
        )

        renewed, limited = False, 0
        while True:
            try:
                if self._client is None:
                    self._client = self._connect()
                return action(self._client)
            except SalesforceExpiredSession:
                if renewed:
                    raise ConnectorError("the Salesforce session expired or is invalid (401 INVALID_SESSION_ID)",
                                         source=self.description,
                                         hint=f"refresh the access token in ${self.spec.session_id_env}") from None
                renewed, self._client = True, None  # the token may have been rotated: read it again
            except SalesforceRefusedRequest as exc:
                if "REQUEST_LIMIT_EXCEEDED" not in str(exc.content):
                    raise ConnectorError("Salesforce refused the request (403)", source=self.description,
                                         hint="check the integration user's object and field permissions") from None
                if limited >= self.limit_retries:
                    raise ConnectorError("the org's API request limit is exhausted (403 REQUEST_LIMIT_EXCEEDED)",
                                         source=self.description,
                                         hint="retry after the org's 24-hour window, or raise its API limit") from None
                self.sleep(2.0 * 2**limited)
                limited += 1
            except SalesforceMalformedRequest as exc:
                codes = sorted({e.get("errorCode", "") for e in exc.content} if isinstance(exc.content, list) else set())
                raise ConnectorError(f"Salesforce rejected the query (400 {', '.join(codes) or 'malformed'})",
                                     source=self.description,
                                     hint="check `source.fields` (API names the integration user can read) and "
                                          "`source.where`") from None

    def soql(self, since: datetime | None = None) -> str:
        fields = list(dict.fromkeys([*self.spec.fields.values(), "LastModifiedDate"]))
        conditions = [f"({self.spec.where})"] if self.spec.where else []
        if since is not None:
            conditions.append(f"LastModifiedDate > {since.strftime('%Y-%m-%dT%H:%M:%SZ')}")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return f"SELECT {', '.join(fields)} FROM {self.spec.object}{where} ORDER BY LastModifiedDate"

    def read_records(self, since: datetime | None = None) -> pd.DataFrame:
        """Every record (or those modified after ``since``), columns renamed to the contract's."""
        records = self._call(lambda sf: list(sf.query_all_iter(self.soql(since))))
        renamed = {sf_field: column for column, sf_field in self.spec.fields.items()}
        rows = [{renamed[k]: v for k, v in r.items() if k in renamed} for r in records]
        frame = pd.DataFrame(rows, columns=list(self.spec.fields))
        frame.attrs["watermark"] = max((r["LastModifiedDate"] for r in records), default=None)
        return frame

    def write_back(self, field_name: str, scores: Iterable[tuple[str, Any]]) -> WriteBackReport:
        """PATCH ``field_name`` of each (record id, value), 200 per request; failures are reported per record."""
        if not _NAME.match(field_name):
            raise ConnectorError(f"{field_name!r} is not a Salesforce API name", source=self.description)
        report, items = WriteBackReport(), list(scores)
        for start in range(0, len(items), BATCH):
            batch = items[start:start + BATCH]
            body = {"allOrNone": False, "records": [
                {"attributes": {"type": self.spec.object}, "id": record_id, field_name: value} for record_id, value in batch]}
            results = self._call(lambda sf, body=body: sf.restful("composite/sobjects", method="PATCH", json=body))
            for (record_id, _), result in zip(batch, results, strict=True):
                if result.get("success"):
                    report.written += 1
                else:
                    error = (result.get("errors") or [{}])[0]
                    report.failed.append({"id": record_id, "code": error.get("statusCode", "UNKNOWN"),
                                          "message": error.get("message", "")})
        return report
