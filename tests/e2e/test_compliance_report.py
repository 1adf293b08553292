"""The compliance report of a real job: logged to the version's MLflow run, re-issued when a human
approves it, downloaded with `fedcrm report`, and opened in headless Chromium, which must show each
region's ε and AUC. The screenshot is kept (and copied to $FEDCRM_SCREENSHOT_DIR when set)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from fedcrm.compliance import fmt_epsilon, fmt_metric

pytestmark = pytest.mark.e2e
COMMON = ["--use-case", "churn", "--state-dir", "state"]
RELAXED = ["--set", "gates.min_global_auc=0.5", "--set", "gates.min_region_auc=0.5", "--set", "gates.max_region_gap=1",
           "--set", "baselines.local_only=false", "--set", "baselines.central_reference=false"]
REGIONS = ("eu", "us", "apac")
CHROMIUM_TIMEOUT_S = 120


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "GX_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true", "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_API_URL", None)
    return env


def _command(*args: str) -> list[str]:
    # the console script's way in (`fedcrm ...`): cli.main imported as itself, as installed users run it
    return [sys.executable, "-c", "import sys; from cli.main import main; sys.argv[0] = 'fedcrm'; main()", *args]


def fedcrm(work: Path, home: Path, *args: str, timeout: float = 420) -> subprocess.CompletedProcess:
    return subprocess.run(_command(*args), cwd=work, env=_env(home), capture_output=True, text=True, timeout=timeout,
                          check=False)


def _approve(work: Path, home: Path, approver: str, comment: str) -> str:
    """`fedcrm promote`, then `fedcrm approve RUN` from another process; returns the promotion's output."""
    promotion = subprocess.Popen(_command("promote", *COMMON), cwd=work, env=_env(home), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(promotion.stdout.readline, "")), daemon=True).start()
    try:
        deadline, run = time.monotonic() + 180, None
        while time.monotonic() < deadline and run is None and promotion.poll() is None:
            found = re.search(r"fedcrm approve\s+([0-9a-f-]{36})", "".join(lines))
            run = found[1] if found else None
            time.sleep(0.2)
        assert run, "the promotion never asked for approval:\n" + "".join(lines)
        approved = fedcrm(work, home, "approve", run, "--approver", approver, "--comment", comment, "--state-dir", "state")
        assert approved.returncode == 0, approved.stdout + approved.stderr
        promotion.wait(timeout=180)
    finally:
        if promotion.poll() is None:
            promotion.kill()
    time.sleep(0.5)  # the reader thread drains the rest
    output = "".join(lines)
    assert promotion.returncode == 0 and f"approved by {approver}" in output, output
    return output


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data):
        self.parts.append(data)


def rendered_text(dom: str) -> str:
    parser = _Text()
    parser.feed(dom)
    return re.sub(r"\s+", " ", " ".join(parser.parts))


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("headless Chromium is needed to check the rendered compliance report, and `chromium` is not on PATH: "
                    "install the Debian package (`make chromium` as root, or `sudo apt-get install -y chromium`)",
                    pytrace=False)
    return found


def browse(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp / 'chromium-profile'}",
               *args, page.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=False)
    assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def approved_job(tmp_path_factory):
    work = tmp_path_factory.mktemp("compliance")
    home = work / "prefect-home"
    split = fedcrm(work, home, "data", "split", *COMMON)
    assert split.returncode == 0, split.stdout + split.stderr
    run = fedcrm(work, home, "run", *COMMON, "--rounds", "2", "--epsilon", "3", *RELAXED, "--json-summary", "out/summary.json")
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads((work / "out" / "summary.json").read_text())
    assert summary["gates"]["status"] == "passed", summary["gates"]
    assert summary["tracking"].get("compliance_report") == "compliance.html, compliance.json", summary["tracking"]
    _approve(work, home, "alice", "DPO check <ok>")
    report = fedcrm(work, home, "report", *COMMON, "--out", "reports")
    assert report.returncode == 0, report.stdout + report.stderr
    return work, summary, report


def test_the_report_is_logged_to_the_versions_mlflow_run_with_the_approval(approved_job):
    from mlflow.tracking import MlflowClient

    work, summary, _ = approved_job
    uri = f"sqlite:///{work / 'state' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version("fedcrm-churn", summary["tracking"]["model_version"])
    assert version.run_id == summary["tracking"]["run_id"]
    assert {"compliance.json", "compliance.html", "gates.json", "summary.json"} <= {
        a.path for a in client.list_artifacts(version.run_id)}
    logged = json.loads(Path(client.download_artifacts(version.run_id, "compliance.json", str(work / "dl"))).read_text())
    assert logged["approval"]["status"] == "approved" and logged["approval"]["approver"] == "alice"
    assert logged["job_id"] == summary["job_id"] and logged["gates"]["status"] == "passed"
    assert [sorted(r["participants"]) for r in logged["rounds"]] == [sorted(REGIONS), sorted(REGIONS)]
    egress = {e["region"]: e for e in logged["egress"]}
    for region in REGIONS:
        kinds = {k["kind"]: k for k in egress[region]["kinds"]}
        assert kinds["local-training"]["messages"] == 2 and kinds["local-training"]["bytes"] > 0
        assert {"hello (residency evidence)", "prepare-region", "feature-statistics", "local-evaluation"} <= set(kinds)
    html = Path(client.download_artifacts(version.run_id, "compliance.html", str(work / "dl"))).read_text()
    assert "alice" in html and "DPO check &lt;ok&gt;" in html


def test_chromium_shows_each_regions_epsilon_and_auc_and_saves_a_screenshot(approved_job, tmp_path):
    work, summary, report = approved_job
    version = summary["tracking"]["model_version"]
    page = work / "reports" / f"compliance-v{version}.html"
    document = json.loads((work / "reports" / f"compliance-v{version}.json").read_text())
    assert page.is_file() and document["model_version"] == version and document["approval"]["approver"] == "alice"

    text = rendered_text(browse(page, tmp_path, "--dump-dom").stdout)
    for heading in ("Privacy budget per region", "Participation per round", "Residency evidence", "What left each region",
                    "Model quality per region", "Gates", "Approval"):
        assert heading in text
    privacy = {p["region"]: p for p in document["privacy"]}
    quality = {q["region"]: q for q in document["quality"]}
    for region in REGIONS:
        budget, metrics = summary["regions"][region]["privacy_budget"], summary["regions"][region]["metrics"]
        assert privacy[region]["spent"] == pytest.approx(budget["spent"])
        assert privacy[region]["remaining"] == pytest.approx(budget["remaining"])
        assert quality[region]["metrics"]["auc"] == pytest.approx(metrics["auc"])
        row = re.search(rf"\b{region} included {re.escape(budget['population'])} (\S+) (\S+) (\S+) (\S+) ", text)
        assert row, f"no privacy row for {region} in: {text[:3000]}"
        assert (row[2], row[4]) == (fmt_epsilon(budget["spent"]), fmt_epsilon(budget["remaining"])), row[0]
        assert f"{region} {metrics['n']} {metrics['positives']} {fmt_metric(metrics['auc'])}" in text
    assert "alice" in text and "DPO check <ok>" in text and "approved" in text

    shot = tmp_path / "compliance.png"
    browse(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    if os.environ.get("FEDCRM_SCREENSHOT_DIR"):
        target = Path(os.environ["FEDCRM_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target / "compliance.png")
    assert f"compliance-v{version}.html" in report.stdout
