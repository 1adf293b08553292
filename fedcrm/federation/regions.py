"""What the coordinator decides from the regions' answers before and after the round loop.

Preparation (who passed validation), privacy planning (every region reserves the job's whole spend,
or none keeps a reservation) and the local-only baseline, each over the ``RegionTransport`` port's
``ask``: the transport delivers requests and replies; the rules of who is excluded, and why, are here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedcrm.errors import PrivacyError
from fedcrm.protocol import LocalOnlyBaseline, Personalise, PlanPrivacy, PreparedSummary, RegionPlan, RegionReply, ReleaseWorkspace
from fedcrm.roster import Roster
from fedcrm.summary import Baselines

if TYPE_CHECKING:
    import numpy as np

    from fedcrm.features import FeaturePipeline
    from fedcrm.federation.job import RegionTransport
    from fedcrm.task_types import TaskType


def record_preparation(roster: Roster, replies: dict[str, RegionReply[PreparedSummary]]) -> None:
    """Copy each region's released validation counts into the roster; exclude a region that failed to
    prepare, or whose records failed the contract."""
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


def exclude_changed_records(roster: Roster, fingerprints: dict[str, str | None]) -> None:
    """A resumed job goes on only in regions whose records are those it started with."""
    for region in roster.active:
        if roster.regions[region].data_fingerprint != fingerprints[region]:
            roster.exclude(region, "resume", "its records changed since the job started (and its prepared copy is "
                                             "gone), so it cannot resume this job; start a new job")


def reserve_all_or_nothing(roster: Roster, transport: RegionTransport, *, min_regions: int) -> dict[str, RegionPlan]:
    """Plan privacy and reserve the job's budget region by region, in sorted order, all or nothing.

    A region whose lifetime budget cannot hold the job refuses (``RegionPlan.refused``): the job then
    releases the reservations it already made and fails, so it never runs without a region whose budget
    another job took. Because every job reserves in the same order, two jobs racing for a budget that fits
    one cannot each take some regions: the loser is refused at the first region they contend for, before it
    holds anything the winner still needs. A region that fails planning for another reason (too few
    records for δ, an error, a timeout) is excluded as in any step; if it reserved late, its regional run
    releases when told to finish.
    """
    plans: dict[str, RegionPlan] = {}
    for region in sorted(roster.active):
        reply = transport.ask(PlanPrivacy, [region])[region]
        if not reply.ok:
            roster.exclude(region, "privacy planning", reply.reason)
        elif reply.value.refused:
            _give_back(roster, transport, region, reply.value.refused, plans)
        else:
            plans[region] = reply.value
    roster.require_quorum(min_regions, "privacy planning")
    return plans


def _give_back(roster: Roster, transport: RegionTransport, region: str, refused: str,
               plans: dict[str, RegionPlan]) -> None:
    """``region`` refused the job: release what the job holds elsewhere, exclude every region, and fail."""
    roster.exclude(region, "privacy planning", refused)
    held = list(plans)
    unreleased = {other for other, answer in (transport.ask(ReleaseWorkspace, held).items() if held else ())
                  if not answer.ok}
    for other in roster.active:
        roster.exclude(other, "privacy planning", f"region {region}'s lifetime budget refused this job, and a "
                       "job holds its privacy reservations in all its regions or in none" + (
                           "" if other not in plans else "; its regional run releases its reservation when "
                           "told to finish" if other in unreleased else "; its reservation here was released"))
    raise PrivacyError(
        f"region {region}'s lifetime privacy budget cannot hold this job, so no region keeps a reservation "
        f"for it (all or nothing): {refused}",
        hint="wait for running jobs to finish, or make the job smaller (see the region's reason), or leave "
             "the region out of federation.regions",
    )


def personalise_regions(roster: Roster, transport: RegionTransport, pipeline: FeaturePipeline,
                        final: np.ndarray) -> dict[str, str]:
    """Each region trains the final global model further on its own rows and keeps whichever is better on
    its holdout (``RegionSummary.personalisation``). A region whose personal step fails keeps the global
    model and stays in the job; returns those regions with their reasons."""
    failed: dict[str, str] = {}
    for region, reply in transport.ask(Personalise, roster.active, pipeline=pipeline, global_vector=final).items():
        entry = roster.regions[region]
        if reply.ok:
            entry.personalisation = reply.value
        else:
            entry.personalisation_failed = failed[region] = reply.reason
    return failed


def local_only_baselines(roster: Roster, transport: RegionTransport, task_type: TaskType, pipeline: FeaturePipeline,
                         initial: np.ndarray) -> Baselines:
    """Each region trains the same model alone under the same ε and scores it on its holdout; the
    combined metrics say what federation buys. A region that cannot is listed with its reason (and stays
    in the job: the baseline is a comparison, not a step of the model)."""
    alone: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for region, reply in transport.ask(LocalOnlyBaseline, roster.active, pipeline=pipeline,
                                       initial_vector=initial).items():
        if reply.ok:
            entry = roster.regions[region]
            entry.local_only, entry.epsilon_job_total = reply.value.metrics, reply.value.epsilon_job_total
            alone[region] = reply.value.metrics
        else:
            failed[region] = reply.reason
    return Baselines(local_only=task_type.combine(alone) if alone else None, local_only_failed=failed)
