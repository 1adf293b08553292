"""The coordinator's side of secure aggregation: it routes, checks and unmasks, and learns the sum.

It sees ephemeral public keys, ciphertexts of shares it cannot decrypt, masked vectors that
are uniformly random on their own, and, per round, exactly the secrets needed to cancel the
masks: the self-mask seeds of survivors and the mask keys of dropped parties, never both for
one party. Before asking anyone to reveal anything it checks that every needed secret can
reach its threshold; otherwise the round aborts and nothing is unmasked.

Every step takes the parties' replies as ``{party: bytes}``; a party that did not answer (or
whose message is rejected) counts as dropped, with the reason recorded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from fedcrm.aggregation import AggregateResult
from fedcrm.errors import AggregationAbortedError, FedcrmError, MessageRejectedError
from fedcrm.secagg import masking, shamir
from fedcrm.secagg.client import SETUP_ROUND
from fedcrm.secagg.codec import FixedPointCodec
from fedcrm.secagg.envelope import Envelope, Inbox
from fedcrm.secagg.graph import GraphParams, MaskingGraph
from fedcrm.secagg.identity import Identity, Keyring

Replies = Mapping[str, "bytes | str | None"]
"""A party's message, or why it has none (a string reason), or None (no answer)."""


@dataclass
class _Round:
    number: int
    participants: list[str]
    codec: FixedPointCodec
    masked: dict[str, np.ndarray] = field(default_factory=dict)
    b_shares: dict[str, dict[str, bytes]] = field(default_factory=dict)
    b_hashes: dict[str, bytes] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    survivors: list[str] = field(default_factory=list)


@dataclass
class SecAggServer:
    identity: Identity
    keyring: Keyring
    job_id: str
    params: GraphParams = field(default_factory=GraphParams)
    advertisements: dict[str, bytes] = field(default_factory=dict)
    public_keys: dict[str, dict[str, bytes]] = field(default_factory=dict)
    s_shares: dict[str, dict[str, bytes]] = field(default_factory=dict)
    ready: list[str] = field(default_factory=list)
    burned: dict[str, str] = field(default_factory=dict)
    graph: MaskingGraph | None = None
    _inbox: Inbox | None = field(default=None, repr=False)
    _unregistered: dict[str, str] = field(default_factory=dict, repr=False)
    _round: _Round | None = field(default=None, repr=False)

    @property
    def inbox(self) -> Inbox:
        if self._inbox is None:
            self._inbox = Inbox(self.keyring, self.job_id, self.identity.party)
        return self._inbox

    def _requests(self, round: int, phase: str, bodies: Mapping[str, object]) -> dict[str, bytes]:
        return {
            party: Envelope.seal(self.identity, job_id=self.job_id, round=round, phase=f"{phase}-request",
                                 recipient=party, body=body).to_bytes()
            for party, body in bodies.items()
        }

    def _open_each(self, replies: Replies, round: int, phase: str) -> tuple[dict[str, object], dict[str, str]]:
        opened, failed = {}, {}
        for party, data in replies.items():
            if data is None or isinstance(data, str):
                failed[party] = data or f"no {phase} message"
                continue
            try:
                opened[party] = self.inbox.open(data, round=round, phase=phase, sender=party)
            except FedcrmError as exc:
                failed[party] = exc.message
        return opened, failed

    # --- per job -------------------------------------------------------------------------------

    def advertise_requests(self, parties: list[str]) -> dict[str, bytes]:
        """Requests to the registered parties; an unregistered one fails setup with the fix."""
        self._unregistered = {
            p: f"{p!r} is not in the federation keyring; register it with `fedcrm keys init --region {p}`"
            for p in parties if p not in self.keyring.keys
        }
        return self._requests(SETUP_ROUND, "advertise", {p: {} for p in parties if p in self.keyring.keys})

    def receive_advertisements(self, replies: Replies) -> dict[str, str]:
        opened, failed = self._open_each(replies, SETUP_ROUND, "advertise")
        failed.update(self._unregistered)
        for party, keys in opened.items():
            if not isinstance(keys, dict) or not all(isinstance(keys.get(k), bytes) and len(keys[k]) == 32 for k in "cs"):
                failed[party] = "advertisement without two 32-byte X25519 public keys"
                continue
            self.advertisements[party] = replies[party]
            self.public_keys[party] = {"c": keys["c"], "s": keys["s"]}
        self.graph = MaskingGraph.build(sorted(self.advertisements), self.job_id, self.params)
        return failed

    def share_keys_requests(self) -> dict[str, bytes]:
        graph = self._graph()
        return self._requests(SETUP_ROUND, "share-keys", {
            p: {"parties": list(graph.parties), "advertisements": [self.advertisements[q] for q in sorted(graph.group(p))]}
            for p in graph.parties
        })

    def receive_key_shares(self, replies: Replies) -> dict[str, str]:
        graph = self._graph()
        opened, failed = self._open_each(replies, SETUP_ROUND, "share-keys")
        for party, body in opened.items():
            shares = body.get("shares") if isinstance(body, dict) else None
            if not isinstance(shares, dict) or set(shares) != set(graph.group(party)):
                failed[party] = "share-keys message does not hold one encrypted share per group member"
                continue
            self.s_shares[party] = shares
        self.ready = sorted(self.s_shares)
        return failed

    def _graph(self) -> MaskingGraph:
        if self.graph is None:
            raise AggregationAbortedError("secure aggregation was not set up for this job", hint="run the key setup first")
        return self.graph

    # --- per aggregation -----------------------------------------------------------------------

    def masked_input_requests(self, round: int, participants: list[str], bounds: np.ndarray) -> dict[str, bytes]:
        graph = self._graph()
        unusable = sorted(set(participants) - set(self.ready))
        live = sorted(p for p in participants if p in self.ready and p not in self.burned)
        if unusable:
            raise AggregationAbortedError(f"{unusable} did not complete the secure-aggregation key setup",
                                          hint="exclude them from the job before the first round")
        self._round = _Round(round, live, FixedPointCodec(bounds, n_parties=len(graph.parties)))
        return self._requests(round, "masked-input", {p: {"participants": live} for p in live})

    def receive_masked_inputs(self, replies: Replies) -> dict[str, bytes]:
        """Collect masked inputs; returns the unmask requests, or aborts if the threshold cannot be met."""
        graph, state = self._graph(), self._current()
        expected = set(state.participants)
        replies = {p: replies.get(p) for p in state.participants}
        opened, failed = self._open_each(replies, state.number, "masked-input")
        for party, body in opened.items():
            try:
                masked = np.frombuffer(body["masked"], dtype="<u8").astype(np.uint64)
                shares, digest = body["b_shares"], body["b_hash"]
            except (KeyError, TypeError, ValueError):
                failed[party] = "malformed masked-input message"
                continue
            holders = graph.group(party) & expected
            if masked.shape != state.codec.bounds.shape:
                failed[party] = f"masked input has {masked.size} words, expected {state.codec.bounds.size}"
            elif not isinstance(shares, dict) or set(shares) != holders or not isinstance(digest, bytes):
                failed[party] = "masked input without one encrypted self-mask share per participating group member"
            else:
                state.masked[party], state.b_shares[party], state.b_hashes[party] = masked, shares, digest
        state.survivors = sorted(state.masked)
        state.dropped = {p: failed.get(p, "no masked input") for p in state.participants if p not in state.masked}
        alive = set(state.survivors)
        short = {p: len(graph.group(p) & alive) for p in state.participants if len(graph.group(p) & alive) < graph.threshold}
        if short or not alive:
            raise AggregationAbortedError(
                f"round {state.number}: too few surviving share holders for {sorted(short)} "
                f"(have {sorted(set(short.values()))}, need {graph.threshold}); {len(alive)} of "
                f"{len(state.participants)} participants sent a masked input",
                hint="nothing was revealed or unmasked; restore the dropped regions or lower the quorum",
            )
        bodies = {}
        for holder in state.survivors:
            items = [{"owner": u, "kind": "b", "ct": state.b_shares[u][holder]}
                     for u in state.survivors if holder in graph.group(u)]
            items += [{"owner": d, "kind": "s", "ct": self.s_shares[d][holder]}
                      for d in state.dropped if holder in graph.group(d)]
            bodies[holder] = {"survivors": state.survivors, "dropped": sorted(state.dropped), "shares": items}
        return self._requests(state.number, "unmask", bodies)

    def finish(self, replies: Replies) -> AggregateResult:
        """Reconstruct the needed secrets from the revealed shares and return the decoded sum."""
        graph, state = self._graph(), self._current()
        self._round = None
        opened, failed = self._open_each({p: replies.get(p) for p in state.survivors}, state.number, "unmask")
        seeds: dict[str, dict[int, bytes]] = {u: {} for u in state.survivors}
        keys: dict[str, dict[int, bytes]] = {d: {} for d in state.dropped}
        for holder, body in opened.items():
            x = graph.index(holder)
            for kind, wanted, into in (("b", state.survivors, seeds), ("s", state.dropped, keys)):
                for owner, share in (body.get(kind, {}) if isinstance(body, dict) else {}).items():
                    if owner in into and holder in graph.group(owner) and isinstance(share, bytes):
                        into[owner][x] = share
        for d, reason in state.dropped.items():
            self.burned[d] = f"dropped out of round {state.number} ({reason}); its mask key was reconstructed"
        try:
            self_masks = {u: shamir.combine(s, graph.threshold) for u, s in seeds.items()}
            mask_keys = {d: shamir.combine(s, graph.threshold) for d, s in keys.items()}
        except AggregationAbortedError as exc:
            raise AggregationAbortedError(
                f"round {state.number}: {exc.message}; {len(opened)} of {len(state.survivors)} survivors answered "
                f"the unmask request ({failed or 'no failures reported'})",
                hint="the sum was not computed; restore the regions or lower the quorum",
            ) from None
        for u, seed in self_masks.items():
            if hashlib.sha256(seed).digest() != state.b_hashes[u]:
                raise AggregationAbortedError(f"round {state.number}: the self-mask of {u!r} reconstructed inconsistently",
                                              hint="a share holder sent a corrupted share; the sum was not computed")
        for d, key in mask_keys.items():
            if masking.public_key(key) != self.public_keys[d]["s"]:
                raise AggregationAbortedError(f"round {state.number}: the mask key of {d!r} reconstructed inconsistently",
                                              hint="a share holder sent a corrupted share; the sum was not computed")
        size = state.codec.bounds.size
        total = np.zeros(size, dtype=np.uint64)
        for u in state.survivors:
            total += state.masked[u]
            total -= masking.expand(self_masks[u], size)
        alive = set(state.survivors)
        for d, key in mask_keys.items():
            for u in sorted(graph.neighbours(d) & alive):
                seed = masking.pairwise_seed(masking.agree(key, self.public_keys[u]["s"]), self.job_id, state.number, u, d)
                mask = masking.expand(seed, size)
                total = total - mask if u < d else total + mask  # u added +mask when u < d
        return AggregateResult(state.codec.decode(total), state.survivors, dict(state.dropped), state.codec.error_bound)

    def abort_round(self) -> None:
        self._round = None

    def _current(self) -> _Round:
        if self._round is None:
            raise MessageRejectedError("no secure-aggregation round is open", hint="request masked inputs first")
        return self._round
