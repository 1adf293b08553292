"""No row-level value leaves a region.

A user's own CRM export (with a region column and an extra PII column) is split into regions
and trained on through Prefect. Unique canary strings are planted in ids, categories, numbers
and PII; one region has duplicate ids and must be excluded with its reason. Then everything
that exists outside the regional stores (CLI output, the JSON summary, the coordinator's
store, the exchange, Prefect's database, results and logs) is scanned for the canaries: byte for
byte, and *decoded*: every JSON string, every SQLite cell, every base64 value and every
protocol message (wire format, nested envelopes) is opened and scanned again, so a canary
inside a message, a base64 field or a database cell cannot hide. Every exchange message must be
encrypted to its recipient; the test then opens each with its recipient's key (as that party
would) and scans the cleartext too.
"""

from __future__ import annotations

import base64
import binascii
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.e2e

CANARIES = ("CANARYID", "CANARY-CAT", "CANARY-NUM", "CANARYDUP", "987654.125", "canary.person")
CANARY_BYTES = (*(c.encode() for c in CANARIES), np.float64(987654.125).tobytes())
"""What the scanner looks for in every decoded layer: the text canaries, and the extreme spend value
as float64 bytes (as it would sit inside an encoded array)."""

CONTRACT = {
    "use_case": "my-leads",
    "id_column": "lead_ref",
    "target": {"column": "won", "positive": "1", "negative": "0"},
    "region_column": "crm_region",
    "numeric": {"age": {"dtype": "int", "min": 18, "max": 100}, "spend": {"dtype": "float", "min": 0, "max": 1000000, "on_missing": "impute"}},
    "categorical": {"channel": {"vocabulary": ["web", "phone", "store"]}},
    "min_rows": 50,
    "max_malformed_fraction": 0.05,
}


def _export(n_per_region: int = 300, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for region in ("EU", "US", "APAC"):
        age = rng.integers(18, 90, n_per_region)
        channel = rng.choice(["web", "phone", "store"], n_per_region)
        logit = (age - 50) / 12 + np.where(channel == "web", 1.0, -0.6)
        frames.append(pd.DataFrame({
            "crm_region": region,
            "lead_ref": [f"CANARYID-{region}-{i:05d}" for i in range(n_per_region)],
            "age": age.astype(str),
            "spend": rng.gamma(2.0, 40.0, n_per_region).round(2).astype(str),
            "channel": channel,
            "email": [f"canary.person{i}@example.com" for i in range(n_per_region)],
            "won": (rng.random(n_per_region) < 1 / (1 + np.exp(-logit))).astype(int).astype(str),
        }))
    data = pd.concat(frames, ignore_index=True)
    eu = data.index[data.crm_region == "EU"]
    data.loc[eu[:3], "channel"] = "CANARY-CAT-unseen"  # outside the vocabulary → __other__ + warning
    data.loc[eu[3:5], "age"] = "CANARY-NUM"  # unparsable → quarantined in the region
    us = data.index[data.crm_region == "US"]
    data.loc[us[:2], "lead_ref"] = "CANARYDUP-1"  # duplicate ids → US fails validation
    apac = data.index[data.crm_region == "APAC"]
    data.loc[apac[0], "spend"] = "987654.125"  # a unique, extreme numeric value
    return data


@pytest.fixture(scope="module")
def byo_job(tmp_path_factory, cli):
    work = tmp_path_factory.mktemp("byo")
    home = work / "prefect-home"
    _export().to_csv(work / "export.csv", index=False)
    (work / "contract.yaml").write_text(yaml.safe_dump(CONTRACT))
    split = cli(["data", "split", "--input", "export.csv", "--contract", "contract.yaml", "--use-case", "my-leads",
                 "--state-dir", "state"], cwd=work, prefect_home=home)
    assert split.returncode == 0, split.output
    run = cli(["run", "--config", "state/my-leads.yaml", "--set", "training.rounds=2", "--json-summary", "out/summary.json"],
              cwd=work, prefect_home=home)
    validate = cli(["validate", "--config", "state/my-leads.yaml"], cwd=work, prefect_home=home)
    quorum = cli(["run", "--config", "state/my-leads.yaml", "--set", "federation.min_regions=3", "--set", "training.rounds=1",
                  "--json-summary", "out/failed.json"], cwd=work, prefect_home=home)
    # the rest of the lifecycle on the same records: the version is made champion (the approval
    # flow is tested elsewhere), scored in every region, checked for drift, reported and audited
    from connectors.tracking import ModelRegistry

    ModelRegistry(f"sqlite:///{work / 'state' / 'mlflow.db'}", "fedcrm-my-leads").set_alias("champion", "1")
    lifecycle = {
        "score": cli(["score", "--config", "state/my-leads.yaml", "--set", "scoring.require_consent=false"], cwd=work,
                     prefect_home=home),
        "drift": cli(["drift", "--config", "state/my-leads.yaml", "--json-summary", "out/drift.json"], cwd=work,
                     prefect_home=home),
        "report": cli(["report", "--config", "state/my-leads.yaml", "--out", "out/report"], cwd=work, prefect_home=home),
        "audit": cli(["audit", "show", "--config", "state/my-leads.yaml", "--last", "50"], cwd=work, prefect_home=home),
    }
    return work, home, {"split": split, "run": run, "validate": validate, "quorum": quorum, **lifecycle}


def test_byo_export_split_by_its_region_column(byo_job):
    work, _, results = byo_job
    config = yaml.safe_load((work / "state" / "my-leads.yaml").read_text())
    assert config["federation"]["regions"] == ["apac", "eu", "us"]
    assert "fedcrm run --config" in results["split"].stdout


def test_failing_region_is_excluded_with_reason_and_job_goes_on(byo_job):
    work, _, results = byo_job
    assert results["run"].returncode == 0, results["run"].output
    summary = json.loads((work / "out" / "summary.json").read_text())
    assert summary["status"] == "completed"
    us = summary["regions"]["us"]
    assert us["status"] == "excluded" and us["excluded_at"] == "validation"
    assert "duplicate ids" in us["reason"]
    assert summary["regions"]["eu"]["status"] == summary["regions"]["apac"]["status"] == "included"
    assert summary["rounds"][-1]["participants"] == ["apac", "eu"]
    assert summary["regions"]["eu"]["n_quarantined"] is None  # 2 < k: suppressed in what leaves the region
    (own,) = (work / "state" / "regions" / "eu" / "reports").glob(f"*/{summary['job_id']}/validation.json")
    assert json.loads(own.read_text())["report"]["n_quarantined"] == 2  # the exact count stays in the region
    assert any("__other__" in w for w in summary["regions"]["eu"]["validation"]["warnings"])
    assert summary["baselines"]["central_reference"] == {
        "skipped": "the central reference runs only on the bundled public demo data"
    }, "a user's own export is never pooled"
    assert summary["regions"]["eu"]["local_only"]["auc"] > 0.5
    assert "us excluded at validation" in results["run"].stdout


def test_validate_reports_the_failing_region(byo_job):
    _, _, results = byo_job
    assert results["validate"].returncode == 1
    assert "FAIL" in results["validate"].stdout and "duplicate" in results["validate"].stdout


def test_too_few_regions_fails_clearly_with_every_reason(byo_job):
    work, _, results = byo_job
    quorum = results["quorum"]
    assert quorum.returncode == 1
    assert "min_regions" in quorum.stderr and "duplicate ids" in quorum.stderr
    assert "Traceback" not in quorum.output
    failed = json.loads((work / "out" / "failed.json").read_text())
    assert failed["status"] == "failed" and failed["rounds"] == [] and failed["metrics"] is None


def _files_outside_regions(work: Path, home: Path) -> list[Path]:
    """Everything but the regional stores: outputs, coordinator, MLflow (db + artifacts), Prefect."""
    regions = work / "state" / "regions"
    outside = [p for p in (work / "out").rglob("*") if p.is_file()]
    outside += [p for p in (work / "state").rglob("*") if p.is_file() and regions not in p.parents]
    outside += [p for p in home.rglob("*") if p.is_file()]
    return outside


_WIRE_MAGIC = b"FCW1"


def _b64(text: str) -> bytes | None:
    """``text`` base64-decoded, if it is base64 (long enough to carry a canary); else None."""
    if len(text) < 8:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def decoded_layers(blob: bytes, depth: int = 0) -> Iterator[bytes]:
    """``blob`` and everything it decodes to: JSON strings, base64 values, protocol messages
    (wire format: its JSON header and its raw blobs), recursively."""
    yield blob
    if depth > 8:
        return
    if blob.startswith(_WIRE_MAGIC):
        from fedcrm.errors import MessageRejectedError
        from fedcrm.secagg import wire

        try:
            value = wire.decode(blob)
        except MessageRejectedError:
            return
        yield from _value_layers(value, depth + 1)
        return
    try:
        value = json.loads(blob)
    except (UnicodeDecodeError, ValueError):
        return
    if isinstance(value, (dict, list)):
        yield from _value_layers(value, depth + 1)


def _value_layers(value: object, depth: int) -> Iterator[bytes]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key).encode()
            yield from _value_layers(item, depth)
    elif isinstance(value, list):
        for item in value:
            yield from _value_layers(item, depth)
    elif isinstance(value, (bytes, bytearray)):
        yield from decoded_layers(bytes(value), depth)
    elif isinstance(value, str):
        yield from decoded_layers(value.encode(), depth)
        raw = _b64(value)
        if raw is not None:
            yield from decoded_layers(raw, depth)


def _sqlite_cells(path: Path) -> Iterator[bytes]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                for cell in row:
                    if isinstance(cell, str):
                        yield cell.encode()
                        raw = _b64(cell)
                        if raw is not None:
                            yield raw
                    elif isinstance(cell, bytes):
                        yield cell


def canaries_in(blob: bytes) -> set[bytes]:
    """The canaries found in ``blob`` or in anything it decodes to."""
    return {canary for layer in decoded_layers(blob) for canary in CANARY_BYTES if canary in layer}


def _canaries_in_file(path: Path) -> set[bytes]:
    found = canaries_in(path.read_bytes())
    if path.suffix == ".db":
        found |= {c for cell in _sqlite_cells(path) for c in canaries_in(cell)}
    return found


def _exchange_messages(work: Path) -> list[tuple[Path, bytes]]:
    """Every sealed envelope in the exchange (mailboxes and the coordinator's checkpoints)."""
    messages = []
    for path in sorted((work / "state" / "exchange").rglob("*.msg")):
        document = json.loads(path.read_text())
        if "envelope" in document:
            messages.append((path, base64.b64decode(document["envelope"])))
    return messages


def _open_with_recipient_key(work: Path, data: bytes) -> bytes:
    """The cleartext body, decrypted with the recipient's key from its own store (as it would)."""
    from connectors import LocalRegionStore
    from connectors.keys import load_identity
    from fedcrm.secagg.envelope import Envelope

    envelope = Envelope.from_bytes(data)
    state = work / "state"
    store = state / "coordinator" if envelope.recipient == "coordinator" else state / "regions" / envelope.recipient
    return envelope.decrypt(load_identity(LocalRegionStore(store), envelope.recipient).encryption_key)


def test_the_scanner_finds_a_canary_inside_an_exchange_message(byo_job):
    """Positive control: a canary planted inside a real message's body, in clear or as base64, and
    posted unencrypted as the exchange stores it, is found, where a byte-for-byte scan misses it."""
    from fedcrm.secagg import wire

    work, _, _ = byo_job
    path, data = next((p, d) for p, d in _exchange_messages(work) if "from-eu" in str(p) and p.stem != "000000")
    reply = wire.decode(_open_with_recipient_key(work, data))
    assert reply["ok"] is True, "a real reply, decrypted with the coordinator's key"
    for planted in ({**reply, "reason": "CANARYID-EU-00042"},
                    {**reply, "value": {"data": base64.b64encode(b"...CANARYID-EU-00042...").decode()}}):
        envelope = wire.encode({"binding": {"job": "j", "round": 1, "phase": "reply", "sender": "eu",
                                            "recipient": "coordinator"}, "body": wire.encode(planted), "signature": b""})
        stored = json.dumps({"envelope": base64.b64encode(envelope).decode()}).encode()
        assert b"CANARYID" not in stored, "the byte-for-byte scan alone would miss it"
        assert canaries_in(stored) == {b"CANARYID"}
    database = work / "planted.db"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE t (v TEXT)")
        db.execute("INSERT INTO t VALUES (?)", (base64.b64encode(np.float64(987654.125).tobytes() * 2).decode(),))
    assert _canaries_in_file(database) == {np.float64(987654.125).tobytes()}
    database.unlink()


def test_every_exchange_message_is_encrypted_to_its_recipient(byo_job):
    """Bodies on the exchange are ciphertext; each opens with its recipient's key alone."""
    from fedcrm.secagg.envelope import SEALING, Envelope

    work, _, _ = byo_job
    messages = _exchange_messages(work)
    kinds = {Envelope.from_bytes(d).phase for _, d in messages}
    assert {"hello", "request", "reply", "checkpoint"} <= kinds, kinds
    assert len(messages) > 20
    for path, data in messages:
        envelope = Envelope.from_bytes(data)
        assert envelope.sealed == SEALING, f"{path} has a cleartext body"
        cleartext = _open_with_recipient_key(work, data)
        assert cleartext.startswith(_WIRE_MAGIC) and cleartext not in data, path
        assert not canaries_in(cleartext), f"{canaries_in(cleartext)} inside the body of {path}"


def test_canaries_are_present_inside_the_regions(byo_job):
    """Positive control: the scan below would find the canaries if they had leaked."""
    work, _, _ = byo_job
    eu = work / "state" / "regions" / "eu"
    jobs = sorted((eu / "quarantine").rglob("*.parquet"))
    assert len(jobs) == 2, "one quarantine per training job (run and quorum run); validation writes none"
    for job in jobs:
        assert (pd.read_parquet(job)["age"] == "CANARY-NUM").sum() == 2
    assert not any((eu / "work").rglob("*.parquet")), "a finished job leaves no prepared copies behind"
    assert pd.read_parquet(eu / "crm" / "my-leads.parquet")["lead_ref"].str.startswith("CANARYID").all()


def test_prefect_database_holds_the_job_logs(byo_job):
    """Positive control: the logs really reach the database the next test scans."""
    _, home, _ = byo_job
    with sqlite3.connect(home / "prefect.db") as db:
        messages = [row[0] for row in db.execute("SELECT message FROM log")]
    assert any("round 2/2" in m for m in messages)
    assert any("region us excluded at validation" in m for m in messages)


def test_no_canary_leaves_a_region(byo_job):
    work, home, results = byo_job
    for name in ("score", "report", "audit"):  # positive controls: these really ran
        assert results[name].returncode == 0, results[name].output
    assert results["drift"].returncode in (0, 1), results["drift"].output  # 1: something drifted
    assert list((work / "state" / "regions" / "eu" / "scores" / "my-leads").glob("*.parquet"))
    files = _files_outside_regions(work, home)
    assert any(p.name.startswith("compliance-v1") and p.suffix == ".html" for p in files)
    assert any(p.name == "drift.json" for p in files)
    assert any(p.name == "prefect.db" for p in files), "Prefect's database (parameters, states, logs) must be scanned"
    assert any(p.name == "summary.json" for p in files)
    assert any(p.name == "mlflow.db" for p in files), "MLflow's params, tags and metrics must be scanned"
    assert any(p.name == "input_example.json" for p in files), "MLflow's model artifacts must be scanned"
    assert any(p.suffix == ".msg" for p in files), "the exchange's messages must be scanned"
    for path in files:
        found = _canaries_in_file(path)
        assert not found, f"{found} leaked into {path.relative_to(work)}"
    for name, result in results.items():
        found = canaries_in(result.output.encode())
        assert not found, f"{found} leaked into the output of `fedcrm {name}`"
