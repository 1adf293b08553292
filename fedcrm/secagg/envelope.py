"""Signed protocol messages bound to (job, round, phase, sender, recipient).

The signature covers the binding and the body, so a message cannot be altered, re-addressed,
re-used in another job or round, or attributed to another party. ``Inbox`` adds the checks a
signature alone cannot make: that the message is the one expected now, and not a replay.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedcrm.errors import MessageRejectedError
from fedcrm.secagg import wire
from fedcrm.secagg.identity import Identity, Keyring

_DOMAIN = b"fedcrm-secagg-v1\x00"


@dataclass(frozen=True)
class Envelope:
    job_id: str
    round: int
    phase: str
    sender: str
    recipient: str
    body: bytes
    signature: bytes = b""

    def binding(self) -> dict[str, object]:
        return {"job": self.job_id, "round": self.round, "phase": self.phase, "sender": self.sender,
                "recipient": self.recipient}

    def signed_bytes(self) -> bytes:
        return _DOMAIN + wire.encode({"binding": self.binding(), "body": self.body})

    @classmethod
    def seal(cls, identity: Identity, *, job_id: str, round: int, phase: str, recipient: str, body: object) -> Envelope:
        unsigned = cls(job_id, round, phase, identity.party, recipient, wire.encode(body))
        return cls(job_id, round, phase, identity.party, recipient, unsigned.body, identity.sign(unsigned.signed_bytes()))

    def to_bytes(self) -> bytes:
        return wire.encode({"binding": self.binding(), "body": self.body, "signature": self.signature})

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        document = wire.decode(data)
        try:
            b = document["binding"]
            envelope = cls(str(b["job"]), int(b["round"]), str(b["phase"]), str(b["sender"]), str(b["recipient"]),
                           document["body"], document.get("signature", b""))
        except (KeyError, TypeError, ValueError):
            raise MessageRejectedError("protocol message without a complete binding", hint="it is ignored") from None
        if not isinstance(envelope.body, bytes) or not isinstance(envelope.signature, bytes):
            raise MessageRejectedError("protocol message with a malformed body or signature", hint="it is ignored")
        return envelope


@dataclass
class Inbox:
    """Opens messages addressed to ``me`` in job ``job_id``; remembers what it has accepted."""

    keyring: Keyring
    job_id: str
    me: str
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
        self._seen.add(key)
        return wire.decode(envelope.body)
