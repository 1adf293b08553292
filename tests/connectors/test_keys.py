"""Identity keys in each party's own store, public keys in the keyring."""

from __future__ import annotations

import json
import stat

import pytest

from connectors import LocalRegionStore
from connectors.keys import IDENTITY_KEY, check_registered, create_identity, load_identity, read_keyring, register
from fedcrm.errors import IdentityError
from fedcrm.secagg.identity import Identity, public_key_text


def test_create_register_and_load(tmp_path):
    store, keyring_path = LocalRegionStore(tmp_path / "eu"), tmp_path / "federation" / "keyring.json"
    identity, status = create_identity(store, "eu")
    register(keyring_path, identity)

    again, status_again = create_identity(store, "eu")
    keyring = read_keyring(keyring_path)

    assert (status, status_again) == ("created", "existing")
    assert keyring.matches(load_identity(store, "eu")) and keyring.matches(again)
    mode = stat.S_IMODE((tmp_path / "eu" / IDENTITY_KEY).stat().st_mode)
    assert mode & 0o077 == 0  # the private key is readable by its owner only
    assert "PRIVATE" not in keyring_path.read_text() and set(json.loads(keyring_path.read_text())["parties"]) == {"eu"}


def test_a_missing_identity_says_how_to_create_it(tmp_path):
    with pytest.raises(IdentityError, match="keys init --region eu"):
        load_identity(LocalRegionStore(tmp_path / "eu"), "eu")
    with pytest.raises(IdentityError, match="keys init --coordinator"):
        load_identity(LocalRegionStore(tmp_path / "c"), "coordinator")


def test_a_missing_keyring_says_how_to_create_it(tmp_path):
    with pytest.raises(IdentityError, match="keys init --all"):
        read_keyring(tmp_path / "nowhere.json")


def test_a_rotated_key_no_longer_matches_until_re_registered(tmp_path):
    store, path = LocalRegionStore(tmp_path / "eu"), tmp_path / "keyring.json"
    first, _ = create_identity(store, "eu")
    register(path, first)
    rotated, status = create_identity(store, "eu", rotate=True)
    assert status == "created"
    with pytest.raises(IdentityError, match="not the one the keyring lists"):
        check_registered(read_keyring(path), rotated)
    register(path, rotated)
    check_registered(read_keyring(path), rotated)


def test_a_corrupt_keyring_entry_is_an_identity_error(tmp_path):
    path = tmp_path / "keyring.json"
    path.write_text(json.dumps({"format": "fedcrm-keyring-v1", "parties": {"eu": "not-base64!"}}))
    with pytest.raises(IdentityError, match="not a base64 Ed25519 key"):
        read_keyring(path)


def _legacy_party(tmp_path, party: str = "eu"):
    """A store and keyring as an older fedcrm left them: a signing key only, keyring format v1."""
    store, path = LocalRegionStore(tmp_path / party), tmp_path / "keyring.json"
    identity, _ = create_identity(store, party)
    document = {k: v for k, v in identity.to_document().items() if not k.startswith("encryption")}
    store.write_json(IDENTITY_KEY, {**document, "format": "fedcrm-identity-v1"})
    path.write_text(json.dumps({"format": "fedcrm-keyring-v1", "parties": {party: public_key_text(identity.public_key)}}))
    return store, path, identity


def test_an_identity_without_an_encryption_key_says_how_to_add_one(tmp_path):
    store, _, _ = _legacy_party(tmp_path)
    with pytest.raises(IdentityError, match="no encryption key") as raised:
        load_identity(store, "eu")
    assert "fedcrm keys init --region eu" in raised.value.hint and "--rotate" not in raised.value.hint


def test_a_keyring_without_encryption_keys_says_which_command_fixes_it(tmp_path):
    store, path, _ = _legacy_party(tmp_path)
    upgraded, status = create_identity(store, "eu")  # what `fedcrm keys init --region eu` does first
    keyring = read_keyring(path)  # the old format still reads, signing keys only
    with pytest.raises(IdentityError, match="no encryption key for 'eu'.*older fedcrm") as raised:
        check_registered(keyring, upgraded)
    assert "fedcrm keys init --region eu" in raised.value.hint
    with pytest.raises(IdentityError, match="no encryption key for 'eu'"):
        keyring.encryption_key("eu")


def test_keys_init_upgrades_a_legacy_identity_and_keyring_keeping_the_signing_key(tmp_path):
    store, path, legacy = _legacy_party(tmp_path)
    upgraded, status = create_identity(store, "eu")
    register(path, upgraded)
    assert status == "upgraded"
    assert public_key_text(upgraded.public_key) == public_key_text(legacy.public_key)  # still the same party
    assert load_identity(store, "eu").encryption_public_key.public_bytes_raw() == upgraded.encryption_public_key.public_bytes_raw()
    keyring = read_keyring(path)
    check_registered(keyring, upgraded)
    stored = json.loads(path.read_text())
    assert stored["format"] == "fedcrm-keyring-v2" and set(stored["parties"]["eu"]) == {
        "signing", "encryption", "encryption_signature"}
    assert "PRIVATE" not in path.read_text()


def test_an_encryption_key_not_signed_by_its_party_is_refused(tmp_path):
    store, path = LocalRegionStore(tmp_path / "eu"), tmp_path / "keyring.json"
    eu, _ = create_identity(store, "eu")
    other, _ = create_identity(LocalRegionStore(tmp_path / "other"), "eu")
    register(path, eu)
    document = json.loads(path.read_text())
    document["parties"]["eu"]["encryption"] = public_key_text(other.encryption_public_key)  # swapped in
    path.write_text(json.dumps(document))
    with pytest.raises(IdentityError, match="not signed by 'eu'"):
        read_keyring(path)


def test_a_re_created_encryption_key_no_longer_matches_until_re_registered(tmp_path):
    store, path = LocalRegionStore(tmp_path / "eu"), tmp_path / "keyring.json"
    eu, _ = create_identity(store, "eu")
    register(path, eu)
    with pytest.raises(IdentityError, match="encryption key is not the one the keyring lists"):
        check_registered(read_keyring(path), Identity.generate("eu").with_signing_key(eu.private_key))
