"""The compliance report: built from a job summary, escaped, its statistics right, its JSON lossless;
and the tally of what left each region, from the exchange's real signed messages."""

from __future__ import annotations

import json
import statistics
from html.parser import HTMLParser

import numpy as np
import pytest

from connectors.exchange import Exchange
from connectors.local import LocalRegionStore
from fedcrm.channel import CoordinatorChannel, RegionChannel
from fedcrm.compliance import (
    HELLO_KIND,
    UNREADABLE_KIND,
    ComplianceReport,
    build_report,
    fmt_bytes,
    fmt_epsilon,
    fmt_metric,
    metric_spread,
    render_html,
    tally_egress,
    with_approval,
)
from fedcrm.errors import FedcrmError
from fedcrm.evaluation import GlobalMetrics, RegionMetrics
from fedcrm.features import FeaturePipeline
from fedcrm.protocol import LocalTraining, PrepareRegion, StepReply
from fedcrm.privacy.plan import PrivacyPlan
from fedcrm.secagg.identity import COORDINATOR, Identity, Keyring
from fedcrm.summary import JobSummary, RegionSummary, RoundSummary

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
AUC = {"eu": 0.81, "us": 0.77, "apac": 0.72}


def metrics(auc: float) -> RegionMetrics:
    return RegionMetrics(n=400, positives=90, auc=auc, pr_auc=auc - 0.3, log_loss=0.45, brier=0.12, ece=0.03)


def plan() -> PrivacyPlan:
    return PrivacyPlan(target_epsilon=3.0, delta=1e-5, accountant="prv", max_grad_norm=1.0, noise_multiplier=1.1,
                       sample_rate=0.05, steps_per_round=20, planned_steps=40, planned_epsilon=2.99)


def summary(regions: dict[str, float] = AUC, *, excluded: str | None = None) -> JobSummary:
    entries = {
        r: RegionSummary(status="included", n_train=1600, n_holdout=400, metrics=metrics(a), privacy_plan=plan(),
                         epsilon_spent=2.95, epsilon_job_total=3.41, local_only=metrics(a - 0.05),
                         privacy_budget={"population": "churn", "budget": 10.0, "spent": 3.41 + i, "reserved": 0.0,
                                         "remaining": 6.59 - i, "dashboard": "x", "job_epsilon": 3.41},
                         residency={"region": r, "flow_run_id": f"run-{r}", "worker": None, "deployment": None,
                                    "host": "h1", "work_pool": None, "launcher": "embedded", "verified": True})
        for i, (r, a) in enumerate(regions.items())
    }
    if excluded:
        entries[excluded] = RegionSummary(status="excluded", excluded_at="validation", reason="too few rows (12 < 200)")
    included = list(regions)
    return JobSummary(
        job_id="job42", use_case="churn", status="completed", contract_sha256="c" * 64, started_at="t0", finished_at="t1",
        regions=entries,
        rounds=[RoundSummary(round=1, participants=included, mean_loss=0.6),
                RoundSummary(round=2, participants=included[:-1], mean_loss=0.5, dropped={included[-1]: "update norm NaN"},
                             metrics=GlobalMetrics(n=1200, auc=0.77, pr_auc=0.5, log_loss=0.45, brier=0.12, ece=0.03,
                                                   auc_gap=0.09))],
        metrics=GlobalMetrics(n=1200, auc=0.77, pr_auc=0.5, log_loss=0.45, brier=0.12, ece=0.03, auc_gap=0.09),
        privacy={"differential_privacy": True, "unit": "record", "target_epsilon": 3.0, "delta": 1e-5,
                 "accountant": "prv", "strategy": "fedavg", "secure_aggregation": True, "noise": "secure", "min_k": 5},
        gates={"status": "passed", "model_version": "3", "champion_version": None, "passed": True,
               "rules": [{"rule": "auc_floor", "scope": r, "value": a, "threshold": 0.55, "comparison": ">=",
                          "passed": True, "detail": ""} for r, a in regions.items()]},
    )


APPROVED = {"approval.decision": "approved", "approval.by": "alice", "approval.at": "2026-01-02T03:04:05+00:00",
            "approval.comment": "beats v2", "approval.previous_champion": "2", "code_version": "0.1+abc"}
EGRESS = {"eu": {HELLO_KIND: (1, 300), "local-training": (2, 9000)}, "us": {HELLO_KIND: (1, 310)}}


def report(**changes) -> ComplianceReport:
    arguments = {"model_name": "fedcrm-churn", "version": "3", "egress": EGRESS, "approval": APPROVED,
                 "code_version": "0.1+abc", "generated_at": "2026-01-02T04:00:00+00:00"}
    arguments.update(changes)
    job = arguments.pop("job", None) or summary()
    return build_report(job, **arguments)


class _Text(HTMLParser):
    """The page as a reader sees it: text only, and every element that was opened."""

    def __init__(self):
        super().__init__()
        self.text, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> _Text:
    parser = _Text()
    parser.feed(page)
    return parser


def test_the_report_carries_every_section_from_the_summary():
    r = report()
    assert (r.model_name, r.model_version, r.job_id, r.code_version) == ("fedcrm-churn", "3", "job42", "0.1+abc")
    eu = next(p for p in r.privacy if p.region == "eu")
    assert (eu.budget, eu.spent, eu.remaining, eu.job_epsilon, eu.model_epsilon) == (10.0, 3.41, 6.59, 3.41, 2.95)
    assert (r.delta, r.accountant, r.target_epsilon) == (1e-5, "prv", 3.0)
    assert [(x.round, x.participants, x.dropped) for x in r.rounds] == [
        (1, ["eu", "us", "apac"], {}), (2, ["eu", "us"], {"apac": "update norm NaN"})]
    assert {x.region: (x.launcher, x.flow_run_id, x.verified) for x in r.residency}["us"] == ("embedded", "run-us", True)
    egress = {x.region: x for x in r.egress}
    assert (egress["eu"].messages, egress["eu"].bytes) == (3, 9300)
    assert (egress["apac"].messages, egress["apac"].kinds) == (0, [])  # listed, with nothing sent
    assert {q.region: q.metrics["auc"] for q in r.quality} == AUC
    assert r.gates.status == "passed" and r.gates.verdict == "all 3 gate rules passed"
    assert (r.approval.status, r.approval.approver, r.approval.comment, r.approval.previous_champion) == (
        "approved", "alice", "beats v2", "2")


def test_without_a_decision_the_approval_is_pending_and_a_later_decision_replaces_it():
    pending = report(approval=None)
    assert pending.approval.status == "pending" and pending.approval.approver is None
    assert "pending" in "".join(parse(render_html(pending)).text)
    decided = with_approval(pending, {"approval.decision": "rejected", "approval.by": "bob", "approval.comment": "-",
                                      "approval.at": "t"})
    assert (decided.approval.status, decided.approval.approver, decided.approval.comment) == ("rejected", "bob", None)
    assert decided.model_dump(exclude={"approval", "generated_at"}) == pending.model_dump(exclude={"approval", "generated_at"})


def test_mean_and_spread_across_regions_are_the_population_statistics():
    r = report()
    spread = {s.metric: s for s in r.spread}
    assert spread["auc"].mean == pytest.approx(statistics.fmean(AUC.values()))
    assert spread["auc"].std == pytest.approx(statistics.pstdev(AUC.values()))
    assert spread["brier"].std == pytest.approx(0.0, abs=1e-15) and spread["auc"].regions == 3
    single = metric_spread({"eu": 0.8}, "auc")
    assert (single.mean, single.std) == (0.8, 0.0)
    with pytest.raises(FedcrmError):
        metric_spread({}, "auc")
    text = " ".join(parse(render_html(r)).text)
    assert f"{fmt_metric(spread['auc'].mean)} ± {fmt_metric(spread['auc'].std)}" in text


def test_an_excluded_region_is_listed_with_its_reason_and_left_out_of_the_statistics():
    r = report(job=summary(excluded="latam"))
    latam = next(p for p in r.privacy if p.region == "latam")
    assert latam.status == "excluded" and "too few rows" in latam.excluded_reason and latam.spent is None
    assert {q.region for q in r.quality} == set(AUC)
    assert "too few rows (12 < 200)" in " ".join(parse(render_html(r)).text)


def test_the_page_shows_each_regions_epsilon_and_metrics_under_its_headings():
    r = report()
    page = render_html(r)
    parsed = parse(page)
    text = " ".join(parsed.text)
    for heading in ("Privacy budget per region", "Participation per round", "Residency evidence", "What left each region",
                    "Model quality per region", "Gates", "Approval"):
        assert ("h2", {}) in parsed.tags and heading in text
    for p in r.privacy:
        assert fmt_epsilon(p.spent) in text and fmt_epsilon(p.remaining) in text and fmt_epsilon(p.budget) in text
    for auc in AUC.values():
        assert fmt_metric(auc) in text
    assert "alice" in text and "beats v2" in text and fmt_bytes(9300) in text and "9.1 KiB" in fmt_bytes(9300)
    assert page.startswith("<!DOCTYPE html>")


def test_the_page_is_self_contained():
    page = render_html(report())
    tags = parse(page).tags
    assert not [t for t, _ in tags if t in ("script", "link", "img", "iframe", "object", "embed")]
    assert not [a for _, a in tags for k, v in a.items() if k in ("src", "href")]
    assert "http://" not in page and "https://" not in page and "url(" not in page


def test_hostile_strings_cannot_inject_markup():
    job = summary({HOSTILE: 0.8, "us": 0.7})
    job.regions[HOSTILE].residency.host = HOSTILE
    evil = {**APPROVED, "approval.by": HOSTILE, "approval.comment": f"ok</dd></dl>{HOSTILE}"}
    r = build_report(job, model_name=f"m{HOSTILE}", version='3"><b>', egress={HOSTILE: {HOSTILE: (1, 5)}}, approval=evil)
    page = render_html(r)
    parsed = parse(page)
    assert not [t for t, _ in parsed.tags if t in ("script", "img", "b")]
    assert not [a for _, a in parsed.tags if any(k.startswith("on") for k in a)]
    assert HOSTILE in "".join(parsed.text)  # shown to the reader as text, exactly
    assert "<script>" not in page


def test_json_round_trip_is_lossless():
    r = report()
    again = ComplianceReport.model_validate_json(r.model_dump_json())
    assert again == r
    assert ComplianceReport.model_validate(json.loads(json.dumps(r.model_dump(mode="json")))) == r
    assert render_html(again) == render_html(r)
    assert report(egress=None).egress is None
    assert "could not be read" in " ".join(parse(render_html(report(egress=None))).text)


PREPARE = PrepareRegion(suite={})
TRAIN = LocalTraining(pipeline=FeaturePipeline(use_case="churn", numeric=[], categorical=[]),
                      global_vector=np.zeros(3), round_number=1)


def test_tally_counts_what_each_region_posted_by_kind_and_size(tmp_path):
    identities = {p: Identity.generate(p) for p in (COORDINATOR, "eu", "us")}
    keyring = Keyring.of(identities)
    exchange = Exchange(LocalRegionStore(tmp_path), "job42").begin_attempt("t0")
    coordinator = CoordinatorChannel(exchange, identities[COORDINATOR], keyring, "job42")
    regions = {r: RegionChannel(exchange, identities[r], keyring, "job42") for r in ("eu", "us")}
    for region, channel in regions.items():
        channel.hello({"region": region, "host": "h"})
        for step, value in ((PREPARE, {"n": 1}), (TRAIN, {"blob": "x" * 1000}), (TRAIN, {"blob": "y" * 1000})):
            number = coordinator.send(region, step)
            if region == "eu" or step is PREPARE:  # us stops answering after preparation
                channel.reply(number, StepReply(ok=True, value=value))
    exchange.post_unsigned_failure("apac", "no identity key")
    messages = list(exchange.mailbox_messages(["eu", "us", "apac"]))
    assert {(box, seq) for _, box, seq, _ in messages} >= {("from-eu", 0), ("to-eu", 3), ("from-eu", 3), ("from-us", 1),
                                                          ("from-apac", 0)}
    assert ("from-us", 2) not in {(box, seq) for _, box, seq, _ in messages}
    sizes = {(box, seq): len(data) for _, box, seq, data in messages}
    tally = tally_egress(messages)
    assert set(tally["eu"]) == {HELLO_KIND, "prepare-region", "local-training"}
    assert tally["eu"]["local-training"] == (2, sizes[("from-eu", 2)] + sizes[("from-eu", 3)])
    assert tally["eu"][HELLO_KIND] == (1, sizes[("from-eu", 0)])
    assert tally["us"] == {HELLO_KIND: (1, sizes[("from-us", 0)]), "prepare-region": (1, sizes[("from-us", 1)])}
    assert tally["apac"] == {UNREADABLE_KIND: (1, sizes[("from-apac", 0)])}
    assert sizes[("from-eu", 2)] > 1000  # the size of the envelope, payload included


def test_tally_covers_every_attempt_of_a_resumed_job(tmp_path):
    identities = {p: Identity.generate(p) for p in (COORDINATOR, "eu")}
    keyring = Keyring.of(identities)
    first = Exchange(LocalRegionStore(tmp_path), "job42")
    for attempt in (first.begin_attempt("t0"), first.begin_attempt("t1")):
        RegionChannel(attempt, identities["eu"], keyring, "job42").hello({"region": "eu"})
    assert [(a, box) for a, box, _, _ in first.mailbox_messages(["eu"])] == [(1, "from-eu"), (2, "from-eu")]
    assert tally_egress(first.mailbox_messages(["eu"]))["eu"][HELLO_KIND][0] == 2


def test_a_seeded_job_says_in_its_report_that_the_epsilon_does_not_hold():
    from fedcrm.privacy.randomness import randomness_warning

    secure = summary()
    seeded = summary()
    seeded.privacy = seeded.privacy.model_copy(update={"randomness": "seeded", "epsilon_warning": randomness_warning("seeded")})
    secure_report, seeded_report = report(job=secure), report(job=seeded)
    assert secure_report.epsilon_warning is None and "does NOT hold" not in render_html(secure_report)
    assert seeded_report.noise == "seeded" and seeded_report.epsilon_warning == randomness_warning("seeded")
    assert '<p class="fail">The ε of this model does NOT hold' in render_html(seeded_report)
