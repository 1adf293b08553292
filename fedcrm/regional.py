"""The region-side steps of a job, as pure functions over frames.

Orchestration (``tasks/``) reads the region's records through a connector, calls these, keeps
the frames in the region's private store, and sends onward only what these functions mark as
releasable: validation reports (counts), feature statistics (sums over ≥ k rows), model
updates and evaluation aggregates.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fedcrm.config import JobSpec
from fedcrm.contract import DataContract
from fedcrm.errors import ContractError, FeatureError, PrivacyError
from fedcrm.evaluation import RegionMetrics
from fedcrm.aggregation import statistics_bounds
from fedcrm.features import (
    FeaturePipeline, StatisticsScale, add_gaussian_noise, region_statistics, statistics_sensitivity,
)
from fedcrm.privacy.noise import NoiseSource, SecureGaussian
from fedcrm.privacy.randomness import Randomness, job_randomness
from fedcrm.privacy import release
from fedcrm.privacy.plan import PrivacyPlan
from fedcrm.privacy.release import describe_count
from fedcrm.protection import make_protection
from fedcrm.records import TARGET, parse_records
from fedcrm.split import holdout_mask
from fedcrm.task_types import make_task_type
from fedcrm.training import DPSGDTrainer, LocalTrainer, LocalUpdate, SGDTrainer, positive_weight
from fedcrm.validation import ValidationReport, failed_report, validate_records


FINGERPRINT_KEY_BYTES = 32


def fingerprint(raw: pd.DataFrame, key: bytes) -> str:
    """HMAC-SHA256 of the extracted records under the region's own secret ``key``: lineage for a model
    version and a changed-data check on resume.

    Keyed, because a plain hash is deterministic: whoever guesses a region's data set could hash it
    and confirm the guess against the released value. Without the key (it never leaves the region's
    store) the fingerprint reveals nothing, yet stays equal for equal data, so resume still detects
    changed records."""
    if len(key) < FINGERPRINT_KEY_BYTES:
        raise ValueError(f"the fingerprint key must have at least {FINGERPRINT_KEY_BYTES} bytes")
    digest = hmac.new(key, ",".join(map(str, raw.columns)).encode(), hashlib.sha256)
    digest.update(pd.util.hash_pandas_object(raw.astype("string"), index=False).to_numpy().tobytes())
    return digest.hexdigest()


@dataclass
class PreparedRegion:
    report: ValidationReport
    train: pd.DataFrame | None = None
    holdout: pd.DataFrame | None = None
    quarantined: pd.DataFrame | None = None

    @property
    def usable(self) -> bool:
        return self.report.success and self.train is not None


def prepare_region(
    raw: pd.DataFrame, contract: DataContract, config: JobSpec, *, region: str, suite: dict[str, Any], source: str
) -> PreparedRegion:
    """Parse, validate, quarantine and split off the holdout.

    The training rows are the parsed records as they are: no value is rewritten from what other
    rows hold (no rare-value suppression, no median), so a neighbouring data set differs in one
    training row and DP-SGD's and the statistics' sensitivities hold. Parsing, range checks and the
    holdout (id hash, or event time against the public ``holdout.since``) are row-local; only the
    table-level pass/fail of validation is not.
    """
    if raw.shape[0] == 0:
        return PreparedRegion(failed_report(region, contract, f"{source} holds no records; the region has nothing to contribute"))
    try:
        parsed = parse_records(raw, contract, source=source)
    except ContractError as exc:
        return PreparedRegion(failed_report(region, contract, exc.message + (f" → {exc.hint}" if exc.hint else ""), n_rows=len(raw)))
    k = config.privacy.min_k
    report = validate_records(parsed, contract, region=region, suite=suite, min_k=k)
    quarantined = raw.reset_index(drop=True).loc[parsed.malformed.to_numpy()]
    if not report.success:
        return PreparedRegion(report, quarantined=quarantined)
    clean = parsed.clean
    in_holdout = holdout_mask(
        clean, contract, fraction=config.holdout.fraction, seed=config.holdout.seed, since=config.holdout.since
    )
    train, holdout = clean.loc[~in_holdout].reset_index(drop=True), clean.loc[in_holdout].reset_index(drop=True)
    task = make_task_type(config)
    for name, part in (("training", train), ("holdout", holdout)):
        # the message leaves the region: the task type words it with released counts only
        if problem := task.label_problem(part[TARGET].to_numpy(), split=name, min_k=k):
            report.success = False
            report.failures.append(problem)
    if not report.success:
        return PreparedRegion(report, quarantined=quarantined)
    return PreparedRegion(report, train=train, holdout=holdout, quarantined=quarantined)


def feature_statistics(
    train: pd.DataFrame, contract: DataContract, *, min_k: int, noise_multiplier: float | None = None, noise=None
) -> np.ndarray:
    """This region's contribution to the federated moments: a sum over ≥ k rows in normalised units,
    with Gaussian noise (record-level DP) when ``noise_multiplier`` is given."""
    if len(train) < min_k:
        raise FeatureError(f"{describe_count(len(train), min_k)} training rows; statistics need at least {min_k}")
    scale = StatisticsScale.from_contract(contract)
    statistics = region_statistics(train, scale)
    if noise_multiplier is None:
        return statistics
    return add_gaussian_noise(statistics, scale, noise_multiplier, noise or SecureGaussian())


def public_row_count(n: int, config: JobSpec) -> int:
    """The training-row count that may leave the region (``fedcrm.privacy.release.public_row_count``)."""
    return release.public_row_count(n, config.privacy.min_k)


def privacy_plan(n_train: int, config: JobSpec, *, region: str) -> PrivacyPlan | None:
    """This region's plan for the job's learner, as the job's record protection makes it (None without DP)."""
    from fedcrm.learners import make_learner

    shape = make_learner(config).release_shape(config.privacy)
    return make_protection(config.privacy).plan(n_train, config.training, region=region, shape=shape)


def randomness(config: JobSpec, seed: int) -> Randomness:
    """The DP mechanisms' batch sampling and noise: cryptographically secure unless research mode
    (``privacy.randomness: seeded``) asks for both to be reproducible from ``seed``."""
    return job_randomness(config.privacy.randomness, seed)


def noise_source(config: JobSpec, seed: int) -> NoiseSource:
    """The noise of ``randomness`` alone (the feature statistics sample no batches)."""
    return randomness(config, seed).noise


def statistics_noise_multiplier(config: JobSpec) -> float | None:
    """σ of the Gaussian mechanism on the feature statistics (None without DP)."""
    return make_protection(config.privacy).statistics_noise_multiplier


def statistics_codec_bounds(config: JobSpec, contract: DataContract) -> np.ndarray:
    """Public bounds on one region's (noisy) statistics, for secure aggregation (a trusted plain
    aggregator also accepts columns without a declared range)."""
    if not config.secure_aggregation.enabled and StatisticsScale.from_contract(contract).unbounded:
        return np.full(3 * len(contract.numeric), np.inf)
    sigma = statistics_noise_multiplier(config)
    std = 0.0 if sigma is None else sigma * statistics_sensitivity(StatisticsScale.from_contract(contract))
    return statistics_bounds(contract, config.secure_aggregation.max_weight, std)


def make_trainer(
    config: JobSpec, plan: PrivacyPlan | None, labels: np.ndarray, *, prox_mu: float = 0.0, seed: int = 0
) -> LocalTrainer:
    """DP-SGD when the region has a privacy plan, plain SGD otherwise: chosen once, here.

    Under DP every parameter of the trainer is public or part of the plan: the expected batch size
    (the divisor of the noised gradient sum) is q × the released row count, and the positive weight
    is 1 (``class_weighting: balanced`` reads the exact label counts and is refused under DP by the
    config)."""
    if plan is None:
        pos_weight = positive_weight(labels, config.training.class_weighting)
        return SGDTrainer(config.training, pos_weight=pos_weight, prox_mu=prox_mu)
    if config.training.class_weighting != "none":  # the config refuses it; a model_copy skips validation
        raise PrivacyError("class_weighting 'balanced' is data-dependent and cannot be used under DP")
    return DPSGDTrainer(
        config.training,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.max_grad_norm,
        sample_rate=plan.sample_rate,
        expected_batch_size=max(1, round(plan.sample_rate * public_row_count(len(labels), config))),
        prox_mu=prox_mu,
        randomness=randomness(config, seed),
    )


def local_round(
    train: pd.DataFrame, pipeline: FeaturePipeline, global_vector: np.ndarray, config: JobSpec, *,
    seed: int, plan: PrivacyPlan | None = None, prox_mu: float = 0.0,
) -> LocalUpdate:
    """The region's training for a round, by the job's learner (``fedcrm/learners``)."""
    from fedcrm.learners import make_learner

    return make_learner(config).train(train, pipeline, global_vector, plan=plan, seed=seed, prox_mu=prox_mu)


def local_evaluation(
    holdout: pd.DataFrame, pipeline: FeaturePipeline, global_vector: np.ndarray, config: JobSpec
) -> RegionMetrics:
    """A model's aggregate metrics on the region's holdout (released: counts rounded to k)."""
    from fedcrm.learners import make_learner

    outputs = make_learner(config).predict(pipeline, global_vector, holdout)
    return make_task_type(config).evaluate(holdout[TARGET].to_numpy(), outputs, min_k=config.privacy.min_k)


def baseline_spec(config: JobSpec) -> JobSpec:
    """A baseline sees each record as often as the region's own model did: (rounds + personal rounds) ×
    local epochs, in one local run."""
    training = config.training
    epochs = (training.rounds + training.personal_rounds) * training.local_epochs
    update = {"local_epochs": epochs, "rounds": 1, "personal_rounds": 0}
    return config.model_copy(update={"training": training.model_copy(update=update)})
