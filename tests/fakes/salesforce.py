"""A faithful local fake of the Salesforce REST API (the parts fedcrm uses), over HTTPS on loopback.

Endpoints, payloads and errors follow Salesforce's REST API (v59.0):

* ``GET /services/data/v59.0/query/?q=SOQL`` → ``{"totalSize", "done", "records", "nextRecordsUrl"?}``,
  records carrying ``attributes``; pages of ``page_size``; ``GET .../query/<locator>-<offset>`` for the next.
* ``PATCH /services/data/v59.0/composite/sobjects`` → one ``{"id", "success", "errors"}`` per record;
  more than 200 records → 400 ``EXCEEDED_ID_LIMIT``.
* 401 ``INVALID_SESSION_ID`` for an unknown bearer token; 403 ``REQUEST_LIMIT_EXCEEDED`` while
  ``limit_exceeded`` > 0; 400 ``INVALID_FIELD`` / ``INVALID_TYPE`` / ``MALFORMED_QUERY``.

The SOQL understood: ``SELECT f1, f2 FROM Object [WHERE cond AND cond ...] [ORDER BY LastModifiedDate]``
with conditions ``(Field = 'text' | true | false)`` and ``LastModifiedDate > 2026-01-01T00:00:00Z``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import ssl
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

API = "/services/data/v59.0"
_SOQL = re.compile(r"^SELECT (?P<fields>.+?) FROM (?P<object>\w+)(?: WHERE (?P<where>.+?))?(?: ORDER BY (?P<order>\w+))?$",
                   re.IGNORECASE)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake.my.salesforce.com")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class FakeSalesforce:
    def __init__(self, directory: Path, *, objects: dict[str, list[dict]], token: str = "FAKE_TOKEN", page_size: int = 2000,
                 validation_rules: dict[str, str] | None = None):
        self.objects, self.tokens, self.page_size = objects, {token}, page_size
        self.validation_rules = validation_rules or {}  # record id -> message of a validation rule it fails
        self.limit_exceeded = 0
        self.requests: list[tuple[str, str]] = []
        self._cursors: dict[str, list[dict]] = {}
        self.cert, key = self_signed_certificate(directory)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeSalesforce:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- the API ---------------------------------------------------------------------------
    def _query(self, soql: str) -> tuple[int, object]:
        match = _SOQL.match(soql.strip())
        if not match:
            return 400, [{"message": "unexpected token", "errorCode": "MALFORMED_QUERY"}]
        obj = match["object"]
        if obj not in self.objects:
            return 400, [{"message": f"sObject type '{obj}' is not supported.", "errorCode": "INVALID_TYPE"}]
        rows = self.objects[obj]
        known = set().union(*(r.keys() for r in rows)) if rows else {"Id"}
        fields = [f.strip() for f in match["fields"].split(",")]
        unknown = [f for f in fields if f not in known]
        if unknown:
            return 400, [{"message": f"No such column '{unknown[0]}' on entity '{obj}'.", "errorCode": "INVALID_FIELD"}]
        for condition in (match["where"].split(" AND ") if match["where"] else []):
            condition = condition.strip().strip("()")
            field, op, value = re.match(r"(\w+)\s*(=|>)\s*(.+)", condition).groups()
            if op == ">":
                rows = [r for r in rows if r[field] > value.replace("Z", ".000+0000")]
            else:
                wanted = {"true": True, "false": False}.get(value.lower(), value.strip("'"))
                rows = [r for r in rows if r.get(field) == wanted]
        if match["order"]:
            rows = sorted(rows, key=lambda r: r[match["order"]])
        records = [{"attributes": {"type": obj, "url": f"{API}/sobjects/{obj}/{r['Id']}"}, **{f: r.get(f) for f in fields}}
                   for r in rows]
        locator = f"01g{uuid.uuid4().hex[:15]}"
        self._cursors[locator] = records
        return 200, self._page(locator, 0)

    def _page(self, locator: str, offset: int) -> dict:
        records = self._cursors[locator]
        page = records[offset:offset + self.page_size]
        done = offset + self.page_size >= len(records)
        body = {"totalSize": len(records), "done": done, "records": page}
        if not done:
            body["nextRecordsUrl"] = f"{API}/query/{locator}-{offset + self.page_size}"
        return body

    def _update(self, payload: dict) -> tuple[int, object]:
        records = payload.get("records", [])
        if len(records) > 200:
            return 400, [{"message": "Maximum number of records is 200", "errorCode": "EXCEEDED_ID_LIMIT"}]
        results = []
        for record in records:
            obj = record.get("attributes", {}).get("type")
            target = next((r for r in self.objects.get(obj, []) if r["Id"] == record.get("id")), None)
            if target is None:
                results.append({"id": record.get("id"), "success": False, "errors": [
                    {"statusCode": "INVALID_CROSS_REFERENCE_KEY", "message": "invalid cross reference id", "fields": []}]})
                continue
            fields = {k: v for k, v in record.items() if k not in ("attributes", "id")}
            if target["Id"] in self.validation_rules:  # as an org's validation rule rejects one record
                results.append({"id": target["Id"], "success": False, "errors": [
                    {"statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": self.validation_rules[target["Id"]],
                     "fields": []}]})
                continue
            locked = [k for k in fields if k == "Id" or k not in target]
            if locked:
                results.append({"id": target["Id"], "success": False, "errors": [
                    {"statusCode": "INVALID_FIELD_FOR_INSERT_UPDATE", "message": f"Unable to update {locked[0]}",
                     "fields": locked}]})
                continue
            target.update(fields)
            target["LastModifiedDate"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
            results.append({"id": target["Id"], "success": True, "errors": []})
        return 200, results

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json;charset=UTF-8")
                self.send_header("Sforce-Limit-Info", "api-usage=10/15000")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str) -> None:
                fake.requests.append((method, self.path))
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                if token not in fake.tokens:
                    return self._send(401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
                if fake.limit_exceeded > 0:
                    fake.limit_exceeded -= 1
                    return self._send(403, [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
                url = urlsplit(self.path)
                if method == "GET" and url.path == f"{API}/query/":
                    return self._send(*fake._query(parse_qs(url.query)["q"][0]))
                if method == "GET" and url.path.startswith(f"{API}/query/"):
                    locator, _, offset = url.path.rsplit("/", 1)[1].rpartition("-")
                    if locator not in fake._cursors:
                        return self._send(400, [{"message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR"}])
                    return self._send(200, fake._page(locator, int(offset)))
                if method == "PATCH" and url.path == f"{API}/composite/sobjects":
                    length = int(self.headers.get("Content-Length", 0))
                    return self._send(*fake._update(json.loads(self.rfile.read(length))))
                return self._send(404, [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}])

            def do_GET(self) -> None:  # noqa: N802
                self._route("GET")

            def do_PATCH(self) -> None:  # noqa: N802
                self._route("PATCH")

        return Handler
