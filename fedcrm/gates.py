"""Automatic gates between a registered model version and the CRM.

Every rule reports its value, its threshold and whether it passed, so that the report explains
itself to whoever approves (or cannot approve) the version. The champion is measured *in the same
job*, on the same regional holdouts as the candidate, so a non-regression rule never compares
numbers from different data.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from fedcrm.config import GateSpec, JobSpec
from fedcrm.protection import make_protection
from fedcrm.summary import GateReport, GateRule, JobSummary
from fedcrm.task_types import make_task_type

__all__ = ["ChampionMeasure", "GateReport", "GateRule", "evaluate_gates"]

EPSILON_SLACK = 1e-6
FLOAT_TOLERANCE = 1e-12
"""Two values of a metric on the same holdout (AUCs: fractions of the same pairs) may differ in the last bit."""


class ChampionMeasure(BaseModel):
    """The champion, evaluated in this job's regions on this job's holdouts: its primary metric (the task
    type's; the fields keep their historical ``auc`` names)."""

    version: str
    global_auc: float | None = None
    region_auc: dict[str, float] = Field(default_factory=dict)
    unavailable: dict[str, str] = Field(default_factory=dict, description="Region → why the champion could not be scored.")


def _at_least(rule: str, scope: str, value: float | None, threshold: float, detail: str = "") -> GateRule:
    return GateRule(rule=rule, scope=scope, value=value, threshold=threshold, comparison=">=",
                    passed=value is not None and value >= threshold - FLOAT_TOLERANCE, detail=detail)


def _at_most(rule: str, scope: str, value: float | None, threshold: float, detail: str = "") -> GateRule:
    return GateRule(rule=rule, scope=scope, value=value, threshold=threshold, comparison="<=",
                    passed=value is not None and value <= threshold + FLOAT_TOLERANCE, detail=detail)


def evaluate_gates(summary: JobSummary, policy: GateSpec, config: JobSpec,
                   champion: ChampionMeasure | None) -> GateReport:
    """Every rule of the policy for the job's model; the report passes only if all of them pass.

    The quality rules compare the task type's primary metric (AUC for binary classification; the
    rule and policy names keep saying ``auc``)."""
    task = make_task_type(config)
    primary = task.primary_metric
    label = task.metric_labels[primary]
    included = [r for r, e in summary.regions.items() if e.status == "included"]
    region_auc = {r: getattr(summary.regions[r].metrics, primary) for r in included
                  if summary.regions[r].metrics is not None}
    rules = [
        _at_least("participating_regions", "global", float(len(included)),
                  float(policy.min_regions or config.federation.min_regions)),
        _at_least("auc_floor", "global", getattr(summary.metrics, primary) if summary.metrics else None,
                  policy.min_global_auc),
    ]
    for region in included:
        rules.append(_at_least("auc_floor", region, region_auc.get(region), policy.min_region_auc))
    if len(region_auc) >= 2:
        gap = max(region_auc.values()) - min(region_auc.values())
        rules.append(_at_most("region_gap", "global", gap, policy.max_region_gap,
                              f"best {max(region_auc, key=region_auc.get)}, worst {min(region_auc, key=region_auc.get)}"))
    if policy.beat_local_only:
        for region in included:
            entry = summary.regions[region]
            if entry.local_only is not None:
                reference = getattr(entry.local_only, primary)
                gets, what = region_auc.get(region), "global model"
                if entry.personalisation is not None:  # what the region actually scores with
                    gets, what = getattr(entry.personalisation.delivered(), primary), f"{entry.personalisation.chosen} model"
                rules.append(_at_least("beats_local_only", region, gets, reference - policy.local_only_tolerance,
                                       f"its {what} against local-only {label} {reference:.4f}"))
    rules.extend(_privacy_rules(summary, config, included))
    if champion is not None:
        global_value = getattr(summary.metrics, primary) if summary.metrics else None
        rules.extend(_champion_rules(global_value, policy, champion, region_auc, included))
    return GateReport(model_version=summary.tracking.model_version or None,
                      champion_version=champion.version if champion else None,
                      passed=all(r.passed for r in rules), rules=rules)


def _privacy_rules(summary: JobSummary, config: JobSpec, included: list[str]) -> list[GateRule]:
    if (refusal := make_protection(config.privacy).never_deployable) is not None:
        return [GateRule(rule="differential_privacy", scope="global", value=None, threshold=None, comparison=">=",
                         passed=False, detail=refusal)]
    rules = []
    for region in included:
        entry = summary.regions[region]
        # the target the region calibrated its noise for (its plan), not whatever the configuration says now
        target = entry.privacy_plan.target_epsilon if entry.privacy_plan is not None else config.privacy.target_epsilon
        rules.append(_at_most("epsilon_within_target", region, entry.epsilon_spent,
                              target + EPSILON_SLACK, "the federated model's ε in this job (its privacy plan's target)"))
        if entry.privacy_budget:
            budget = entry.privacy_budget
            rules.append(_at_most("lifetime_budget", region, budget.spent, budget.budget + EPSILON_SLACK,
                                  f"population {budget.population}"))
    return rules


def _champion_rules(global_value: float | None, policy: GateSpec, champion: ChampionMeasure,
                    region_auc: dict[str, float], included: list[str]) -> list[GateRule]:
    detail = f"champion v{champion.version} on the same holdouts"
    rules = [_at_least("no_regression", "global", global_value,
                       (champion.global_auc if champion.global_auc is not None else float("inf"))
                       - policy.max_global_regression,
                       detail if champion.global_auc is not None else "the champion could not be scored")]
    for region in included:
        if region in champion.region_auc:
            rules.append(_at_least("no_regression", region, region_auc.get(region),
                                   champion.region_auc[region] - policy.max_region_regression, detail))
        else:
            rules.append(GateRule(rule="no_regression", scope=region, value=region_auc.get(region), threshold=None,
                                  comparison=">=", passed=False,
                                  detail=champion.unavailable.get(region, "the champion was not scored here")))
    return rules
