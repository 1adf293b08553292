"""`fedcrm keys` and the run's fail-fast checks for secure aggregation."""

from __future__ import annotations

import json


def test_keys_init_all_then_show(tmp_path, invoke):
    code, out = invoke(["keys", "init", "--all", "--state-dir", "s"], tmp_path)
    assert code == 0 and out.count("created") == 4
    assert "encryption key (X25519)" in out
    keyring = json.loads((tmp_path / "s" / "federation" / "keyring.json").read_text())
    assert set(keyring["parties"]) == {"eu", "us", "apac", "coordinator"}

    code, out = invoke(["keys", "init", "--region", "eu", "--state-dir", "s"], tmp_path)
    assert code == 0 and "existing" in out and "created" not in out

    code, out = invoke(["keys", "show", "--state-dir", "s"], tmp_path)
    assert code == 0 and out.count("matches") == 4


def test_a_rotated_key_shows_as_registered_again(tmp_path, invoke):
    invoke(["keys", "init", "--all", "--state-dir", "s"], tmp_path)
    before = json.loads((tmp_path / "s" / "federation" / "keyring.json").read_text())["parties"]["us"]
    code, _ = invoke(["keys", "init", "--region", "us", "--rotate", "--state-dir", "s"], tmp_path)
    after = json.loads((tmp_path / "s" / "federation" / "keyring.json").read_text())["parties"]["us"]
    assert code == 0 and before != after


def test_keys_init_refuses_an_unknown_region_or_nothing(tmp_path, invoke):
    code, out = invoke(["keys", "init", "--region", "mars", "--state-dir", "s"], tmp_path)
    assert code == 2 and "mars" in out and "federation.regions" in out
    code, out = invoke(["keys", "init", "--state-dir", "s"], tmp_path)
    assert code == 2 and "--region" in out


def test_run_without_a_keyring_fails_fast_with_the_fix(tmp_path, invoke):
    # the regions' records are there (an empty state dir would be a first run: the demo sets itself up)
    assert invoke(["data", "split", "--use-case", "churn", "--state-dir", "s"], tmp_path)[0] == 0
    (tmp_path / "s" / "federation" / "keyring.json").unlink()
    code, out = invoke(["run", "--use-case", "churn", "--state-dir", "s"], tmp_path)
    assert code == 2 and "keys init" in out and "Traceback" not in out


def test_run_refuses_a_robust_strategy_under_secure_aggregation(tmp_path, invoke):
    code, out = invoke(["run", "--use-case", "churn", "--state-dir", "s", "--set", "strategy.name=median"], tmp_path)
    assert code == 2 and "secure_aggregation.enabled=false" in out


def test_run_refuses_unbounded_numeric_columns_under_secure_aggregation(tmp_path, invoke):
    (tmp_path / "c.yaml").write_text(
        "use_case: tiny\nid_column: id\ntarget: {column: y, positive: 'yes', negative: 'no'}\n"
        "numeric: {spend: {dtype: float, min: 0}}\ncategorical: {}\n"
    )
    code, out = invoke(["run", "--use-case", "tiny", "--contract", "c.yaml", "--state-dir", "s"], tmp_path)
    assert code == 2 and "spend" in out and "min and max" in out


def test_budget_show_lists_each_region_from_its_ledger(tmp_path, invoke):
    from datetime import datetime, timezone

    from connectors import LocalRegionStore
    from connectors.ledger import updating_ledger
    from fedcrm.privacy.accountant import PrivacyEvent
    from fedcrm.privacy.ledger import PlannedSpend

    event = PrivacyEvent(noise_multiplier=1.5, sample_rate=0.1, steps=30)
    with updating_ledger(LocalRegionStore(tmp_path / "s" / "regions" / "eu"), "churn", budget_epsilon=8.0, delta=1e-5,
                         accountant="rdp") as ledger:
        ledger.reserve("job-a", "churn", [PlannedSpend(purpose="federated training", event=event)], datetime.now(timezone.utc))
        ledger.spend("job-a", "churn", "federated training", event.model_copy(update={"steps": 10}), datetime.now(timezone.utc))
        status = ledger.status()

    code, out = invoke(["budget", "show", "--use-case", "churn", "--state-dir", "s"], tmp_path)

    assert code == 0
    assert status.dashboard_line() in out and f"{status.spent:.2f}" in out and f"{status.reserved:.2f}" in out
    assert "job-a" in out and "running / reserved" in out
    assert out.count("no ledger yet") == 2  # us and apac have not run a private job


def test_a_region_whose_store_is_a_database_keeps_its_key_there(tmp_path, invoke, fresh_database):
    import sqlalchemy as sa

    config = tmp_path / "fedcrm.yaml"
    config.write_text(f"federation: {{min_regions: 1, regions: {{eu: {{store: '{fresh_database}'}}}}}}\n")
    code, out = invoke(["keys", "init", "--region", "eu", "--config", str(config), "--state-dir", "s"], tmp_path)
    assert code == 0 and "created" in out, out
    code, out = invoke(["keys", "show", "--config", str(config), "--state-dir", "s"], tmp_path)
    assert code == 0 and out.count("matches") == 1, out
    engine = sa.create_engine(fresh_database)
    with engine.connect() as connection:
        keys = connection.execute(sa.text("SELECT key FROM fedcrm_region_store WHERE key LIKE '%identity%'")).scalars().all()
    engine.dispose()
    assert keys and not (tmp_path / "s" / "regions" / "eu").exists()  # in the database, not in a folder


def _make_legacy(state) -> None:
    """Rewrite every identity and the keyring as an older fedcrm left them (signing keys only)."""
    from fedcrm.secagg.identity import public_key_text
    from connectors import LocalRegionStore
    from connectors.keys import IDENTITY_KEY, load_identity

    parties = {}
    for root in [*(state / "regions").iterdir(), state / "coordinator"]:
        party = "coordinator" if root.name == "coordinator" else root.name
        store = LocalRegionStore(root)
        identity = load_identity(store, party)
        document = {k: v for k, v in identity.to_document().items() if not k.startswith("encryption")}
        store.write_json(IDENTITY_KEY, {**document, "format": "fedcrm-identity-v1"})
        parties[party] = public_key_text(identity.public_key)
    (state / "federation" / "keyring.json").write_text(json.dumps({"format": "fedcrm-keyring-v1", "parties": parties}))


def test_an_older_keyring_is_a_clear_error_until_keys_init_adds_the_encryption_keys(tmp_path, invoke):
    invoke(["keys", "init", "--all", "--state-dir", "s"], tmp_path)
    signing_before = {p: e["signing"] for p, e in
                      json.loads((tmp_path / "s" / "federation" / "keyring.json").read_text())["parties"].items()}
    _make_legacy(tmp_path / "s")

    code, out = invoke(["run", "--use-case", "churn", "--state-dir", "s"], tmp_path)
    assert code == 2 and "no encryption key" in out and "fedcrm keys init --coordinator" in out, out
    assert "Traceback" not in out
    code, out = invoke(["keys", "show", "--state-dir", "s"], tmp_path)
    assert code == 0 and "matches" not in out and "keys init" in out, out

    code, out = invoke(["keys", "init", "--all", "--state-dir", "s"], tmp_path)
    assert code == 0 and out.count("added") == 4, out
    keyring = json.loads((tmp_path / "s" / "federation" / "keyring.json").read_text())
    assert keyring["format"] == "fedcrm-keyring-v2"
    assert {p: e["signing"] for p, e in keyring["parties"].items()} == signing_before  # the same identities
    assert all("encryption" in e for e in keyring["parties"].values())
    code, out = invoke(["keys", "show", "--state-dir", "s"], tmp_path)
    assert code == 0 and out.count("matches") == 4, out
