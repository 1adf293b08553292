"""The federated training job, as a DAG:

    [resume: load-checkpoint (the signed state after the last completed round), retire the dead
             coordinator's regional runs]
    start-regions (one regional run per region for the whole job: flows/region.py; each says a
                   signed hello, and the Prefect API confirms where it runs)
    prepare-region (each region: read → parse → GX validate → quarantine → holdout split)
      → exclude failing regions, check quorum
    plan-privacy (region by region, sorted: calibrate DP-SGD noise for the whole job, reserve its budget;
                  a budget refusal releases every reservation and fails the job: all or nothing)
    secure-aggregation setup (each region: signed ephemeral keys, encrypted key shares)
    the core's round loop (fedcrm/federation/job.py::FederatedJob, over flows/transport.py):
    feature-statistics (each region, masked) → federated sum → fit-feature-pipeline → initial-model
      (coordinator tasks, computed by the core) → save-checkpoint (round 0)   [resume: from the checkpoint]
    for each round not yet trained:
        local-training (each region: DP-SGD, charge the ledger, clip, pack and mask the update)
          → federated sum (flows/aggregation.py: the coordinator learns only the sum)
          → aggregate-round (the learner turns the sum into the next model; its strategy: FedAvg, ...)
        local-evaluation when due (each region, holdout aggregates) → combine-metrics (the task type)
          → save-checkpoint
    personalise (each region: training.personal_rounds more rounds on its own rows, inside the plan's ε;
                 it keeps the better model on its holdout, for its own scoring)
    local-only-baseline (each region, same ε) and central-reference (bundled demo data only)
    load-champion → local-evaluation of the champion (each region, on the same holdouts)
    release-workspace (each region; the quarantine stays) → save-job (coordinator store)
    track-job (MLflow run + registered model version with lineage and ε tags)
    evaluate-gates → record-gates (tags, gates.json, alias "challenger" when all rules pass)
      → audit (gate.result in the coordinator's audit log, its head anchored on the version)
    record-compliance (compliance.json and compliance.html in the version's run) → JobSummary
    finish (every regional run ends) → anchor-audit (the regions' heads in the coordinator's log; its
                                     final head in an MLflow anchor run and on the version)

Every regional step is a request to the regional runs over the exchange (flows/dispatch.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from logging import Logger, LoggerAdapter
from datetime import datetime, timezone

import numpy as np
from prefect import flow, get_run_logger
from prefect.states import Completed, Failed

from connectors.exchange import Exchange, open_exchange
from fedcrm.channel import session_id
from fedcrm.config import FedcrmConfig
from fedcrm.errors import ConfigError, FedcrmError
from fedcrm.contract import DataContract
from fedcrm import protocol
from fedcrm.federation import FederatedJob, JobState, privacy_note
from fedcrm.gates import ChampionMeasure
from fedcrm.learners import make_learner
from fedcrm.protection import make_protection
from fedcrm.roster import Roster
from fedcrm.strategies import Strategy, make_strategy
from fedcrm.strategies.base import restore_strategy_state, strategy_state
from fedcrm.summary import Baselines, CentralReference, GateOutcome, JobSummary, SkippedBaseline
from fedcrm.task_types import make_task_type
from fedcrm.validation import contract_fingerprint, load_suite_dict
from flows.dispatch import RegionLinks
from flows.launch import (
    RunningRegions,
    finish_regions,
    retire_earlier_attempts,
    start_regions,
)
from flows.transport import ExchangeTransport
from tasks import coordinator
from tasks.registry import audit_event


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _run_baselines(job: _Job) -> Baselines:
    """What federation buys: each region alone (same ε), and a pooled ceiling on public demo data."""
    config, state, roster = job.config, job.state, job.roster
    out = job.federation.local_only_baselines() if config.baselines.local_only else Baselines()
    if config.baselines.central_reference:
        reference = coordinator.central_reference(config, state.job_id, roster.active, state.pipeline, state.initial)
        if reference["status"] == "computed":
            for region, m in reference["per_region"].items():
                roster.regions[region].central_reference = m
            out.central_reference = CentralReference(label=reference["label"], **reference["global"].model_dump())
        else:
            out.central_reference = SkippedBaseline(skipped=reference["reason"])
    return out


def _measure_champion(config: FedcrmConfig, links: RegionLinks, roster: Roster) -> ChampionMeasure | str | None:
    """The champion scored in every region on this job's holdouts (before they are released), or why not."""
    champion, problem = coordinator.load_champion(config)
    if champion is None:
        return problem or None
    replies = links.ask(protocol.LocalEvaluation, roster.active, pipeline=champion.pipeline,
                        global_vector=np.asarray(champion.model.parameters), round_number=0,
                        hidden_sizes=champion.model.hidden_sizes, learner=champion.model.learner)
    return coordinator.measure_champion(config, champion.version, replies)


def _gate(config: FedcrmConfig, result: JobSummary, champion: ChampionMeasure | str | None, logger) -> GateOutcome:
    """Evaluate the gates for the registered version and record them on it; a version whose gates
    could not be recorded never becomes a challenger."""
    if not config.gates.enabled:
        return GateOutcome(status="disabled")
    if isinstance(champion, str):  # there is a champion, but it could not be loaded: no comparison is possible
        champion = ChampionMeasure(version="unknown", unavailable={r: champion for r in result.regions})
    report = coordinator.gate_model(config, result, champion)
    outcome = GateOutcome.of(report)
    (logger.info if report.passed else logger.warning)("gates %s", report.verdict())
    if result.tracking.registered:
        try:
            coordinator.record_gates(config, report)
            outcome.challenger = report.passed
            audit_event(config, "gate.result", report.model_version,
                        {"job_id": result.job_id, "status": outcome.status, "verdict": report.verdict()})
        except FedcrmError as exc:
            logger.warning("the gate report could not be recorded in MLflow: %s", exc)
            outcome.recorded = f"failed: {exc}"
    return outcome


def _record_compliance(config: FedcrmConfig, result: JobSummary, logger) -> None:
    """The registered version's compliance report (compliance.json and .html in its MLflow run); a
    version without one is still registered and gated, so a failure is only a warning."""
    if not result.tracking.registered:
        return
    try:
        coordinator.record_compliance(config, result)
        result.tracking.compliance_report = "compliance.html, compliance.json"
    except Exception as exc:  # noqa: BLE001 - the report is an add-on to a registered version
        logger.warning("the compliance report could not be recorded in MLflow: %s", exc)
        result.tracking.compliance_report = f"failed: {type(exc).__name__}: {exc}"


@flow(name="fedcrm-train", persist_result=False, log_prints=False)
def federated_training(config: FedcrmConfig, job_id: str | None = None, resume: bool = False):
    """Train one model across the configured regions; returns the JobSummary (also when it fails).

    ``resume`` with the ``job_id`` of a job whose coordinator died goes on from its last completed
    round, on the regions' existing reservations: no ε is reserved or spent twice.
    """
    if resume and not job_id:
        raise ConfigError("resume needs the id of the job to resume", hint="fedcrm run --resume JOB_ID")
    config, job_id = config.with_deployment(), job_id or uuid.uuid4().hex[:12]
    started: list[RunningRegions] = []  # the regional runs, once launched: told to finish whatever happens
    try:
        return _train(config, job_id, resume, started)
    finally:
        for running in started:
            finish_regions(running)


@dataclass
class _Job:
    """One attempt at a job, as the flow's steps share it: the core state plus the links to the regions."""

    config: FedcrmConfig
    state: JobState
    logger: Logger | LoggerAdapter
    exchange: Exchange
    strategy: Strategy
    contract: DataContract
    attempt: Exchange | None = None
    """This attempt's exchange (its own mailboxes), once begun."""
    running: RunningRegions | None = None
    transport: ExchangeTransport | None = None
    federation: FederatedJob | None = None
    """The core's job over the regional runs, once they are started."""

    @property
    def links(self) -> RegionLinks:
        return self.running.links

    @property
    def roster(self) -> Roster:
        return self.state.roster

    def progress(self, stage: str, done: int, total: int, message: str, *args: object) -> None:
        self.logger.info(message, *args, extra={"fedcrm_progress": {"stage": stage, "done": done, "total": total}})

    def checkpoint(self, number: int) -> None:
        coordinator.save_checkpoint(self.config, self.exchange, self.state.to_checkpoint(
            self.config, number, self.attempt.attempt, strategy_state(self.strategy)))

    def summary(self, status: str, error: str = "") -> JobSummary:
        return self.state.summary(self.config, status=status, error=error, finished_at=_now(),
                                  contract_sha256=contract_fingerprint(self.contract),
                                  privacy=privacy_note(self.config, self.strategy.name))


def _train(config: FedcrmConfig, job_id: str, resume: bool, started: list[RunningRegions]):
    """The job's steps in order; a FedcrmError at any of them fails the job with its summary."""
    job = _Job(config, JobState(job_id, _now(), Roster(list(config.federation.regions))), get_run_logger(),
               open_exchange(config, job_id), make_strategy(config.strategy), config.load_contract())
    suite = load_suite_dict(job.contract, config.expectations_dir)
    champion, failure = None, None
    try:
        _begin(job, resume)
        job.progress("prepare", 0, 1, "job %s: starting %d regional run(s)", job_id, len(job.roster.active))
        job.running = start_regions(config, job.attempt, job.roster)
        started.append(job.running)
        _connect(job)
        job.roster.require_quorum(config.federation.min_regions, "start")
        job.progress("prepare", 0, 1, "job %s: validating %d region(s)", job_id, len(job.roster.active))
        job.federation.prepare(suite)
        first = _agree_features(job, job.federation.plan_privacy())
        for number in range(first, config.training.rounds + 1):
            _run_round(job, number)
        if config.training.personal_rounds:
            job.progress("personalise", 0, 1, "personal rounds in %d region(s)", len(job.roster.active))
            job.federation.personalise()
            chosen = sum(1 for r in job.roster.active if (p := job.roster.regions[r].personalisation) is not None
                         and p.chosen == "personalised")
            job.progress("personalise", 1, 1, "%d of %d region(s) keep their personalised model", chosen,
                         len(job.roster.active))
        job.state.baselines = _run_baselines(job)
        champion = _measure_champion(config, job.links, job.roster)
    except FedcrmError as exc:
        job.logger.error("job %s failed: %s", job_id, exc)
        failure = exc
    finally:
        _release_workspaces(job)
    if failure is not None:
        result = job.summary("failed", str(failure))
        if job.attempt is not None:  # a refused resume never overwrites what the job itself saved
            coordinator.save_job(config, result, None, None)
        return Failed(message=str(failure), data=result)
    return _publish(job, champion)


def _begin(job: _Job, resume: bool) -> None:
    """Open this attempt; a resumed job first loads its signed checkpoint and retires the dead coordinator's runs."""
    resumed = coordinator.load_checkpoint(job.config, job.exchange) if resume else None
    job.attempt = job.exchange.begin_attempt(job.state.started_at)
    if resumed is not None:
        job.state.restore(resumed)
        restore_strategy_state(job.strategy, resumed.strategy_state)
        job.logger.info("job %s: resuming after round %d (attempt %d)", job.state.job_id, resumed.round, job.attempt.attempt)
        retire_earlier_attempts(job.config, job.attempt, list(job.roster.regions))


def _connect(job: _Job) -> None:
    """The core's job over the started regional runs (the exchange transport)."""
    job.transport = ExchangeTransport(job.config, job.roster, job.links)
    job.federation = FederatedJob(job.config, job.state, job.transport, job.strategy, make_learner(job.config),
                                  make_task_type(job.config), job.logger, coordinator.as_coordinator_task)


def _agree_features(job: _Job, plans: dict[str, protocol.RegionPlan]) -> int:
    """Set up secure aggregation, and agree the feature pipeline from DP statistics (a resumed job has it
    in its checkpoint); returns the first round to train."""
    state = job.state
    job.transport.set_up_aggregation(session_id(state.job_id, job.attempt.attempt))
    if not state.resumed:
        job.federation.agree_features(job.contract)
        job.checkpoint(0)
        first = 1
    else:
        point = state.resume_point(job.attempt.attempt, [n for p in plans.values() for n in p.rounds_charged], _now())
        if point.lost_rounds:
            job.logger.warning("rounds %s were trained (and charged) before the coordinator stopped but never "
                               "aggregated: they are not repeated, and their ε stays spent", point.lost_rounds)
        first = point.first_round
    job.progress("prepare", 1, 1, "feature pipeline agreed: %d features from %d region(s)",
                 state.pipeline.n_features, len(job.roster.active))
    return first


def _run_round(job: _Job, number: int) -> None:
    """One round of the core's loop (train, sum, step the model, evaluate), then its progress and checkpoint."""
    record, metrics, rounds_total = job.federation.run_round(number), job.state.metrics, job.config.training.rounds
    eps_text = ", ".join(f"{r} {e:.2f}" for r, e in record.epsilon_spent.items()) or "not private"
    task = job.federation.task_type
    quality = (f"global {task.metric_labels[task.primary_metric]} {getattr(metrics, task.primary_metric):.4f}"
               f" (gap {metrics.auc_gap:.4f})" if record.metrics is not None else "not evaluated")
    job.progress("train", number, rounds_total, "round %d/%d: %s from %d region(s); cumulative ε: %s",
                 number, rounds_total, quality, len(record.participants), eps_text)
    job.checkpoint(number)


def _release_workspaces(job: _Job) -> None:
    """Every region whose run still answers deletes its working copies (the others do when told to finish)."""
    if job.federation is not None:
        job.federation.release_workspaces(job.links.answering(list(job.roster.regions)))


def _publish(job: _Job, champion: ChampionMeasure | str | None):
    """Save the model, register it in MLflow with its lineage, gate it, record its compliance report."""
    config, logger, state = job.config, job.logger, job.state
    result = job.summary("completed")
    coordinator.save_job(config, result, state.pipeline, state.vector)
    result.tracking = coordinator.track_job(config, result)
    tracking = result.tracking
    if tracking.registered:  # the job's final audit head is tagged on it at the end
        job.running.anchor_version = str(tracking.model_version)
    if tracking.status == "failed":
        logger.warning("MLflow registration failed (the model is saved): %s", tracking.error)
    elif tracking.registered and make_protection(config.privacy).spends_budget:  # else no ledger to link
        version = f"{tracking.model_name}/{tracking.model_version}"
        for region, reply in job.links.ask(protocol.RecordModelVersion, job.roster.active,
                                           model_version=version).items():
            if not reply.ok:
                logger.warning("region %s could not link model %s in its ledger: %s", region, version, reply.reason)
    result.gates = _gate(config, result, champion, logger)
    _record_compliance(config, result, logger)
    coordinator.save_job(config, result, state.pipeline, state.vector)
    try:  # so that the job is never resumed again; the model is saved either way
        job.exchange.mark_completed({"finished_at": result.finished_at, "model_version": result.tracking.model_version})
    except FedcrmError as exc:
        logger.warning("could not mark job %s completed in the exchange: %s", state.job_id, exc)
    return Completed(message=f"global AUC {state.metrics.auc:.4f}", data=result)
