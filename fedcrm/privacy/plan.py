"""A region's privacy plan for one job and the ledger of what it actually spent.

The plan is made *inside the region* before training: from its own record count it derives
the Poisson sample rate, the DP-SGD steps the whole job will take (all rounds × local
epochs), and the noise multiplier that makes the *total* ε of those steps meet the target.
The ledger records each round's actual steps; ε spent is the accountant's composition of all
of them (cumulative, never per round), and a round that would go past the plan is refused.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from fedcrm.errors import PrivacyError
from fedcrm.privacy.accountant import AccountantName, PrivacyEvent, calibrate_noise_multiplier, check_delta, compose_epsilon


class PrivacyPlan(BaseModel):
    target_epsilon: float
    delta: float
    accountant: AccountantName
    max_grad_norm: float
    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    planned_steps: int
    planned_epsilon: float
    personal_steps: int = Field(0, description="Of the planned steps, those of the region's personal rounds (after the federated ones).")

    @property
    def federated_steps(self) -> int:
        return self.planned_steps - self.personal_steps


class ReleaseShape(BaseModel):
    """What one step of a learner's DP mechanism is, as its plan needs it: DP-SGD samples a Poisson
    batch and clips each record's gradient to C; the boosted-tree learner releases, at every step, sums
    over *all* records (``full_batch``: the plain Gaussian mechanism) of L2 sensitivity √(B · 17/16)."""

    full_batch: bool = False
    sensitivity: float = Field(gt=0, description="L2 sensitivity of one step's release; the noise is σ × it.")


def dp_steps_per_epoch(sample_rate: float) -> int:
    """Opacus' Poisson sampler draws int(1/q) batches per epoch."""
    return max(1, int(1 / sample_rate))


def make_plan(
    n_train: int,
    *,
    batch_size: int,
    local_epochs: int,
    rounds: int,
    target_epsilon: float,
    delta: float,
    accountant: AccountantName,
    max_grad_norm: float,
    max_noise_multiplier: float,
    region: str | None = None,
    full_batch: bool = False,
    personal_rounds: int = 0,
) -> PrivacyPlan:
    """``max_grad_norm`` is the sensitivity of one step (DP-SGD's clip); ``full_batch`` steps see every record.

    ``personal_rounds`` more rounds of the same mechanism follow the federated ones in the region (its
    personalised model): the noise is calibrated for all of them, so what the region gets stays within ε."""
    check_delta(delta, n_train, region=region)
    sample_rate = 1.0 if full_batch else min(1.0, batch_size / n_train)
    steps_per_round = local_epochs * dp_steps_per_epoch(sample_rate)
    planned_steps = (rounds + personal_rounds) * steps_per_round
    try:
        sigma = calibrate_noise_multiplier(
            target_epsilon=target_epsilon,
            delta=delta,
            sample_rate=sample_rate,
            steps=planned_steps,
            accountant=accountant,
            max_noise_multiplier=max_noise_multiplier,
        )
    except PrivacyError as exc:
        raise PrivacyError(f"{n_train} training records: {exc.message}", hint=exc.hint, region=region) from None
    planned = compose_epsilon([PrivacyEvent(noise_multiplier=sigma, sample_rate=sample_rate, steps=planned_steps)], delta, accountant)
    return PrivacyPlan(
        target_epsilon=target_epsilon,
        delta=delta,
        accountant=accountant,
        max_grad_norm=max_grad_norm,
        noise_multiplier=sigma,
        sample_rate=sample_rate,
        steps_per_round=steps_per_round,
        planned_steps=planned_steps,
        planned_epsilon=planned,
        personal_steps=personal_rounds * steps_per_round,
    )


class JobLedger(BaseModel):
    """One region's privacy spend in one job: the plan and every round's actual steps."""

    plan: PrivacyPlan
    events: list[PrivacyEvent] = Field(default_factory=list)
    rounds: list[int] = Field(default_factory=list, description="The federated rounds charged so far.")
    personalised: bool = Field(False, description="Whether the region's personal rounds are charged (once per job).")

    @property
    def steps_taken(self) -> int:
        return sum(e.steps for e in self.events)

    def epsilon_spent(self) -> float:
        return compose_epsilon(self.events, self.plan.delta, self.plan.accountant)

    def check_round(self, round_number: int | None = None) -> None:
        """Refuse a round that would take more steps than the plan calibrated for, or that this job has
        already trained: a resumed job never trains (and charges) a round twice."""
        if round_number is not None and round_number in self.rounds:
            raise PrivacyError(
                f"round {round_number} of this job was already trained and charged here (before its coordinator restarted)",
                hint="a resumed job goes on from the next round; that round's ε stays spent",
            )
        if self.personalised or self.steps_taken + self.plan.steps_per_round > self.plan.federated_steps:
            raise PrivacyError(
                f"this job's privacy plan for federated rounds is used up ({self.steps_taken} of "
                f"{self.plan.planned_steps} DP steps taken, {self.plan.personal_steps} of them kept for personalisation)",
                hint="start a new job; the plan covers exactly training.rounds rounds, then training.personal_rounds",
            )

    def charge_personal(self) -> float:
        """Charge the region's personal rounds (all at once, after the federated ones); returns the job's
        cumulative ε. Refused a second time: a resumed job never personalises (and charges) twice."""
        if self.personalised:
            raise PrivacyError("this job's personal rounds were already trained and charged here (before its "
                               "coordinator restarted)", hint="its ε stays spent; the region keeps the global model")
        if self.plan.personal_steps == 0:
            raise PrivacyError("this job's privacy plan has no personal rounds (training.personal_rounds was 0 when "
                               "the region planned it)", hint="set training.personal_rounds before the job starts")
        epsilon = self.charge(self.plan.personal_steps)
        self.personalised = True
        return epsilon

    def charge(self, steps: int, round_number: int | None = None) -> float:
        """Record a round's steps; returns the cumulative ε."""
        self.events.append(
            PrivacyEvent(noise_multiplier=self.plan.noise_multiplier, sample_rate=self.plan.sample_rate, steps=steps)
        )
        if round_number is not None:
            self.rounds.append(round_number)
        return self.epsilon_spent()
