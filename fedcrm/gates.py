"""Automatic gates between a registered model version and the CRM.

Every rule reports its value, its threshold and whether it passed, so that the report explains
itself to whoever approves (or cannot approve) the version. The champion is measured *in the same
job*, on the same regional holdouts as the candidate, so a non-regression rule never compares
numbers from different data.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from fedcrm.config import FedcrmConfig, GateSpec
from fedcrm.summary import GateReport, GateRule, JobSummary

__all__ = ["ChampionMeasure", "GateReport", "GateRule", "evaluate_gates"]

EPSILON_SLACK = 1e-6
FLOAT_TOLERANCE = 1e-12
"""Two AUCs of the same holdout are fractions of the same pairs: equal ones may differ in the last bit."""


class ChampionMeasure(BaseModel):
    """The champion, evaluated in this job's regions on this job's holdouts."""

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


def evaluate_gates(summary: JobSummary, policy: GateSpec, config: FedcrmConfig,
                   champion: ChampionMeasure | None) -> GateReport:
    """Every rule of the policy for the job's model; the report passes only if all of them pass."""
    included = [r for r, e in summary.regions.items() if e.status == "included"]
    region_auc = {r: summary.regions[r].metrics.auc for r in included if summary.regions[r].metrics is not None}
    rules = [
        _at_least("participating_regions", "global", float(len(included)),
                  float(policy.min_regions or config.federation.min_regions)),
        _at_least("auc_floor", "global", summary.metrics.auc if summary.metrics else None, policy.min_global_auc),
    ]
    for region in included:
        rules.append(_at_least("auc_floor", region, region_auc.get(region), policy.min_region_auc))
    if len(region_auc) >= 2:
        gap = max(region_auc.values()) - min(region_auc.values())
        rules.append(_at_most("region_gap", "global", gap, policy.max_region_gap,
                              f"best {max(region_auc, key=region_auc.get)}, worst {min(region_auc, key=region_auc.get)}"))
    if policy.beat_local_only:
        for region in included:
            alone = summary.regions[region].local_only
            if alone is not None:
                rules.append(_at_least("beats_local_only", region, region_auc.get(region),
                                       alone.auc - policy.local_only_tolerance, f"local-only AUC {alone.auc:.4f}"))
    rules.extend(_privacy_rules(summary, config, included))
    if champion is not None:
        rules.extend(_champion_rules(summary, policy, champion, region_auc, included))
    return GateReport(model_version=summary.tracking.model_version or None,
                      champion_version=champion.version if champion else None,
                      passed=all(r.passed for r in rules), rules=rules)


def _privacy_rules(summary: JobSummary, config: FedcrmConfig, included: list[str]) -> list[GateRule]:
    if config.privacy.mode != "dp":
        return [GateRule(rule="differential_privacy", scope="global", value=None, threshold=None, comparison=">=",
                         passed=False, detail="privacy.mode is 'off': never deployable")]
    rules = []
    for region in included:
        entry = summary.regions[region]
        # the target the region calibrated its noise for (its plan), not whatever the configuration says now
        target = entry.privacy_plan.target_epsilon if entry.privacy_plan is not None else config.privacy.target_epsilon
        rules.append(_at_most("epsilon_within_target", region, entry.epsilon_spent,
                              target + EPSILON_SLACK, "the federated model's ε in this job (its privacy plan's target)"))
        if entry.privacy_budget:
            budget = entry.privacy_budget
            rules.append(_at_most("lifetime_budget", region, float(budget["spent"]), float(budget["budget"]) + EPSILON_SLACK,
                                  f"population {budget['population']}"))
    return rules


def _champion_rules(summary: JobSummary, policy: GateSpec, champion: ChampionMeasure, region_auc: dict[str, float],
                    included: list[str]) -> list[GateRule]:
    detail = f"champion v{champion.version} on the same holdouts"
    rules = [_at_least("no_regression", "global", summary.metrics.auc if summary.metrics else None,
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
