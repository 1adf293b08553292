"""Signed, ordered conversations between the coordinator and each region over the exchange.

The coordinator numbers its requests to each region 1, 2, 3, ...; the region answers request n
with reply n, and announces itself with a hello (number 0) that carries its residency evidence.
Every message is an ``Envelope`` signed by its sender and bound to (job, number, kind, sender,
recipient), so the exchange, or anyone who can write to it, can neither forge, alter, re-address
nor replay a message: the reader rejects it with the reason. Every body is also encrypted to its
recipient's X25519 key from the keyring (``Envelope.seal(encrypt_to=...)``: HPKE, the header as
context, the signature over header and ciphertext), so a reader of the exchange learns the
headers (job, number, kind, sender, recipient, the step a request asks for) and sizes, never a
report, metric, plan or model; and each side accepts only bodies encrypted to itself.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import ValidationError

from fedcrm.errors import MessageRejectedError
from fedcrm.protocol import Message, StepReply, check_reply
from fedcrm.secagg.envelope import Envelope, Inbox
from fedcrm.secagg.identity import COORDINATOR, Identity, Keyring

HELLO = 0


def session_id(job_id: str, attempt: int) -> str:
    """What one attempt's messages are bound to: a resumed job's new attempt never accepts the old one's."""
    return job_id if attempt == 1 else f"{job_id}/attempt-{attempt}"


class Mailboxes(Protocol):
    def post(self, box: str, sequence: int, envelope: bytes) -> None: ...

    def fetch(self, box: str, sequence: int) -> bytes | None: ...


def _to(region: str) -> str:
    return f"to-{region}"


def _from(region: str) -> str:
    return f"from-{region}"


class CoordinatorChannel:
    def __init__(self, mailboxes: Mailboxes, identity: Identity, keyring: Keyring, job_id: str):
        self.mailboxes, self.identity, self.keyring, self.job_id = mailboxes, identity, keyring, job_id
        self._inbox = Inbox(keyring, job_id, identity.party, decryption_key=identity.encryption_key)
        self._next: dict[str, int] = {}

    def continue_from(self, region: str, number: int) -> None:
        """Number the next request to ``region`` ``number`` (talking to a run another coordinator started)."""
        self._next[region] = number

    def send(self, region: str, request: Message) -> int:
        """Post the region's next request (a ``fedcrm.protocol`` message); returns its number."""
        number = self._next.get(region, HELLO + 1)
        self._next[region] = number + 1
        envelope = Envelope.seal(self.identity, job_id=self.job_id, round=number, phase="request", recipient=region,
                                 body=request.model_dump(mode="json"), subject=request.step,
                                 encrypt_to=self.keyring.encryption_key(region))
        self.mailboxes.post(_to(region), number, envelope.to_bytes())
        return number

    def hello(self, region: str) -> dict[str, Any] | None:
        """The region's signed residency evidence, once it has started; raises MessageRejectedError if forged."""
        data = self.mailboxes.fetch(_from(region), HELLO)
        return None if data is None else dict(self._inbox.open(data, round=HELLO, phase="hello", sender=region))

    def reply(self, region: str, number: int) -> StepReply | None:
        data = self.mailboxes.fetch(_from(region), number)
        if data is None:
            return None
        try:
            reply = StepReply.model_validate(self._inbox.open(data, round=number, phase="reply", sender=region))
        except ValidationError as exc:
            raise MessageRejectedError(f"a reply that is not a fedcrm reply ({exc.error_count()} error(s))",
                                       hint="the region's reply is ignored") from None
        return check_reply(reply)


class RegionChannel:
    def __init__(self, mailboxes: Mailboxes, identity: Identity, keyring: Keyring, job_id: str):
        self.mailboxes, self.identity, self.keyring, self.job_id = mailboxes, identity, keyring, job_id
        self.region = identity.party
        self._inbox = Inbox(keyring, job_id, identity.party, decryption_key=identity.encryption_key)

    def _post(self, number: int, kind: str, body: object) -> None:
        envelope = Envelope.seal(self.identity, job_id=self.job_id, round=number, phase=kind, recipient=COORDINATOR,
                                 body=body, encrypt_to=self.keyring.encryption_key(COORDINATOR))
        self.mailboxes.post(_from(self.region), number, envelope.to_bytes())

    def hello(self, evidence: dict[str, Any]) -> None:
        self._post(HELLO, "hello", evidence)

    def request(self, number: int) -> object | None:
        """The opened body of request ``number`` once the coordinator has posted it (``fedcrm.protocol.parse_request``
        types it); raises MessageRejectedError if forged."""
        data = self.mailboxes.fetch(_to(self.region), number)
        if data is None:
            return None
        return self._inbox.open(data, round=number, phase="request", sender=COORDINATOR)

    def reply(self, number: int, reply: StepReply) -> None:
        self._post(number, "reply", reply.model_dump(mode="json"))
