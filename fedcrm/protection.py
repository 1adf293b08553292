"""How a job protects its records: record-level DP, or nothing (research only), chosen once.

Secure aggregation is already a swappable pair (an ``Aggregator`` at the coordinator, a
``Contributor`` in each region), and nothing asks "is secure aggregation on?" after it is built.
Differential privacy has the same shape here. ``make_protection`` reads ``privacy.mode`` (the only
place outside the config's own validation that does) and returns one of two objects with one
interface:

* ``DifferentialPrivacy``: every release is a DP mechanism that is planned, charged and composed:
  the region's DP-SGD plan (σ calibrated to the target ε from the *released* row count), the
  Gaussian mechanism on the feature statistics, the ledgers that hold the spend, the note next to
  every ε, and a model that may pass the deployment gates;
* ``NoProtection``: no plan, no noise, no ledger; a loud warning, and a model the gates never pass.

The steps ask the protection (``plan``, ``statistics_noise_multiplier``, ``note``, ``warning``,
``never_deployable``, ``spends_budget``) instead of testing a flag, and the trainer is picked by the
plan alone (DP-SGD when the region has one). Pure and torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from fedcrm.config import PrivacySpec, TrainingSpec
from fedcrm.privacy.plan import PrivacyPlan, ReleaseShape, make_plan
from fedcrm.privacy.randomness import randomness_warning
from fedcrm.privacy.release import public_row_count
from fedcrm.summary import PrivacyNote

if TYPE_CHECKING:
    from fedcrm.config import JobSpec


class RecordProtection(Protocol):
    spends_budget: bool
    """Whether its mechanisms spend ε, so that every region keeps a job ledger and a lifetime ledger."""

    def plan(self, n_train: int, training: TrainingSpec, *, region: str, shape: ReleaseShape | None = None) -> PrivacyPlan | None:
        """The region's plan for ``training`` over ``n_train`` rows (None: train without DP); ``shape`` is the
        learner's mechanism (default: DP-SGD with the configured clip)."""

    @property
    def statistics_noise_multiplier(self) -> float | None:
        """σ of the Gaussian mechanism on the feature statistics (None: released as exact ≥ k sums)."""

    @property
    def warning(self) -> str | None:
        """What the coordinator must log when the job starts (None when its ε holds as printed)."""

    @property
    def never_deployable(self) -> str | None:
        """Why no model of this job may pass the deployment gates (None when it may)."""

    def note(self, config: JobSpec, strategy: str) -> PrivacyNote:
        """How the job protects its records, in the words the CLI, MLflow and the compliance report use."""


@dataclass(frozen=True)
class DifferentialPrivacy:
    """Record-level DP: DP-SGD in every region, DP feature statistics, every spend in the ledgers."""

    spec: PrivacySpec
    spends_budget: bool = True

    def plan(self, n_train: int, training: TrainingSpec, *, region: str, shape: ReleaseShape | None = None) -> PrivacyPlan:
        """Made from the released count n_public ≤ n_train, so the released σ, q = batch / n_public and
        steps reveal only n_public. The trainer samples with exactly this q, so the accounting is exact
        for the sampling actually done (each record is in a batch with probability q; q = 1 for a
        learner whose every step uses every record)."""
        spec = self.spec
        shape = shape or ReleaseShape(sensitivity=spec.max_grad_norm)
        return make_plan(
            public_row_count(n_train, spec.min_k),
            batch_size=training.batch_size,
            local_epochs=training.local_epochs,
            rounds=training.rounds,
            personal_rounds=training.personal_rounds,
            target_epsilon=spec.target_epsilon,
            delta=spec.delta,
            accountant=spec.accountant,
            max_grad_norm=shape.sensitivity,
            max_noise_multiplier=spec.max_noise_multiplier,
            region=region,
            full_batch=shape.full_batch,
        )

    @property
    def statistics_noise_multiplier(self) -> float:
        return self.spec.statistics_noise_multiplier

    @property
    def warning(self) -> str | None:
        return randomness_warning(self.spec.randomness)  # research mode: the ε below does not hold

    @property
    def never_deployable(self) -> None:
        return None

    def note(self, config: JobSpec, strategy: str) -> PrivacyNote:
        spec, warning = self.spec, self.warning
        return PrivacyNote(
            differential_privacy=True, unit="record", target_epsilon=spec.target_epsilon, delta=spec.delta,
            accountant=spec.accountant, strategy=strategy, secure_aggregation=config.secure_aggregation.enabled,
            randomness=spec.randomness, epsilon_warning=warning, min_k=spec.min_k,
            note=(
                (f"WARNING: {warning} " if warning else "")
                + f"record-level DP-SGD in every region: ε ≤ {spec.target_epsilon:g} per region for this job "
                f"(δ = {spec.delta:g}, {spec.accountant.upper()} accountant); feature statistics by the "
                f"Gaussian mechanism (σ = {spec.statistics_noise_multiplier:g}); every spend is composed in each "
                f"region's lifetime ledger (population {config.population!r})"
                + ("; the coordinator saw sums only (secure aggregation)" if config.secure_aggregation.enabled
                   else "; secure aggregation was OFF: the coordinator saw each region's contribution")
            ),
        )


OFF = "privacy.mode is 'off': model updates are NOT differentially private"


@dataclass(frozen=True)
class NoProtection:
    """Research only: plain SGD, exact (≥ k) feature statistics, no ledger, never deployable."""

    spec: PrivacySpec
    spends_budget: bool = False

    def plan(self, n_train: int, training: TrainingSpec, *, region: str, shape: ReleaseShape | None = None) -> None:
        return None

    @property
    def statistics_noise_multiplier(self) -> None:
        return None

    @property
    def warning(self) -> str:
        return f"{OFF}. Research use only."

    @property
    def never_deployable(self) -> str:
        return "privacy.mode is 'off': never deployable"

    def note(self, config: JobSpec, strategy: str) -> PrivacyNote:
        return PrivacyNote(differential_privacy=False, unit="record", strategy=strategy,
                           secure_aggregation=config.secure_aggregation.enabled, min_k=self.spec.min_k,
                           note=f"{OFF} (research use only)")


def make_protection(privacy: PrivacySpec) -> RecordProtection:
    """The job's record protection: the one place that reads ``privacy.mode``."""
    return DifferentialPrivacy(privacy) if privacy.mode == "dp" else NoProtection(privacy)
