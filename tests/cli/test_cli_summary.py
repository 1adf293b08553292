"""The results table: a seeded job's ε is marked void, with the warning, where the ε is printed."""

from __future__ import annotations

from rich.console import Console

from fedcrm.evaluation import RegionMetrics
from fedcrm.privacy.plan import PrivacyPlan
from fedcrm.privacy.randomness import randomness_warning
from fedcrm.summary import JobSummary, RegionSummary


def _printed(monkeypatch, randomness: str) -> str:
    import cli.main

    console = Console(width=400, record=True, force_terminal=False)
    monkeypatch.setattr(cli.main, "console", console)
    plan = PrivacyPlan(target_epsilon=3.0, delta=1e-5, accountant="prv", max_grad_norm=1.0, noise_multiplier=1.1,
                       sample_rate=0.05, steps_per_round=20, planned_steps=60, planned_epsilon=2.99)
    metrics = RegionMetrics(n=100, positives=40, auc=0.8, pr_auc=0.6, log_loss=0.5, brier=0.1, ece=0.02)
    summary = JobSummary(
        job_id="j1", use_case="churn", status="completed", contract_sha256="c", started_at="t0", finished_at="t1",
        regions={"eu": RegionSummary(status="included", n_train=5000, privacy_plan=plan, epsilon_spent=2.95, metrics=metrics)},
        privacy={"differential_privacy": True, "randomness": randomness, "epsilon_warning": randomness_warning(randomness),
                 "note": "record-level DP-SGD"},
    )
    cli.main._print_summary(summary)
    return console.export_text()


def test_a_secure_jobs_epsilon_is_printed_plainly(monkeypatch):
    out = _printed(monkeypatch, "secure")
    assert "2.95/3" in out and "(void)" not in out and "does NOT hold" not in out


def test_a_seeded_jobs_epsilon_is_marked_void_with_the_warning(monkeypatch):
    out = _printed(monkeypatch, "seeded")
    assert "2.95/3 (void)" in out
    assert "ε (void): DP-SGD's batch sampling and the DP noise are reproducible" in out and "does NOT hold" in out
