"""The coordinator's side of the conversation with the job's regional runs.

``RegionLinks.ask`` posts one signed request per region on the exchange and collects the signed
replies until ``launcher.step_timeout_s``; a region that does not answer in time, or whose reply
fails verification, gets a failed ``RegionReply`` with the reason (the flow excludes it; a late
answer is never read). Callers see ``{region: RegionReply}`` whatever the launcher.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fedcrm.audit import WitnessedHead, latest_heads
from fedcrm.channel import CoordinatorChannel
from fedcrm.config import FedcrmConfig
from fedcrm.errors import IdentityError, MessageRejectedError
from fedcrm.protocol import Finish, Retire, StepRequest
from fedcrm.roster import Roster
from tasks.guard import RegionReply, unwrap


class RegionLinks:
    def __init__(self, config: FedcrmConfig, channel: CoordinatorChannel, *, clock: Callable[[], float] = time.monotonic):
        self.channel, self.clock = channel, clock
        self.timeout_s, self.poll_s = config.launcher.step_timeout_s, config.exchange.poll_interval_s
        self.started: set[str] = set()
        """Regions whose run said a verified hello (set by the launcher)."""
        self.silent: set[str] = set()
        """Regions that let a step time out: their run is presumed gone, and they are not asked again."""
        self.ended: Callable[[str], str | None] = lambda region: None
        """Set by the launcher: how a region's run ended (e.g. 'Failed'), or None while it runs."""
        self.liveness_every_s = 2.0
        self.transport_s = 0.0
        """Cumulative seconds asks took beyond the slowest region's own compute: the exchange's overhead."""
        self.region_heads: dict[str, WitnessedHead] = {}
        """The furthest audit head each region sent in a verified message: anchored at the session's end."""

    def answering(self, regions: list[str]) -> list[str]:
        """Those of ``regions`` that have not stopped answering (a region that timed out is not asked again)."""
        return [region for region in regions if region in self.started and region not in self.silent]

    def ask(
        self, step: type[StepRequest], regions: list[str], per_region: dict[str, dict[str, Any]] | None = None,
        **arguments: Any,
    ) -> dict[str, RegionReply[Any]]:
        """Ask every listed region for ``step`` (a ``fedcrm.protocol`` request with these arguments);
        ``per_region`` adds arguments that differ by region."""
        numbers, replies = {}, {}
        for region in regions:
            if region in self.silent:
                replies[region] = RegionReply(region=region, ok=False, reason="its regional run stopped answering")
                continue
            request = step(**arguments, **(per_region or {}).get(region, {}))
            try:
                numbers[region] = self.channel.send(region, request)
            except IdentityError as exc:  # the coordinator's keyring has no encryption key for it: nothing is sent
                self.silent.add(region)
                replies[region] = RegionReply(region=region, ok=False, reason=f"its request could not be encrypted: {exc}")
        began, slowest = time.perf_counter(), 0.0
        deadline = self.clock() + self.timeout_s
        next_liveness = self.clock() + self.liveness_every_s
        while numbers.keys() - replies.keys():
            for region, number in numbers.items():
                if region not in replies:
                    reply, elapsed = self._collect(step, region, number)
                    if reply is not None:
                        replies[region], slowest = reply, max(slowest, elapsed)
            if self.clock() > next_liveness:  # a run that has ended will never answer: do not wait for the deadline
                next_liveness = self.clock() + self.liveness_every_s
                for region in numbers.keys() - replies.keys():
                    state = self.ended(region)
                    if state is not None and self._collect(step, region, numbers[region])[0] is None:
                        self.silent.add(region)
                        replies[region] = RegionReply(region=region, ok=False, reason=(
                            f"its regional run ended ({state}) without answering {step.name}; see the "
                            "region's flow run logs"))
            if numbers.keys() - replies.keys():
                if self.clock() > deadline:
                    break
                time.sleep(self.poll_s)
        if numbers:
            self.transport_s += max(0.0, time.perf_counter() - began - slowest)
        for region in numbers.keys() - replies.keys():
            self.silent.add(region)
            replies[region] = RegionReply(region=region, ok=False, reason=(
                f"no answer to {step.name} within {self.timeout_s:g} s (launcher.step_timeout_s): the regional "
                "run stopped or is too slow; a late answer is ignored"))
        return {region: replies[region] for region in regions}

    def _collect(self, step: type[StepRequest], region: str, number: int) -> tuple[RegionReply[Any] | None, float]:
        """The region's reply if it has arrived, and the seconds it spent computing it."""
        try:
            reply = self.channel.reply(region, number)
            if reply is None:
                return None, 0.0
            latest_heads(self.region_heads, region, reply.audit_head, session=self.channel.job_id,
                         message=f"reply {number}")
            if not reply.ok:
                return RegionReply(region=region, ok=False, reason=reply.reason), reply.elapsed_s
            return RegionReply(region=region, ok=True, value=step.decode_value(reply.value)), reply.elapsed_s
        except MessageRejectedError as exc:
            return RegionReply(region=region, ok=False, reason=f"its reply was rejected: {exc}"), 0.0

    def tell(self, regions: list[str], message: Finish | Retire) -> None:
        """A message that needs no answer (``Finish``, ``Retire``)."""
        for region in regions:
            try:
                self.channel.send(region, message)
            except IdentityError:  # cannot reach it encrypted; its run ends on its idle timeout
                continue


def run_step(roster: Roster, links: RegionLinks, label: str, step: type[StepRequest], *, min_regions: int,
             **arguments: Any) -> dict[str, Any]:
    """One federated step: run in every active region, exclude the failures, enforce the quorum."""
    replies = links.ask(step, roster.active, **arguments)
    for region, reply in replies.items():
        if not reply.ok:
            roster.exclude(region, label, reply.reason)
    roster.require_quorum(min_regions, label)
    return unwrap(replies)
