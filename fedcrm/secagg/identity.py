"""Long-term party identities (Ed25519) and the federation's keyring of public keys.

Each region, and the coordinator, holds one signing key in its *own* store; the keyring (public
keys only) is federation configuration that every party reads. A message counts as coming from
a party only if it verifies under that party's keyring entry.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedcrm.errors import IdentityError, MessageRejectedError

COORDINATOR = "coordinator"
KEYRING_FORMAT = "fedcrm-keyring-v1"
IDENTITY_FORMAT = "fedcrm-identity-v1"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def public_key_text(key: Ed25519PublicKey) -> str:
    return _b64(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def parse_public_key(party: str, text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError):
        raise IdentityError(
            f"the keyring's public key for {party!r} is not a base64 Ed25519 key",
            hint=f"re-register it: `fedcrm keys init --region {party}` prints the line to put in the keyring",
        ) from None


@dataclass(frozen=True)
class Identity:
    """A party's signing key. Lives only in that party's store."""

    party: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, party: str) -> Identity:
        return cls(party, Ed25519PrivateKey.generate())

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)

    def to_document(self) -> dict[str, str]:
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return {"format": IDENTITY_FORMAT, "party": self.party, "algorithm": "Ed25519",
                "public_key": public_key_text(self.public_key), "private_key_pem": pem.decode()}

    @classmethod
    def from_document(cls, document: Mapping[str, str], *, expected_party: str) -> Identity:
        if not isinstance(document, Mapping) or document.get("format") != IDENTITY_FORMAT:
            raise IdentityError(f"the identity key of {expected_party!r} is not a fedcrm identity document",
                                hint=f"recreate it: `fedcrm keys init --region {expected_party} --rotate`")
        if document.get("party") != expected_party:
            raise IdentityError(
                f"the identity key in {expected_party!r}'s store belongs to {document.get('party')!r}",
                hint="a store must hold its own party's key; recreate it with `fedcrm keys init ... --rotate`",
            )
        try:
            key = serialization.load_pem_private_key(document["private_key_pem"].encode(), password=None)
        except (ValueError, TypeError, KeyError):
            raise IdentityError(f"the identity key of {expected_party!r} cannot be read",
                                hint=f"recreate it: `fedcrm keys init --region {expected_party} --rotate`") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise IdentityError(f"the identity key of {expected_party!r} is not an Ed25519 key",
                                hint=f"recreate it: `fedcrm keys init --region {expected_party} --rotate`")
        return cls(expected_party, key)


@dataclass(frozen=True)
class Keyring:
    """Public identity keys of every party of the federation (regions and the coordinator)."""

    keys: Mapping[str, Ed25519PublicKey]

    @classmethod
    def from_texts(cls, texts: Mapping[str, str]) -> Keyring:
        return cls({party: parse_public_key(party, text) for party, text in texts.items()})

    @classmethod
    def from_document(cls, document: Mapping[str, object]) -> Keyring:
        if not isinstance(document, Mapping) or document.get("format") != KEYRING_FORMAT:
            raise IdentityError("the federation keyring is not a fedcrm keyring document",
                                hint="recreate it with `fedcrm keys init --all` (embedded) or fix federation config")
        return cls.from_texts(dict(document.get("parties", {})))

    def to_document(self) -> dict[str, object]:
        return {"format": KEYRING_FORMAT, "parties": {p: public_key_text(k) for p, k in sorted(self.keys.items())}}

    def with_key(self, party: str, key: Ed25519PublicKey) -> Keyring:
        return Keyring({**self.keys, party: key})

    def require(self, parties: list[str]) -> None:
        missing = [p for p in parties if p not in self.keys]
        if missing:
            raise IdentityError(
                f"the federation keyring has no public key for {missing}",
                hint="register each party first: `fedcrm keys init --region NAME` (or `--coordinator`)",
            )

    def matches(self, identity: Identity) -> bool:
        known = self.keys.get(identity.party)
        return known is not None and public_key_text(known) == public_key_text(identity.public_key)

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
