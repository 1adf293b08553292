"""Signed protocol messages bound to (job, round, phase, sender, recipient), optionally encrypted.

The signature covers the binding and the body, so a message cannot be altered, re-addressed,
re-used in another job or round, or attributed to another party. ``Inbox`` adds the checks a
signature alone cannot make: that the message is the one expected now, and not a replay.

A message that crosses the exchange is also *encrypted to its recipient* (``encrypt_to``): its
body is HPKE (RFC 9180, base mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305;
a fresh ephemeral key per message) under the recipient's X25519 key from the keyring, with the
binding as HPKE ``info``, so the ciphertext only opens under the header it was sealed with. The
signature covers the header, the ephemeral public key and the ciphertext (sign-then-check:
``Inbox.open`` verifies before it decrypts). A reader of the exchange sees the binding, the
public ``subject`` (the step a request asks for) and the size; never the body.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fedcrm.errors import MessageRejectedError
from fedcrm.secagg import wire
from fedcrm.secagg.identity import Identity, Keyring

_DOMAIN = b"fedcrm-secagg-v1\x00"
_SEALING_DOMAIN = b"fedcrm-sealed-body-v1\x00"
SEALING = "hpke-x25519-hkdfsha256-chacha20poly1305"
"""The ``sealed`` value of an encrypted envelope (its body is HPKE ``enc || ciphertext``)."""
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


@dataclass(frozen=True)
class Envelope:
    job_id: str
    round: int
    phase: str
    sender: str
    recipient: str
    body: bytes
    signature: bytes = b""
    subject: str = ""
    """Public, signed: what the message is about (the step a request asks for); empty if nothing."""
    sealed: str = ""
    """``SEALING`` when the body is encrypted to the recipient; empty for a cleartext body."""

    def binding(self) -> dict[str, object]:
        binding: dict[str, object] = {"job": self.job_id, "round": self.round, "phase": self.phase,
                                      "sender": self.sender, "recipient": self.recipient}
        if self.subject:
            binding["subject"] = self.subject
        if self.sealed:
            binding["sealed"] = self.sealed
        return binding

    def signed_bytes(self) -> bytes:
        return _DOMAIN + wire.encode({"binding": self.binding(), "body": self.body})

    def _sealing_info(self) -> bytes:
        """HPKE ``info`` (authenticated context): the whole header, so a body opens only under its own."""
        return _SEALING_DOMAIN + wire.encode(self.binding())

    @classmethod
    def seal(cls, identity: Identity, *, job_id: str, round: int, phase: str, recipient: str, body: object,
             subject: str = "", encrypt_to: X25519PublicKey | None = None) -> Envelope:
        """Sign ``body`` (first encrypted to ``encrypt_to``, the recipient's key, when given)."""
        header = cls(job_id, round, phase, identity.party, recipient, b"", subject=subject,
                     sealed=SEALING if encrypt_to is not None else "")
        plain = wire.encode(body)
        content = plain if encrypt_to is None else _SUITE.encrypt(plain, encrypt_to, info=header._sealing_info())
        unsigned = cls(**{**header.__dict__, "body": content})
        return cls(**{**unsigned.__dict__, "signature": identity.sign(unsigned.signed_bytes())})

    def to_bytes(self) -> bytes:
        return wire.encode({"binding": self.binding(), "body": self.body, "signature": self.signature})

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        document = wire.decode(data)
        try:
            b = document["binding"]
            envelope = cls(str(b["job"]), int(b["round"]), str(b["phase"]), str(b["sender"]), str(b["recipient"]),
                           document["body"], document.get("signature", b""), str(b.get("subject", "")),
                           str(b.get("sealed", "")))
        except (KeyError, TypeError, ValueError):
            raise MessageRejectedError("protocol message without a complete binding", hint="it is ignored") from None
        if not isinstance(envelope.body, bytes) or not isinstance(envelope.signature, bytes):
            raise MessageRejectedError("protocol message with a malformed body or signature", hint="it is ignored")
        return envelope

    def decrypt(self, key: X25519PrivateKey) -> bytes:
        """The cleartext body (wire bytes); raises MessageRejectedError if it does not open under ``key``."""
        if self.sealed != SEALING:
            raise MessageRejectedError(
                f"{self.phase} message from {self.sender!r} has a cleartext body"
                + (f" (sealed as {self.sealed!r})" if self.sealed else ""),
                sender=self.sender, hint="messages on the exchange must be encrypted to their recipient; it is ignored",
            )
        try:
            return _SUITE.decrypt(self.body, key, info=self._sealing_info())
        except (InvalidTag, ValueError):
            raise MessageRejectedError(
                f"{self.phase} message from {self.sender!r} cannot be decrypted by {self.recipient!r}",
                sender=self.sender, hint="it was encrypted to another party's key (or its keyring entry is stale); "
                                         "it is ignored",
            ) from None


@dataclass
class Inbox:
    """Opens messages addressed to ``me`` in job ``job_id``; remembers what it has accepted.

    With ``decryption_key`` (``me``'s encryption key) it accepts only bodies encrypted to it (the
    exchange's conversations); without, only cleartext bodies (secure-aggregation messages relayed
    inside those conversations, whose secrets are encrypted per peer by the protocol itself).
    """

    keyring: Keyring
    job_id: str
    me: str
    decryption_key: X25519PrivateKey | None = None
    _seen: set[tuple[str, int, str]] = field(default_factory=set)

    def open(self, data: bytes | Envelope, *, round: int, phase: str, sender: str | None = None) -> object:
        envelope = data if isinstance(data, Envelope) else Envelope.from_bytes(data)
        who = envelope.sender
        if not envelope.signature:
            raise MessageRejectedError(f"unsigned {phase} message claiming to be from {who!r}", sender=who,
                                       hint="every protocol message must be signed; it is ignored")
        self.keyring.verify(who, envelope.signature, envelope.signed_bytes())
        if sender is not None and who != sender:
            raise MessageRejectedError(
                f"message delivered as {sender!r}'s reply is signed by {who!r}", sender=who,
                hint="a party may only speak for itself; the message is ignored",
            )
        expected = {"job": self.job_id, "round": round, "phase": phase, "recipient": self.me}
        actual = {"job": envelope.job_id, "round": envelope.round, "phase": envelope.phase, "recipient": envelope.recipient}
        wrong = {k: (actual[k], v) for k, v in expected.items() if actual[k] != v}
        if wrong:
            details = ", ".join(f"{k} {got!r} (expected {want!r})" for k, (got, want) in wrong.items())
            kind = "replayed or misrouted" if "round" in wrong or "job" in wrong else "misrouted"
            raise MessageRejectedError(f"{kind} message from {who!r}: {details}", sender=who,
                                       hint="messages are bound to one job, round, phase and recipient; it is ignored")
        key = (who, envelope.round, envelope.phase)
        if key in self._seen:
            raise MessageRejectedError(f"replayed {phase} message from {who!r} in round {round}", sender=who,
                                       hint="each party sends one message per phase; the copy is ignored")
        if self.decryption_key is not None:
            body = envelope.decrypt(self.decryption_key)
        elif envelope.sealed:
            raise MessageRejectedError(f"encrypted {phase} message from {who!r} where a cleartext one was expected",
                                       sender=who, hint="it is ignored")
        else:
            body = envelope.body
        self._seen.add(key)
        return wire.decode(body)
