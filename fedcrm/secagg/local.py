"""Every party in one process: the protocol end to end without an orchestrator.

Used by the tests and benchmarks, and as the reference for how the flow drives the protocol
(``flows/aggregation.py`` does the same steps with one Prefect task per region). Every message
the coordinator sends or receives is kept in ``transcript``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from fedcrm.aggregation import AggregateResult
from fedcrm.errors import FedcrmError
from fedcrm.secagg.adapters import MaskingContributor, SecureAggregator
from fedcrm.secagg.client import SecAggClient
from fedcrm.secagg.graph import GraphParams
from fedcrm.secagg.identity import COORDINATOR, Identity, Keyring
from fedcrm.secagg.server import SecAggServer

Tamper = Callable[[str, bytes], bytes]


@dataclass
class LocalFederation:
    parties: list[str]
    params: GraphParams = field(default_factory=GraphParams)
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    transcript: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.identities = {p: Identity.generate(p) for p in [*self.parties, COORDINATOR]}
        self.keyring = Keyring.of(self.identities)
        self.contributors = {
            p: MaskingContributor(SecAggClient(self.identities[p], self.keyring, self.job_id, self.params)) for p in self.parties
        }
        self.aggregator = SecureAggregator(SecAggServer(self.identities[COORDINATOR], self.keyring, self.job_id, self.params))

    def _ask(self, requests: Mapping[str, bytes], answer: Callable[[str, bytes], bytes], absent: Iterable[str] = (),
             tamper: Tamper | None = None) -> dict[str, bytes | str]:
        replies: dict[str, bytes | str] = {}
        for party, request in requests.items():
            self.transcript.append(request)
            if party in set(absent):
                replies[party] = "dropped out"
                continue
            try:
                reply = answer(party, request)
            except FedcrmError as exc:
                replies[party] = exc.message
                continue
            reply = tamper(party, reply) if tamper else reply
            self.transcript.append(reply)
            replies[party] = reply
        return replies

    def setup(self, absent: dict[str, Iterable[str]] | None = None) -> dict[str, str]:
        """Run the key setup; ``absent`` maps a setup phase to the parties that drop out at it."""
        failed: dict[str, str] = {}
        live = list(self.parties)
        for phase in self.aggregator.setup_phases:
            requests = self.aggregator.setup_requests(phase, live)
            replies = self._ask(requests, lambda p, r: self.contributors[p].respond(r), (absent or {}).get(phase, ()))
            failed.update(self.aggregator.receive_setup(phase, replies))
            live = [p for p in live if p not in failed]
        return failed

    def sum(
        self, round: int, vectors: Mapping[str, np.ndarray], bounds: np.ndarray, *,
        absent_at_input: Iterable[str] = (), absent_at_unmask: Iterable[str] = (), tamper: Tamper | None = None,
    ) -> AggregateResult:
        """One secure sum over the parties in ``vectors``; some may drop out at either phase."""
        requests = self.aggregator.open_round(round, sorted(vectors), bounds)
        masked = self._ask(requests, lambda p, r: self.contributors[p].contribute(r, round, vectors[p], bounds),
                           absent_at_input, tamper)
        unmask = self.aggregator.receive(masked)
        replies = self._ask(unmask, lambda p, r: self.contributors[p].respond(r), absent_at_unmask)
        return self.aggregator.finish(replies)
