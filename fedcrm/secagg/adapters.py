"""Secure aggregation behind the ``Aggregator`` / ``Contributor`` interfaces of ``fedcrm.aggregation``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcrm.aggregation import AggregateResult, Screen
from fedcrm.errors import MessageRejectedError
from fedcrm.secagg.client import SecAggClient
from fedcrm.secagg.envelope import Envelope
from fedcrm.secagg.server import SecAggServer


@dataclass
class SecureAggregator:
    """The coordinator learns the sum of the contributions, not any single one."""

    server: SecAggServer
    setup_phases: tuple[str, ...] = ("advertise", "share-keys")

    def setup_requests(self, phase: str, parties: list[str]) -> dict[str, Any]:
        if phase == "advertise":
            return self.server.advertise_requests(parties)
        requests = self.server.share_keys_requests()
        return {p: r for p, r in requests.items() if p in parties}

    def receive_setup(self, phase: str, replies: Mapping[str, Any]) -> dict[str, str]:
        if phase == "advertise":
            return self.server.receive_advertisements(replies)
        return self.server.receive_key_shares(replies)

    def open_round(
        self, round: int, participants: list[str], bounds: np.ndarray, screen: Screen | None = None
    ) -> dict[str, Any]:
        """``screen`` is ignored: a masked input cannot be inspected, so each region screens (clips) its own."""
        return self.server.masked_input_requests(round, participants, bounds)

    def receive(self, contributions: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return self.server.receive_masked_inputs(contributions)
        except Exception:
            self.server.abort_round()
            raise

    def finish(self, replies: Mapping[str, Any]) -> AggregateResult:
        return self.server.finish(replies)

    @property
    def excluded(self) -> dict[str, str]:
        """Parties that can no longer take part in this job (their mask key was revealed)."""
        return dict(self.server.burned)


@dataclass
class MaskingContributor:
    """The region masks its contribution; its keys stay in the region."""

    client: SecAggClient

    def contribute(self, request: Any, round: int, vector: np.ndarray, bounds: np.ndarray) -> bytes:
        return self.client.mask(request, round, vector, bounds)

    def respond(self, request: Any) -> bytes:
        envelope = Envelope.from_bytes(request)
        phase = envelope.phase.removesuffix("-request")
        if phase == "advertise":
            return self.client.advertise(request)
        if phase == "share-keys":
            return self.client.share_keys(request)
        if phase == "unmask":
            return self.client.unmask(request, envelope.round)
        raise MessageRejectedError(f"unexpected request phase {envelope.phase!r}", sender=envelope.sender)
