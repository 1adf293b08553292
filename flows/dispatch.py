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
from fedcrm.errors import IdentityError, MessageRejectedError, PrivacyError
from fedcrm.messages import StepRequest, decode_value, encode_arguments
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
        self, regional_task: Any, regions: list[str], per_region: dict[str, dict[str, Any]] | None = None, **arguments: Any
    ) -> dict[str, RegionReply[Any]]:
        """Run ``regional_task`` in every listed region; ``per_region`` adds arguments that differ by region."""
        numbers, replies = {}, {}
        for region in regions:
            if region in self.silent:
                replies[region] = RegionReply(region=region, ok=False, reason="its regional run stopped answering")
                continue
            encoded = encode_arguments(regional_task, {**arguments, **(per_region or {}).get(region, {})})
            try:
                numbers[region] = self.channel.send(region, StepRequest(step=regional_task.name, arguments=encoded))
            except IdentityError as exc:  # the coordinator's keyring has no encryption key for it: nothing is sent
                self.silent.add(region)
                replies[region] = RegionReply(region=region, ok=False, reason=f"its request could not be encrypted: {exc}")
        began, slowest = time.perf_counter(), 0.0
        deadline = self.clock() + self.timeout_s
        next_liveness = self.clock() + self.liveness_every_s
        while numbers.keys() - replies.keys():
            for region, number in numbers.items():
                if region not in replies:
                    reply, elapsed = self._collect(regional_task, region, number)
                    if reply is not None:
                        replies[region], slowest = reply, max(slowest, elapsed)
            if self.clock() > next_liveness:  # a run that has ended will never answer: do not wait for the deadline
                next_liveness = self.clock() + self.liveness_every_s
                for region in numbers.keys() - replies.keys():
                    state = self.ended(region)
                    if state is not None and self._collect(regional_task, region, numbers[region])[0] is None:
                        self.silent.add(region)
                        replies[region] = RegionReply(region=region, ok=False, reason=(
                            f"its regional run ended ({state}) without answering {regional_task.name}; see the "
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
                f"no answer to {regional_task.name} within {self.timeout_s:g} s (launcher.step_timeout_s): the regional "
                "run stopped or is too slow; a late answer is ignored"))
        return {region: replies[region] for region in regions}

    def _collect(self, regional_task: Any, region: str, number: int) -> tuple[RegionReply[Any] | None, float]:
        """The region's reply if it has arrived, and the seconds it spent computing it."""
        try:
            reply = self.channel.reply(region, number)
            if reply is None:
                return None, 0.0
            latest_heads(self.region_heads, region, reply.audit_head, session=self.channel.job_id,
                         message=f"reply {number}")
            if not reply.ok:
                return RegionReply(region=region, ok=False, reason=reply.reason), reply.elapsed_s
            return RegionReply(region=region, ok=True, value=decode_value(regional_task, reply.value)), reply.elapsed_s
        except MessageRejectedError as exc:
            return RegionReply(region=region, ok=False, reason=f"its reply was rejected: {exc}"), 0.0

    def tell(self, regions: list[str], step: str) -> None:
        """A request that needs no answer (``finish``)."""
        for region in regions:
            try:
                self.channel.send(region, StepRequest(step=step))
            except IdentityError:  # cannot reach it encrypted; its run ends on its idle timeout
                continue


def run_step(roster: Roster, links: RegionLinks, step: str, regional_task: Any, *, min_regions: int,
             **arguments: Any) -> dict[str, Any]:
    """One federated step: run in every active region, exclude the failures, enforce the quorum."""
    replies = links.ask(regional_task, roster.active, **arguments)
    for region, reply in replies.items():
        if not reply.ok:
            roster.exclude(region, step, reply.reason)
    roster.require_quorum(min_regions, step)
    return unwrap(replies)


def record_preparation(roster: Roster, replies: dict[str, RegionReply[Any]]) -> None:
    """Copy each region's validation counts into the roster; exclude failed regions."""
    for region, reply in replies.items():
        if not reply.ok:
            roster.exclude(region, "preparation", reply.reason)
            continue
        entry, info = roster.regions[region], reply.value
        entry.validation, entry.n_train, entry.n_holdout = info.report, info.n_train, info.n_holdout
        entry.n_quarantined = info.report.n_quarantined
        entry.data_fingerprint = info.fingerprint
        if not info.report.success:
            roster.exclude(region, "validation", info.report.reason)


def reserve_all_or_nothing(roster: Roster, links: RegionLinks, planning_task: Any, release_task: Any, *,
                           min_regions: int) -> dict[str, Any]:
    """Plan privacy and reserve the job's budget region by region, in sorted order, all or nothing.

    A region whose lifetime budget cannot hold the job refuses (``RegionPlan.refused``): the job then
    releases the reservations it already made and fails, so it never runs without a region whose budget
    another job took. Because every job reserves in the same order, two jobs racing for a budget that fits
    one cannot each take some regions: the loser is refused at the first region they contend for, before it
    holds anything the winner still needs. A region that fails planning for another reason (too few
    records for δ, an error, a timeout) is excluded as in any step; if it reserved late, its regional run
    releases when told to finish.
    """
    plans: dict[str, Any] = {}
    for region in sorted(roster.active):
        reply = links.ask(planning_task, [region])[region]
        if not reply.ok:
            roster.exclude(region, "privacy planning", reply.reason)
        elif reply.value.refused:
            roster.exclude(region, "privacy planning", reply.value.refused)
            held = list(plans)
            unreleased = {other for other, answer in (links.ask(release_task, held).items() if held else ())
                          if not answer.ok}
            for other in roster.active:
                roster.exclude(other, "privacy planning", f"region {region}'s lifetime budget refused this job, and a "
                               "job holds its privacy reservations in all its regions or in none" + (
                                   "" if other not in plans else "; its regional run releases its reservation when "
                                   "told to finish" if other in unreleased else "; its reservation here was released"))
            raise PrivacyError(
                f"region {region}'s lifetime privacy budget cannot hold this job, so no region keeps a reservation "
                f"for it (all or nothing): {reply.value.refused}",
                hint="wait for running jobs to finish, or make the job smaller (see the region's reason), or leave "
                     "the region out of federation.regions",
            )
        else:
            plans[region] = reply.value
    roster.require_quorum(min_regions, "privacy planning")
    return plans
