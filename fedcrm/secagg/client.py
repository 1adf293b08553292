"""The region's side of secure aggregation (Bonawitz et al. 2017, SecAgg+ graph of Bell et al. 2020).

Per job: advertise two ephemeral X25519 keys (one to encrypt shares, one to agree pairwise
masks), then Shamir-share the mask key among the group. Per aggregation: mask the input with a
fresh self-mask and the pairwise masks of the round's participants, and share the self-mask
seed; when asked to unmask, reveal self-mask shares of survivors *or* mask-key shares of dropped
parties, never both for one party. A party whose mask key was revealed is "burned": this
region never masks with it again in the job.

The state (private keys included) persists between steps in the region's own store.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field

import numpy as np

from fedcrm.errors import MessageRejectedError, SecureAggregationError
from fedcrm.secagg import masking, shamir
from fedcrm.secagg.codec import FixedPointCodec
from fedcrm.secagg.envelope import Envelope, Inbox
from fedcrm.secagg.graph import GraphParams, MaskingGraph
from fedcrm.secagg.identity import COORDINATOR, Identity, Keyring

SETUP_ROUND = -1


def share_aad(job_id: str, kind: str, round: int, owner: str, holder: str, x: int) -> dict[str, object]:
    return {"job": job_id, "kind": kind, "round": round, "owner": owner, "holder": holder, "x": x}


@dataclass
class SecAggClient:
    identity: Identity
    keyring: Keyring
    job_id: str
    params: GraphParams = field(default_factory=GraphParams)
    c_key: bytes = field(default_factory=masking.new_private_key)
    s_key: bytes = field(default_factory=masking.new_private_key)
    peers: dict[str, dict[str, bytes]] = field(default_factory=dict)
    parties: list[str] = field(default_factory=list)
    burned: set[str] = field(default_factory=set)
    stage: str = "new"
    last_round: int | None = None
    last_participants: list[str] = field(default_factory=list)

    @property
    def me(self) -> str:
        return self.identity.party

    _graph: MaskingGraph | None = field(default=None, init=False, repr=False)

    @property
    def graph(self) -> MaskingGraph:
        if self._graph is None or list(self._graph.parties) != self.parties:
            self._graph = MaskingGraph.build(self.parties, self.job_id, self.params)
        return self._graph

    def _request(self, data: bytes, round: int, phase: str) -> dict:
        body = Inbox(self.keyring, self.job_id, self.me).open(data, round=round, phase=f"{phase}-request", sender=COORDINATOR)
        if not isinstance(body, dict):
            raise MessageRejectedError(f"malformed {phase} request", sender=COORDINATOR)
        return body

    def _reply(self, round: int, phase: str, body: object) -> bytes:
        return Envelope.seal(self.identity, job_id=self.job_id, round=round, phase=phase, recipient=COORDINATOR,
                             body=body).to_bytes()

    def _expect(self, stages: tuple[str, ...], phase: str) -> None:
        if self.stage not in stages:
            raise MessageRejectedError(f"unexpected {phase} request: this region is at stage {self.stage!r}",
                                       sender=COORDINATOR, hint="a replayed or out-of-order request is refused")

    # --- per job -------------------------------------------------------------------------------

    def advertise(self, request: bytes) -> bytes:
        self._request(request, SETUP_ROUND, "advertise")
        self._expect(("new",), "advertise")
        self.stage = "advertised"
        return self._reply(SETUP_ROUND, "advertise",
                           {"c": masking.public_key(self.c_key), "s": masking.public_key(self.s_key)})

    def share_keys(self, request: bytes) -> bytes:
        body = self._request(request, SETUP_ROUND, "share-keys")
        self._expect(("advertised",), "share-keys")
        parties = sorted(str(p) for p in body.get("parties", []))
        if self.me not in parties or len(set(parties)) != len(parties):
            raise MessageRejectedError("share-keys request with an invalid party list", sender=COORDINATOR)
        relayed = Inbox(self.keyring, self.job_id, COORDINATOR)
        peers = {}
        for data in body.get("advertisements", []):
            envelope = Envelope.from_bytes(data)
            keys = relayed.open(envelope, round=SETUP_ROUND, phase="advertise")
            peers[envelope.sender] = {"c": keys["c"], "s": keys["s"]}
        self.parties = parties
        graph = self.graph
        missing = sorted(graph.group(self.me) - set(peers))
        if missing:
            raise MessageRejectedError(f"share-keys request lacks the advertised keys of {missing}", sender=COORDINATOR)
        if peers[self.me] != {"c": masking.public_key(self.c_key), "s": masking.public_key(self.s_key)}:
            raise MessageRejectedError("the relayed advertisement of this region is not its own", sender=COORDINATOR)
        self.peers = {p: peers[p] for p in graph.group(self.me)}
        holders = sorted(graph.group(self.me))
        shares = shamir.split(self.s_key, graph.threshold, [graph.index(h) for h in holders])
        ciphertexts = {
            h: masking.encrypt_share(
                masking.agree(self.c_key, self.peers[h]["c"]),
                share_aad(self.job_id, "s", SETUP_ROUND, self.me, h, graph.index(h)), shares[graph.index(h)], self.job_id,
            )
            for h in holders
        }
        self.stage = "ready"
        return self._reply(SETUP_ROUND, "share-keys", {"shares": ciphertexts})

    # --- per aggregation -----------------------------------------------------------------------

    def mask(self, request: bytes, round: int, vector: np.ndarray, bounds: np.ndarray) -> bytes:
        body = self._request(request, round, "masked-input")
        self._expect(("ready", "unmasked"), "masked-input")
        if self.last_round is not None and round <= self.last_round:
            raise MessageRejectedError(f"masked-input request for round {round} after round {self.last_round}",
                                       sender=COORDINATOR, hint="a replayed request is refused")
        graph = self.graph
        participants = sorted(str(p) for p in body.get("participants", []))
        unknown = sorted(set(participants) - set(graph.parties))
        if self.me not in participants or unknown:
            raise MessageRejectedError(f"masked-input request with an invalid participant list (unknown: {unknown})",
                                       sender=COORDINATOR)
        if burned := sorted(self.burned & set(participants)):
            raise SecureAggregationError(
                f"the coordinator lists {burned} as participants, but their mask keys were revealed earlier in this job",
                hint="a party whose mask key was reconstructed cannot rejoin the job; it must be excluded",
            )
        codec = FixedPointCodec(bounds, n_parties=len(graph.parties))
        live = set(participants)
        masked = codec.encode(vector)
        seed = os.urandom(shamir.SECRET_BYTES)
        masked += masking.expand(seed, masked.size)
        for peer in sorted(graph.neighbours(self.me) & live):
            pair = masking.pairwise_seed(masking.agree(self.s_key, self.peers[peer]["s"]), self.job_id, round, self.me, peer)
            mask = masking.expand(pair, masked.size)
            masked = masked + mask if self.me < peer else masked - mask
        holders = sorted(graph.group(self.me) & live)
        shares = shamir.split(seed, graph.threshold, [graph.index(h) for h in holders]) if len(holders) >= graph.threshold else {}
        if not shares:
            raise SecureAggregationError(
                f"only {len(holders)} of this region's share holders take part in round {round}; {graph.threshold} needed",
                hint="too many regions were excluded for secure aggregation to proceed",
            )
        ciphertexts = {
            h: masking.encrypt_share(
                masking.agree(self.c_key, self.peers[h]["c"]),
                share_aad(self.job_id, "b", round, self.me, h, graph.index(h)), shares[graph.index(h)], self.job_id,
            )
            for h in holders
        }
        self.stage, self.last_round, self.last_participants = "masked", round, participants
        return self._reply(round, "masked-input", {
            "masked": masked.astype("<u8").tobytes(), "b_shares": ciphertexts,
            "b_hash": hashlib.sha256(seed).digest(),
        })

    def unmask(self, request: bytes, round: int) -> bytes:
        body = self._request(request, round, "unmask")
        self._expect(("masked",), "unmask")
        if round != self.last_round:
            raise MessageRejectedError(f"unmask request for round {round}; this region masked round {self.last_round}",
                                       sender=COORDINATOR, hint="a replayed request is refused")
        survivors, dropped = set(body.get("survivors", [])), set(body.get("dropped", []))
        if survivors & dropped:
            raise SecureAggregationError(
                f"unmask request lists {sorted(survivors & dropped)} as both survivor and dropped",
                hint="revealing both secrets of a party would expose its input; the request is refused",
            )
        if survivors | dropped != set(self.last_participants) or self.me not in survivors:
            raise MessageRejectedError("unmask request does not partition this round's participants", sender=COORDINATOR)
        graph = self.graph
        revealed: dict[str, dict[str, bytes]] = {"b": {}, "s": {}}
        for item in body.get("shares", []):
            owner, kind = str(item["owner"]), str(item["kind"])
            if owner not in graph.group(self.me) or kind not in ("b", "s"):
                raise MessageRejectedError(f"unmask request relays an unexpected share ({kind} of {owner!r})",
                                           sender=COORDINATOR)
            if (kind == "b") != (owner in survivors) or (kind == "s") != (owner in dropped):
                raise SecureAggregationError(
                    f"unmask request asks for the {'self-mask' if kind == 'b' else 'mask-key'} share of {owner!r}, "
                    "which its survivor/dropped status does not allow",
                    hint="only self-mask shares of survivors and mask-key shares of dropped parties are revealed",
                )
            share_round = round if kind == "b" else SETUP_ROUND
            aad = share_aad(self.job_id, kind, share_round, owner, self.me, graph.index(self.me))
            revealed[kind][owner] = masking.decrypt_share(
                masking.agree(self.c_key, self.peers[owner]["c"]), aad, item["ct"], self.job_id
            )
        self.burned |= dropped
        self.stage = "unmasked"
        return self._reply(round, "unmask", revealed)

    # --- persistence in the region's store ------------------------------------------------------

    def to_state(self) -> dict[str, object]:
        b64 = lambda v: base64.b64encode(v).decode()  # noqa: E731
        return {
            "job_id": self.job_id, "party": self.me, "c_key": b64(self.c_key), "s_key": b64(self.s_key),
            "peers": {p: {k: b64(v) for k, v in keys.items()} for p, keys in self.peers.items()},
            "parties": self.parties, "burned": sorted(self.burned), "stage": self.stage,
            "last_round": self.last_round, "last_participants": self.last_participants,
            "params": {"threshold_fraction": self.params.threshold_fraction, "neighbours": self.params.neighbours,
                       "full_graph_max_parties": self.params.full_graph_max_parties},
        }

    @classmethod
    def from_state(cls, state: dict, identity: Identity, keyring: Keyring) -> SecAggClient:
        raw = lambda v: base64.b64decode(v)  # noqa: E731
        if state.get("party") != identity.party:
            raise SecureAggregationError("secure-aggregation state belongs to another party")
        return cls(
            identity=identity, keyring=keyring, job_id=state["job_id"], params=GraphParams(**state["params"]),
            c_key=raw(state["c_key"]), s_key=raw(state["s_key"]),
            peers={p: {k: raw(v) for k, v in keys.items()} for p, keys in state["peers"].items()},
            parties=list(state["parties"]), burned=set(state["burned"]), stage=state["stage"],
            last_round=state["last_round"], last_participants=list(state["last_participants"]),
        )
