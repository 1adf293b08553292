"""Where identity keys live: each party's signing and encryption keys in its own store, public keys in the keyring.

The keyring is federation configuration (public keys only). In embedded mode it is a JSON file
under the state directory; in distributed mode every party gets the same file (or the same
``secure_aggregation.keyring`` path) from the federation's configuration repository.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from connectors.base import RegionStore
from fedcrm.errors import ConnectorError, IdentityError
from fedcrm.secagg.identity import (
    LEGACY_IDENTITY_FORMAT, Identity, Keyring, public_key_text, signing_key_from_document,
)

IDENTITY_KEY = "identity/ed25519.json"
"""The party's identity document (its Ed25519 signing key and, beside it, its X25519 encryption key)."""

IdentityStatus = Literal["created", "existing", "upgraded"]


def load_identity(store: RegionStore, party: str) -> Identity:
    if not store.exists(IDENTITY_KEY):
        flag = "--coordinator" if party == "coordinator" else f"--region {party}"
        raise IdentityError(
            f"{party!r} has no identity key in its store ({store.description})",
            hint=f"create it once with `fedcrm keys init {flag}`",
        )
    return Identity.from_document(store.read_json(IDENTITY_KEY), expected_party=party)


def create_identity(store: RegionStore, party: str, *, rotate: bool = False) -> tuple[Identity, IdentityStatus]:
    """The party's identity, created if missing (or replaced with ``rotate``); returns (identity, status).

    An identity from before message bodies were encrypted (signing key only) is ``upgraded``: it
    keeps its signing key and gains an encryption key, so the party stays who it was."""
    if store.exists(IDENTITY_KEY) and not rotate:
        document = store.read_json(IDENTITY_KEY)
        if isinstance(document, dict) and document.get("format") == LEGACY_IDENTITY_FORMAT:
            signing = signing_key_from_document(document, expected_party=party)
            identity = Identity.generate(party).with_signing_key(signing)
            store.write_json(IDENTITY_KEY, identity.to_document())
            return identity, "upgraded"
        return load_identity(store, party), "existing"
    identity = Identity.generate(party)
    store.write_json(IDENTITY_KEY, identity.to_document())
    return identity, "created"


def read_keyring(path: Path) -> Keyring:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IdentityError(
            f"the federation keyring {path} does not exist",
            hint="register the parties with `fedcrm keys init --all` (embedded) or set secure_aggregation.keyring",
        ) from None
    except (OSError, ValueError) as exc:
        raise ConnectorError(f"could not read the keyring ({type(exc).__name__})", source=str(path)) from None
    return Keyring.from_document(document)


def register(path: Path, identity: Identity) -> Keyring:
    """Add (or replace) a party's public keys in the keyring file (a legacy keyring is rewritten
    in the current format; parties not yet upgraded keep their signing key only)."""
    path = Path(path)
    keyring = read_keyring(path) if path.exists() else Keyring({})
    keyring = keyring.with_identity(identity)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(keyring.to_document(), indent=2), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise ConnectorError(f"could not write the keyring ({exc.strerror})", source=str(path)) from None
    return keyring


def check_registered(keyring: Keyring, identity: Identity) -> None:
    if keyring.matches(identity):
        return
    flag = "--coordinator" if identity.party == "coordinator" else f"--region {identity.party}"
    listed = keyring.keys.get(identity.party)
    if listed is None:
        raise IdentityError(f"{identity.party!r} is not in the federation keyring",
                            hint=f"register it: `fedcrm keys init {flag}`")
    if public_key_text(listed) != public_key_text(identity.public_key):
        raise IdentityError(
            f"{identity.party!r}'s identity key is not the one the keyring lists (keyring: {public_key_text(listed)[:12]}…)",
            hint=f"re-register it: `fedcrm keys init {flag}`",
        )
    if identity.party not in keyring.encryption_keys:
        raise IdentityError(
            f"the federation keyring has no encryption key for {identity.party!r} (it was registered by an older fedcrm)",
            hint=f"re-register it: `fedcrm keys init {flag}` (embedded: `fedcrm keys init --all`)",
        )
    raise IdentityError(
        f"{identity.party!r}'s encryption key is not the one the keyring lists "
        f"(keyring: {public_key_text(keyring.encryption_keys[identity.party])[:12]}…)",
        hint=f"re-register it: `fedcrm keys init {flag}`",
    )
