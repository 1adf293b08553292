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
    feature-statistics (each region, masked) → federated sum → fit-feature-pipeline (coordinator)
    initial-model → save-checkpoint (round 0)                     [resume: from the checkpoint instead]
    for each round not yet trained:
        local-training (each region: DP-SGD, charge the ledger, clip, pack and mask the update)
          → federated sum (flows/aggregation.py: the coordinator learns only the sum)
          → aggregate-round (coordinator: the strategy turns the mean update into the next model)
        local-evaluation (each region, holdout aggregates) → combine-metrics → save-checkpoint
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

import time
import uuid
from datetime import datetime, timezone

import numpy as np
from prefect import flow, get_run_logger
from prefect.states import Completed, Failed

from connectors.exchange import open_exchange
from fedcrm import regional as regional_core
from fedcrm.aggregation import update_bounds, update_norm_screen
from fedcrm.channel import session_id
from fedcrm.checkpoint import JobCheckpoint, resume_fingerprint
from fedcrm.config import FedcrmConfig
from fedcrm.errors import ConfigError, FedcrmError, FederationError
from fedcrm.evaluation import combine_metrics
from fedcrm.gates import ChampionMeasure
from fedcrm.privacy.randomness import randomness_warning
from fedcrm.roster import Roster
from fedcrm.strategies import make_strategy
from fedcrm.strategies.base import restore_strategy_state, strategy_state
from fedcrm.summary import JobSummary, PrivacyNote, RoundSummary
from fedcrm.validation import contract_fingerprint, load_suite_dict
from flows.aggregation import federated_sum, set_up_aggregation
from flows.dispatch import RegionLinks, record_preparation, reserve_all_or_nothing, run_step
from flows.launch import (
    RunningRegions,
    finish_regions,
    retire_earlier_attempts,
    start_regions,
)
from tasks import coordinator, regional
from tasks.registry import audit_event


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _run_baselines(config: FedcrmConfig, job_id: str, links: RegionLinks, roster: Roster, pipeline, initial) -> dict[str, object]:
    """What federation buys: each region alone (same ε), and a pooled ceiling on public demo data."""
    out: dict[str, object] = {}
    if config.baselines.local_only:
        replies = links.ask(regional.local_only_baseline, roster.active, pipeline=pipeline, initial_vector=initial)
        alone, failed = {}, {}
        for region, reply in replies.items():
            if reply.ok:
                entry = roster.regions[region]
                entry.local_only, entry.epsilon_job_total = reply.value.metrics, reply.value.epsilon_job_total
                alone[region] = reply.value.metrics
            else:
                failed[region] = reply.reason
        if alone:
            out["local_only"] = combine_metrics(alone).model_dump()
        if failed:
            out["local_only_failed"] = failed
    if config.baselines.central_reference:
        reference = coordinator.central_reference(config, job_id, roster.active, pipeline, initial)
        if reference["status"] == "computed":
            for region, m in reference["per_region"].items():
                roster.regions[region].central_reference = m
            out["central_reference"] = {"label": reference["label"], **reference["global"].model_dump()}
        else:
            out["central_reference"] = {"skipped": reference["reason"]}
    return out


def _measure_champion(config: FedcrmConfig, links: RegionLinks, roster: Roster) -> ChampionMeasure | str | None:
    """The champion scored in every region on this job's holdouts (before they are released), or why not."""
    champion, problem = coordinator.load_champion(config)
    if champion is None:
        return problem or None
    replies = links.ask(regional.local_evaluation, roster.active, pipeline=champion.pipeline,
                        global_vector=np.asarray(champion.parameters), round_number=0, hidden_sizes=champion.hidden_sizes)
    return coordinator.measure_champion(champion.version, replies)


def _gate(config: FedcrmConfig, result: JobSummary, champion: ChampionMeasure | str | None, logger) -> dict[str, object]:
    """Evaluate the gates for the registered version and record them on it; a version whose gates
    could not be recorded never becomes a challenger."""
    if not config.gates.enabled:
        return {"status": "disabled"}
    if isinstance(champion, str):  # there is a champion, but it could not be loaded: no comparison is possible
        champion = ChampionMeasure(version="unknown", unavailable={r: champion for r in result.regions})
    report = coordinator.gate_model(config, result, champion)
    outcome: dict[str, object] = {"status": "passed" if report.passed else "failed", **report.model_dump(mode="json")}
    (logger.info if report.passed else logger.warning)("gates %s", report.verdict())
    if result.tracking.get("status") == "registered":
        try:
            coordinator.record_gates(config, report)
            outcome["challenger"] = report.passed
            audit_event(config, "gate.result", report.model_version,
                        {"job_id": result.job_id, "status": outcome["status"], "verdict": report.verdict()})
        except FedcrmError as exc:
            logger.warning("the gate report could not be recorded in MLflow: %s", exc)
            outcome["recorded"] = f"failed: {exc}"
    return outcome


def _record_compliance(config: FedcrmConfig, result: JobSummary, logger) -> None:
    """The registered version's compliance report (compliance.json and .html in its MLflow run); a
    version without one is still registered and gated, so a failure is only a warning."""
    if result.tracking.get("status") != "registered":
        return
    try:
        coordinator.record_compliance(config, result)
        result.tracking["compliance_report"] = "compliance.html, compliance.json"
    except Exception as exc:  # noqa: BLE001 - the report is an add-on to a registered version
        logger.warning("the compliance report could not be recorded in MLflow: %s", exc)
        result.tracking["compliance_report"] = f"failed: {type(exc).__name__}: {exc}"


def _privacy_note(config: FedcrmConfig, strategy: str) -> PrivacyNote:
    private = config.privacy.mode == "dp"
    warning = randomness_warning(config.privacy.randomness) if private else None  # the ε below does not hold
    return PrivacyNote(
        differential_privacy=private,
        unit="record",
        target_epsilon=config.privacy.target_epsilon if private else None,
        delta=config.privacy.delta if private else None,
        accountant=config.privacy.accountant if private else None,
        strategy=strategy,
        secure_aggregation=config.secure_aggregation.enabled,
        randomness=config.privacy.randomness if private else None,
        epsilon_warning=warning,
        min_k=config.privacy.min_k,
        note=(
            (f"WARNING: {warning} " if warning else "")
            + f"record-level DP-SGD in every region: ε ≤ {config.privacy.target_epsilon:g} per region for this job "
            f"(δ = {config.privacy.delta:g}, {config.privacy.accountant.upper()} accountant); feature statistics by the "
            f"Gaussian mechanism (σ = {config.privacy.statistics_noise_multiplier:g}); every spend is composed in each "
            f"region's lifetime ledger (population {config.population!r})"
            + ("; the coordinator saw sums only (secure aggregation)" if config.secure_aggregation.enabled
               else "; secure aggregation was OFF: the coordinator saw each region's contribution")
            if private
            else "privacy.mode is 'off': model updates are NOT differentially private (research use only)"
        ),
    )


def _warn_if_small(logger, contributors: list[str], *, already: bool) -> bool:
    """Say once per job when a sum has fewer than 3 contributors: each then reveals the other (docs/security.md)."""
    if len(contributors) < 3 and not already:
        logger.warning(
            "only %d region(s) %s contribute to the aggregate: each can infer the other's (DP-noised) contribution "
            "from the result, secure aggregation or not; set federation.min_regions ≥ 3 to refuse such jobs",
            len(contributors), contributors,
        )
        return True
    return already


@flow(name="fedcrm-train", persist_result=False, log_prints=False)
def federated_training(config: FedcrmConfig, job_id: str | None = None, resume: bool = False):
    """Train one model across the configured regions; returns the JobSummary (also when it fails).

    ``resume`` with the ``job_id`` of a job whose coordinator died goes on from its last completed
    round, on the regions' existing reservations: no ε is reserved or spent twice.
    """
    if resume and not job_id:
        raise ConfigError("resume needs the id of the job to resume", hint="fedcrm run --resume JOB_ID")
    job_id = job_id or uuid.uuid4().hex[:12]
    started: list[RunningRegions] = []  # the regional runs, once launched: told to finish whatever happens
    try:
        return _train(config, job_id, resume, started)
    finally:
        for running in started:
            finish_regions(running)


def _train(config: FedcrmConfig, job_id: str, resume: bool, started: list[RunningRegions]):
    logger = get_run_logger()
    started_at = _now()
    contract = config.load_contract()
    suite = load_suite_dict(contract, config.expectations_dir)
    roster = Roster(list(config.federation.regions))
    strategy = make_strategy(config.strategy)
    rounds: list[RoundSummary] = []
    pipeline = vector = initial = metrics = None
    failure: FedcrmError | None = None
    baselines: dict[str, object] = {}
    resumes: list[dict[str, object]] = []
    small = False

    def progress(stage: str, done: int, total: int, message: str, *args: object) -> None:
        logger.info(message, *args, extra={"fedcrm_progress": {"stage": stage, "done": done, "total": total}})

    def summary(status: str, error: str = "") -> JobSummary:
        if metrics is not None:
            for region, m in rounds[-1].region_metrics.items():
                roster.regions[region].metrics = m
        for past in rounds:
            for region, epsilon in past.epsilon_spent.items():
                roster.regions[region].epsilon_spent = epsilon
        return JobSummary(
            job_id=job_id,
            use_case=config.use_case,
            status=status,
            error=error,
            contract_sha256=contract_fingerprint(contract),
            started_at=started_at,
            finished_at=_now(),
            regions=roster.regions,
            rounds=rounds,
            metrics=metrics,
            model={} if pipeline is None else {
                "n_features": pipeline.n_features,
                "n_parameters": int(vector.shape[0]) if vector is not None else 0,
                "hidden_sizes": config.training.hidden_sizes,
            },
            privacy=_privacy_note(config, strategy.name),
            config=config.model_dump(mode="json"),
            baselines=baselines,
            resumes=resumes,
        )

    def checkpoint(number: int, attempt: int) -> None:
        coordinator.save_checkpoint(config, exchange, JobCheckpoint(
            job_id=job_id, attempt=attempt, round=number, started_at=started_at,
            config_fingerprint=resume_fingerprint(config), regions=roster.regions, rounds=rounds, pipeline=pipeline,
            vector=vector, initial_vector=initial, strategy_state=strategy_state(strategy),
            warned_small_aggregate=small, resumes=resumes,
        ))

    running: RunningRegions | None = None
    exchange = open_exchange(config, job_id)
    attempt = champion = None
    try:
        minimum = config.federation.min_regions
        resumed = coordinator.load_checkpoint(config, exchange) if resume else None
        attempt = exchange.begin_attempt(started_at)
        if resumed is not None:
            started_at, rounds, resumes, small = resumed.started_at, resumed.rounds, resumed.resumes, resumed.warned_small_aggregate
            roster.regions.update(resumed.regions)
            pipeline, vector, initial = resumed.pipeline, resumed.vector, resumed.initial_vector
            restore_strategy_state(strategy, resumed.strategy_state)
            metrics = next((r.metrics for r in reversed(rounds) if r.metrics is not None), None)
            logger.info("job %s: resuming after round %d (attempt %d)", job_id, resumed.round, attempt.attempt)
            retire_earlier_attempts(config, attempt, list(roster.regions))
        progress("prepare", 0, 1, "job %s: starting %d regional run(s)", job_id, len(roster.active))
        running = start_regions(config, attempt, roster)
        started.append(running)
        links = running.links
        roster.require_quorum(minimum, "start")
        progress("prepare", 0, 1, "job %s: validating %d region(s)", job_id, len(roster.active))
        fingerprints = {r: e.data_fingerprint for r, e in roster.regions.items()}
        record_preparation(roster, links.ask(regional.prepare_region, roster.active, suite=suite))
        if resumed is not None:
            for region in roster.active:
                if roster.regions[region].data_fingerprint != fingerprints[region]:
                    roster.exclude(region, "resume", "its records changed since the job started (and its prepared "
                                                     "copy is gone), so it cannot resume this job; start a new job")
        for region, entry in roster.regions.items():
            if entry.status == "excluded":
                logger.warning("region %s excluded at %s: %s", region, entry.excluded_at, entry.reason)
        roster.require_quorum(minimum, "validation")

        plans = reserve_all_or_nothing(roster, links, regional.plan_privacy, regional.release_workspace, min_regions=minimum)
        for region, plan in plans.items():
            roster.regions[region].privacy_plan = plan.plan
        if config.privacy.mode == "off":
            logger.warning("privacy.mode is 'off': model updates are NOT differentially private. Research use only.")
        elif (warning := randomness_warning(config.privacy.randomness)) is not None:
            logger.warning(warning)

        aggregator = set_up_aggregation(config, session_id(job_id, attempt.attempt), roster, links)
        if resumed is None:
            statistics, _, _ = federated_sum(
                config, roster, links, aggregator, round_number=0, step="feature statistics",
                regional_task=regional.feature_statistics,
                bounds=regional_core.statistics_codec_bounds(config, contract),
            )
            small = _warn_if_small(logger, statistics.contributors, already=False)
            pipeline = coordinator.fit_feature_pipeline(config, statistics)
            vector = initial = coordinator.initial_model(config, pipeline.n_features)
            checkpoint(0, attempt.attempt)
            first = 1
        else:
            first = max([resumed.round, *(n for p in plans.values() for n in p.rounds_charged)]) + 1
            lost = list(range(resumed.round + 1, first))
            resumes.append({"attempt": attempt.attempt, "started_at": _now(), "after_round": resumed.round, "lost_rounds": lost})
            if lost:
                logger.warning("rounds %s were trained (and charged) before the coordinator stopped but never aggregated: "
                               "they are not repeated, and their ε stays spent", lost)
        progress("prepare", 1, 1, "feature pipeline agreed: %d features from %d region(s)", pipeline.n_features, len(roster.active))

        rounds_total = config.training.rounds
        for number in range(first, rounds_total + 1):
            began, transport_before = time.perf_counter(), links.transport_s
            summed, released, aggregation_s = federated_sum(
                config, roster, links, aggregator, round_number=number, step=f"round {number} training",
                regional_task=regional.local_training,
                bounds=update_bounds(vector.size, config.secure_aggregation.max_weight, config.strategy.max_update_norm),
                screen=update_norm_screen(config.strategy.max_update_norm),
                pipeline=pipeline, global_vector=vector, prox_mu=strategy.prox_mu,
            )
            for region, reason in summed.dropped.items():
                logger.warning("round %d: update of region %s dropped: %s", number, region, reason)
            if len(summed.contributors) < minimum:
                raise FederationError(
                    f"round {number}: only {len(summed.contributors)} acceptable update(s), federation.min_regions is {minimum}",
                    hint="see the dropped regions' reasons (update norm, NaN/Inf, secure-aggregation dropouts)",
                )
            small = _warn_if_small(logger, summed.contributors, already=small)
            vector, loss, quantization = coordinator.aggregate_round(strategy, aggregator, vector, summed)
            evaluated = number % config.training.evaluate_every == 0 or number == rounds_total
            region_metrics, round_metrics = {}, None
            if evaluated:
                region_metrics = run_step(roster, links, f"round {number} evaluation", regional.local_evaluation, min_regions=minimum, pipeline=pipeline, global_vector=vector,
                                          round_number=number)
                metrics = round_metrics = coordinator.global_metrics(region_metrics)
            spent = {r: u.epsilon_spent for r, u in released.items() if u.epsilon_spent is not None}
            rounds.append(RoundSummary(
                round=number, participants=summed.contributors, mean_loss=loss, metrics=round_metrics,
                region_metrics=region_metrics, epsilon_spent=spent, dropped=summed.dropped,
                aggregation="secure" if config.secure_aggregation.enabled else "plain", quantization_error_bound=quantization,
                duration_s=time.perf_counter() - began, aggregation_s=aggregation_s,
                transport_s=links.transport_s - transport_before,
            ))
            eps_text = ", ".join(f"{r} {e:.2f}" for r, e in spent.items()) or "not private"
            auc_text = f"global AUC {metrics.auc:.4f} (gap {metrics.auc_gap:.4f})" if round_metrics else "not evaluated"
            progress("train", number, rounds_total, "round %d/%d: %s from %d region(s); cumulative ε: %s",
                     number, rounds_total, auc_text, len(summed.contributors), eps_text)
            checkpoint(number, attempt.attempt)

        baselines = _run_baselines(config, job_id, links, roster, pipeline, initial)
        champion = _measure_champion(config, links, roster)
    except FedcrmError as exc:
        logger.error("job %s failed: %s", job_id, exc)
        failure = exc
    finally:
        answering = [] if running is None else running.links.answering(list(roster.regions))
        for region, reply in running.links.ask(regional.release_workspace, answering).items() if answering else ():
            if not reply.ok:
                logger.warning("region %s could not release its workspace: %s", region, reply.reason)
            elif reply.value is not None:  # the region's lifetime ledger is the source of truth for ε
                roster.regions[region].privacy_budget = reply.value
                if reply.value["job_epsilon"] > 0:
                    roster.regions[region].epsilon_job_total = reply.value["job_epsilon"]
    if failure is not None:
        result = summary("failed", str(failure))
        if attempt is not None:  # a refused resume never overwrites what the job itself saved
            coordinator.save_job(config, result, None, None)
        return Failed(message=str(failure), data=result)
    result = summary("completed")
    coordinator.save_job(config, result, pipeline, vector)
    result.tracking = coordinator.track_job(config, result)
    if result.tracking.get("status") == "registered":  # the job's final audit head is tagged on it at the end
        running.anchor_version = str(result.tracking["model_version"])
    if result.tracking.get("status") == "failed":
        logger.warning("MLflow registration failed (the model is saved): %s", result.tracking["error"])
    elif result.tracking.get("status") == "registered" and config.privacy.mode == "dp":
        version = f"{result.tracking['model_name']}/{result.tracking['model_version']}"
        for region, reply in running.links.ask(regional.record_model_version, roster.active,
                                               model_version=version).items():
            if not reply.ok:
                logger.warning("region %s could not link model %s in its ledger: %s", region, version, reply.reason)
    result.gates = _gate(config, result, champion, logger)
    _record_compliance(config, result, logger)
    coordinator.save_job(config, result, pipeline, vector)
    try:  # so that the job is never resumed again; the model is saved either way
        exchange.mark_completed({"finished_at": result.finished_at, "model_version": result.tracking.get("model_version")})
    except FedcrmError as exc:
        logger.warning("could not mark job %s completed in the exchange: %s", job_id, exc)
    return Completed(message=f"global AUC {metrics.auc:.4f}", data=result)
