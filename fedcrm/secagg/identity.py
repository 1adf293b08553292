"""Long-term party identities and the federation's keyring of public keys.

Each region, and the coordinator, holds two private keys in its *own* store: an Ed25519 signing
key (a message counts as coming from a party only if it verifies under that party's keyring
entry) and an X25519 encryption key (message bodies on the exchange are encrypted to their
recipient's, so a reader of the exchange sees headers and sizes, never content). The keyring
(public keys only) is federation configuration that every party reads; each encryption key in it
is signed by its party's signing key, so it cannot be swapped without that party's identity.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fedcrm.errors import IdentityError, MessageRejectedError

COORDINATOR = "coordinator"
KEYRING_FORMAT = "fedcrm-keyring-v2"
LEGACY_KEYRING_FORMAT = "fedcrm-keyring-v1"
"""Signing keys only (before message bodies were encrypted); still read, so ``keys init`` can upgrade it."""
IDENTITY_FORMAT = "fedcrm-identity-v2"
LEGACY_IDENTITY_FORMAT = "fedcrm-identity-v1"
_KEY_BINDING_DOMAIN = b"fedcrm-encryption-key-v1\x00"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _raw(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_text(key: Ed25519PublicKey | X25519PublicKey) -> str:
    return _b64(_raw(key))


def _init_hint(party: str, *, rotate: bool = False) -> str:
    flag = "--coordinator" if party == COORDINATOR else f"--region {party}"
    return f"`fedcrm keys init {flag}{' --rotate' if rotate else ''}`"


def _key_binding(party: str, key: X25519PublicKey) -> bytes:
    """What a party signs to vouch for its encryption key."""
    return _KEY_BINDING_DOMAIN + party.encode() + b"\x00" + _raw(key)


def parse_public_key(party: str, text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError):
        raise IdentityError(
            f"the keyring's public key for {party!r} is not a base64 Ed25519 key",
            hint=f"re-register it: {_init_hint(party)} prints the line to put in the keyring",
        ) from None


def parse_encryption_key(party: str, text: str) -> X25519PublicKey:
    try:
        return X25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, TypeError):
        raise IdentityError(
            f"the keyring's encryption key for {party!r} is not a base64 X25519 key",
            hint=f"re-register it: {_init_hint(party)} prints the line to put in the keyring",
        ) from None


@dataclass(frozen=True)
class Identity:
    """A party's signing key and encryption key. Live only in that party's store."""

    party: str
    private_key: Ed25519PrivateKey
    encryption_key: X25519PrivateKey

    @classmethod
    def generate(cls, party: str) -> Identity:
        return cls(party, Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def encryption_public_key(self) -> X25519PublicKey:
        return self.encryption_key.public_key()

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)

    def encryption_key_signature(self) -> bytes:
        """This party's signature over its encryption public key (kept in the keyring beside it)."""
        return self.sign(_key_binding(self.party, self.encryption_public_key))

    def with_signing_key(self, key: Ed25519PrivateKey) -> Identity:
        """This encryption key with ``key`` to sign (upgrades a pre-encryption identity, keeping who it is)."""
        return Identity(self.party, key, self.encryption_key)

    def to_document(self) -> dict[str, str]:
        def pem(key: Ed25519PrivateKey | X25519PrivateKey) -> str:
            return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()

        return {"format": IDENTITY_FORMAT, "party": self.party, "algorithm": "Ed25519",
                "public_key": public_key_text(self.public_key), "private_key_pem": pem(self.private_key),
                "encryption_algorithm": "X25519", "encryption_public_key": public_key_text(self.encryption_public_key),
                "encryption_private_key_pem": pem(self.encryption_key)}

    @classmethod
    def from_document(cls, document: Mapping[str, str], *, expected_party: str) -> Identity:
        signing = signing_key_from_document(document, expected_party=expected_party)
        if document.get("format") == LEGACY_IDENTITY_FORMAT:
            raise IdentityError(
                f"the identity of {expected_party!r} has no encryption key (it was created by an older fedcrm)",
                hint=f"add one (the signing key stays): {_init_hint(expected_party)}, then put the line it prints "
                     "in the federation keyring",
            )
        encryption = _load_private(document, "encryption_private_key_pem", expected_party)
        if not isinstance(encryption, X25519PrivateKey):
            raise IdentityError(f"the encryption key of {expected_party!r} is not an X25519 key",
                                hint=f"recreate it: {_init_hint(expected_party, rotate=True)}")
        return cls(expected_party, signing, encryption)


def _load_private(document: Mapping[str, str], name: str, party: str) -> object:
    try:
        return serialization.load_pem_private_key(document[name].encode(), password=None)
    except (ValueError, TypeError, KeyError, AttributeError):
        raise IdentityError(f"the identity key of {party!r} cannot be read",
                            hint=f"recreate it: {_init_hint(party, rotate=True)}") from None


def signing_key_from_document(document: Mapping[str, str], *, expected_party: str) -> Ed25519PrivateKey:
    """The signing key of an identity document of either format (``keys init`` upgrades a legacy one)."""
    if not isinstance(document, Mapping) or document.get("format") not in (IDENTITY_FORMAT, LEGACY_IDENTITY_FORMAT):
        raise IdentityError(f"the identity key of {expected_party!r} is not a fedcrm identity document",
                            hint=f"recreate it: {_init_hint(expected_party, rotate=True)}")
    if document.get("party") != expected_party:
        raise IdentityError(
            f"the identity key in {expected_party!r}'s store belongs to {document.get('party')!r}",
            hint="a store must hold its own party's key; recreate it with `fedcrm keys init ... --rotate`",
        )
    key = _load_private(document, "private_key_pem", expected_party)
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"the identity key of {expected_party!r} is not an Ed25519 key",
                            hint=f"recreate it: {_init_hint(expected_party, rotate=True)}")
    return key


@dataclass(frozen=True)
class Keyring:
    """Public keys of every party of the federation (regions and the coordinator).

    ``keys`` are the signing keys; ``encryption_keys`` the (signed) encryption keys that the
    exchange's message bodies are encrypted to. A party registered by an older fedcrm has a
    signing key only: messages to it are refused with the command that adds its encryption key.
    """

    keys: Mapping[str, Ed25519PublicKey]
    encryption_keys: Mapping[str, X25519PublicKey] = field(default_factory=dict)
    encryption_signatures: Mapping[str, bytes] = field(default_factory=dict)

    @classmethod
    def of(cls, identities: Mapping[str, Identity] | list[Identity]) -> Keyring:
        """The keyring listing these identities (both keys each)."""
        keyring = cls({})
        for identity in identities.values() if isinstance(identities, Mapping) else identities:
            keyring = keyring.with_identity(identity)
        return keyring

    @classmethod
    def from_texts(cls, texts: Mapping[str, str]) -> Keyring:
        return cls({party: parse_public_key(party, text) for party, text in texts.items()})

    @classmethod
    def from_document(cls, document: Mapping[str, object]) -> Keyring:
        if not isinstance(document, Mapping) or document.get("format") not in (KEYRING_FORMAT, LEGACY_KEYRING_FORMAT):
            raise IdentityError("the federation keyring is not a fedcrm keyring document",
                                hint="recreate it with `fedcrm keys init --all` (embedded) or fix federation config")
        parties = document.get("parties", {})
        if not isinstance(parties, Mapping):
            raise IdentityError("the federation keyring has no 'parties' table",
                                hint="recreate it with `fedcrm keys init --all` (embedded) or fix federation config")
        if document.get("format") == LEGACY_KEYRING_FORMAT:
            return cls.from_texts({str(p): str(t) for p, t in parties.items()})
        signing, encryption, signatures = {}, {}, {}
        for party, entry in parties.items():
            if not isinstance(entry, Mapping) or "signing" not in entry:
                raise IdentityError(f"the keyring's entry for {party!r} has no signing key",
                                    hint=f"re-register it: {_init_hint(party)}")
            signing[party] = parse_public_key(party, str(entry["signing"]))
            if "encryption" in entry:
                key = parse_encryption_key(party, str(entry["encryption"]))
                try:
                    signature = base64.b64decode(str(entry.get("encryption_signature", "")), validate=True)
                    signing[party].verify(signature, _key_binding(party, key))
                except (ValueError, InvalidSignature):
                    raise IdentityError(
                        f"the keyring's encryption key for {party!r} is not signed by {party!r}'s identity key",
                        hint=f"the keyring was altered or mixed up; re-register it: {_init_hint(party)}",
                    ) from None
                encryption[party], signatures[party] = key, signature
        return cls(signing, encryption, signatures)

    def to_document(self) -> dict[str, object]:
        parties: dict[str, dict[str, str]] = {}
        for party, key in sorted(self.keys.items()):
            entry = {"signing": public_key_text(key)}
            if party in self.encryption_keys:
                entry["encryption"] = public_key_text(self.encryption_keys[party])
                entry["encryption_signature"] = _b64(self.encryption_signatures[party])
            parties[party] = entry
        return {"format": KEYRING_FORMAT, "parties": parties}

    def with_key(self, party: str, key: Ed25519PublicKey) -> Keyring:
        """A signing key only (tests of the secure-aggregation protocol, which encrypts nothing to it)."""
        return Keyring({**self.keys, party: key},
                       {p: k for p, k in self.encryption_keys.items() if p != party},
                       {p: s for p, s in self.encryption_signatures.items() if p != party})

    def with_identity(self, identity: Identity) -> Keyring:
        """Add (or replace) both public keys of ``identity``."""
        party = identity.party
        return Keyring({**self.keys, party: identity.public_key},
                       {**self.encryption_keys, party: identity.encryption_public_key},
                       {**self.encryption_signatures, party: identity.encryption_key_signature()})

    def require(self, parties: list[str]) -> None:
        missing = [p for p in parties if p not in self.keys]
        if missing:
            raise IdentityError(
                f"the federation keyring has no public key for {missing}",
                hint="register each party first: `fedcrm keys init --region NAME` (or `--coordinator`)",
            )

    def encryption_key(self, party: str) -> X25519PublicKey:
        """The key that messages to ``party`` are encrypted to."""
        key = self.encryption_keys.get(party)
        if key is None:
            raise IdentityError(
                f"the federation keyring has no encryption key for {party!r}"
                + (" (it was registered by an older fedcrm)" if party in self.keys else ""),
                hint=f"run {_init_hint(party)} where {party}'s store is and put the line it prints in the keyring "
                     "(embedded: `fedcrm keys init --all`)",
            )
        return key

    def matches(self, identity: Identity) -> bool:
        known, encryption = self.keys.get(identity.party), self.encryption_keys.get(identity.party)
        return (known is not None and encryption is not None
                and public_key_text(known) == public_key_text(identity.public_key)
                and public_key_text(encryption) == public_key_text(identity.encryption_public_key))

    def verify(self, party: str, signature: bytes, data: bytes) -> None:
        key = self.keys.get(party)
        if key is None:
            raise MessageRejectedError(
                f"message from unknown sender {party!r}: it is not in the federation keyring",
                sender=party, hint="only registered parties may take part; register it with `fedcrm keys init`",
            )
        try:
            key.verify(signature, data)
        except InvalidSignature:
            raise MessageRejectedError(
                f"message claiming to come from {party!r} has an invalid signature",
                sender=party,
                hint="it was altered in transit or signed by another party; it is ignored",
            ) from None
