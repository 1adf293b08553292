"""Identity keys in each party's own store, public keys in the keyring."""

from __future__ import annotations

import json
import stat

import pytest

from connectors import LocalRegionStore
from connectors.keys import IDENTITY_KEY, check_registered, create_identity, load_identity, read_keyring, register
from fedcrm.errors import IdentityError


def test_create_register_and_load(tmp_path):
    store, keyring_path = LocalRegionStore(tmp_path / "eu"), tmp_path / "federation" / "keyring.json"
    identity, created = create_identity(store, "eu")
    register(keyring_path, identity)

    again, created_again = create_identity(store, "eu")
    keyring = read_keyring(keyring_path)

    assert created and not created_again
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
    rotated, created = create_identity(store, "eu", rotate=True)
    assert created
    with pytest.raises(IdentityError, match="not the one the keyring lists"):
        check_registered(read_keyring(path), rotated)
    register(path, rotated)
    check_registered(read_keyring(path), rotated)


def test_a_corrupt_keyring_entry_is_an_identity_error(tmp_path):
    path = tmp_path / "keyring.json"
    path.write_text(json.dumps({"format": "fedcrm-keyring-v1", "parties": {"eu": "not-base64!"}}))
    with pytest.raises(IdentityError, match="not a base64 Ed25519 key"):
        read_keyring(path)
