"""Federated sums, wired the same way whatever the aggregator (secure by default, or plain):

    setup (secure aggregation only, once per job):
        advertise-keys (each region) → share-keys (each region)
    each sum:
        open-round (coordinator: signed requests)
          → the regional step contributes (each region: masked vector)
          → collect-contributions (coordinator: verify, find dropouts, threshold check)
          → secure-aggregation unmask (each surviving region: reveal only what cancels the masks)
          → unmask-sum (coordinator: the sum, nothing else)
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from fedcrm.aggregation import AggregateResult, Aggregator, Screen
from fedcrm.config import FedcrmConfig
from fedcrm.roster import Roster
from flows.dispatch import RegionLinks
from fedcrm.protocol import SecureAggregation, StepRequest
from tasks import coordinator


def _replies_or_reasons(roster: Roster, step: str, replies: dict[str, Any], value=lambda v: v) -> dict[str, Any]:
    out = {}
    for region, reply in replies.items():
        if reply.ok:
            out[region] = value(reply.value)
        else:
            roster.exclude(region, step, reply.reason)
            out[region] = reply.reason
    return out


def set_up_aggregation(config: FedcrmConfig, job_id: str, roster: Roster, links: RegionLinks) -> Aggregator:
    """The job's aggregator, with its key setup done among the active regions."""
    aggregator = coordinator.make_aggregator(config, job_id)
    for phase in aggregator.setup_phases:
        step = f"secure-aggregation setup ({phase})"
        requests = aggregator.setup_requests(phase, roster.active)
        replies = links.ask(SecureAggregation, list(requests),
                            per_region={r: {"request": q} for r, q in requests.items()})
        failed = aggregator.receive_setup(phase, _replies_or_reasons(roster, step, replies))
        for region, reason in failed.items():
            roster.exclude(region, step, reason)
        roster.require_quorum(config.federation.min_regions, step)
    return aggregator


def federated_sum(
    config: FedcrmConfig, roster: Roster, links: RegionLinks, aggregator: Aggregator, *, round_number: int, step: str,
    request: type[StepRequest], bounds: np.ndarray, screen: Screen | None = None, **arguments: Any,
) -> tuple[AggregateResult, dict[str, Any], float]:
    """Ask every active region for ``request`` (a step that contributes to a sum) and sum what they contribute.

    Returns the sum, the seconds the coordinator-side aggregation took once the contributions had
    arrived (checks, unmask step, reconstruction), and every answering region's reply (whatever it releases besides its
    contribution, e.g. its ε, which it spent even if its contribution was then dropped). Regions that fail, or whose mask key had to be revealed, are
    excluded from the job; a plain aggregator's screen drops a bad contribution for this round only.
    """
    requests = aggregator.open_round(round_number, roster.active, bounds, screen)
    replies = links.ask(request, list(requests), round_number=round_number,
                        per_region={r: {"request": q} for r, q in requests.items()}, **arguments)
    released = {r: reply.value for r, reply in replies.items() if reply.ok}
    contributions = _replies_or_reasons(roster, step, replies, lambda value: value.contribution)
    began = time.perf_counter()
    unmask = coordinator.collect_contributions(aggregator, round_number, contributions)
    answers: dict[str, Any] = {}
    if unmask:
        replies = links.ask(SecureAggregation, list(unmask),
                            per_region={r: {"request": q} for r, q in unmask.items()})
        answers = _replies_or_reasons(roster, f"{step} (unmask)", replies)
    result = coordinator.unmask_sum(aggregator, round_number, answers)
    elapsed = time.perf_counter() - began
    for region, reason in aggregator.excluded.items():
        roster.exclude(region, step, reason)
    roster.require_quorum(config.federation.min_regions, step)
    return result, released, elapsed
