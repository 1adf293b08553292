"""Bad regional data never crashes the job or yields a NaN model: each bad region is excluded
with a reason that says what to do, and the job completes on the healthy regions."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.e2e

CONTRACT = {
    "use_case": "bad-inputs",
    "id_column": "id",
    "target": {"column": "won", "positive": "yes", "negative": "no"},
    "numeric": {"age": {"dtype": "int", "min": 18, "max": 100}, "spend": {"dtype": "float", "min": 0, "max": 100000}},
    "categorical": {"channel": {"vocabulary": ["web", "phone", "store"]}},
    "min_rows": 40,
    "max_malformed_fraction": 0.05,
}


def _records(n: int, seed: int, prefix: str) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 90, n)
    channel = rng.choice(["web", "phone", "store"], n)
    logit = (age - 50) / 12 + np.where(channel == "web", 1.0, -0.6)
    return pd.DataFrame({
        "id": [f"{prefix}{i:05d}" for i in range(n)],
        "age": age.astype(str),
        "spend": rng.gamma(2.0, 40.0, n).round(2).astype(str),
        "channel": channel,
        "won": np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no"),
    })


@pytest.fixture(scope="module")
def bad_job(tmp_path_factory, cli):
    work = tmp_path_factory.mktemp("bad")
    data = work / "exports"
    data.mkdir()
    _records(400, 1, "eu").to_csv(data / "eu.csv", index=False)
    _records(400, 2, "us").to_csv(data / "us.csv", index=False)
    _records(300, 3, "ap").drop(columns=["spend"]).to_csv(data / "missing_column.csv", index=False)
    _records(0, 4, "em").to_csv(data / "empty.csv", index=False)
    one_class = _records(300, 5, "oc")
    one_class["won"] = "no"
    one_class.to_csv(data / "one_class.csv", index=False)
    _records(300, 6, "sc").to_csv(data / "semicolon.csv", index=False, sep=";")
    broken = _records(300, 7, "nf")
    broken.loc[:59, "spend"] = ["inf", "NaN", "-inf", "12,5", "n/a", "??"] * 10  # 20% unparsable / non-finite
    broken.to_csv(data / "non_finite.csv", index=False)
    for name, seed in (("no_key", 8), ("impostor", 9), ("unregistered", 10)):
        _records(300, seed, name[:2]).to_csv(data / f"{name}.csv", index=False)
    regions = {
        "no-key": "no_key.csv", "impostor": "impostor.csv", "unregistered": "unregistered.csv",
        "eu": "eu.csv", "us": "us.csv", "missing-column": "missing_column.csv", "empty": "empty.csv",
        "one-class": "one_class.csv", "semicolon": "semicolon.csv", "non-finite": "non_finite.csv",
    }
    (work / "contract.yaml").write_text(yaml.safe_dump(CONTRACT))
    config = {
        "use_case": "bad-inputs",
        "contract": "contract.yaml",
        "state_dir": "state",
        "federation": {"min_regions": 2, "regions": {r: {"source": {"path": f"exports/{f}"}} for r, f in regions.items()}},
        "training": {"rounds": 3, "evaluate_every": 2},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    keys = cli(["keys", "init", "--all", "--config", "config.yaml"], cwd=work, prefect_home=work / "home")
    assert keys.returncode == 0, keys.output
    (work / "state" / "regions" / "no-key" / "identity" / "ed25519.json").unlink()  # a region that lost its key
    impostor = work / "state" / "regions" / "impostor" / "identity" / "ed25519.json"
    stolen = json.loads((work / "state" / "regions" / "us" / "identity" / "ed25519.json").read_text())
    impostor.write_text(json.dumps({**stolen, "party": "impostor"}))  # signs with another region's key
    keyring_path = work / "state" / "federation" / "keyring.json"
    keyring = json.loads(keyring_path.read_text())
    del keyring["parties"]["unregistered"]
    keyring_path.write_text(json.dumps(keyring))
    result = cli(["run", "--config", "config.yaml", "--json-summary", "summary.json", "--set", "tracking.uri=http://127.0.0.1:9"],
                 cwd=work, prefect_home=work / "home")
    summary = json.loads((work / "summary.json").read_text())
    retry = cli(["track", summary["job_id"], "--config", "config.yaml"], cwd=work, prefect_home=work / "home")
    return result, summary, retry


def test_job_completes_on_the_healthy_regions(bad_job):
    result, summary, _ = bad_job
    assert result.returncode == 0, result.output
    assert "Traceback" not in result.output
    assert summary["status"] == "completed"
    assert summary["rounds"][-1]["participants"] == ["eu", "us"]
    for name in ("auc", "pr_auc", "log_loss", "brier", "ece"):
        assert math.isfinite(summary["metrics"][name])
    assert summary["metrics"]["auc"] > 0.6


@pytest.mark.parametrize(
    ("region", "step", "phrases"),
    [
        ("missing-column", "validation", ["lacks column(s) ['spend']", "fix the contract"]),
        ("empty", "validation", ["holds no records"]),
        ("one-class", "validation", ["only one class", "'yes'"]),
        ("semicolon", "validation", ["separated", "source.separator"]),
        ("non-finite", "validation", ["malformed record(s)", "more than the contract allows"]),
        ("no-key", "start", ["no identity key", "fedcrm keys init --region no-key"]),
        ("impostor", "start", ["not the one the keyring lists", "keys init --region impostor"]),
        ("unregistered", "start", ["not in the federation keyring", "keys init --region unregistered"]),
    ],
)
def test_each_bad_region_is_excluded_with_an_actionable_reason(bad_job, region, step, phrases):
    _, summary, _ = bad_job
    entry = summary["regions"][region]
    assert entry["status"] == "excluded" and entry["excluded_at"] == step
    for phrase in phrases:
        assert phrase in entry["reason"], entry["reason"]
    assert entry["metrics"] is None


def test_malformed_cells_are_counted_by_kind(bad_job):
    _, summary, _ = bad_job
    problems = summary["regions"]["non-finite"]["validation"]["problems"]["spend"]
    assert problems == {"non_finite": 30, "unparsable": 30}


def test_mlflow_down_keeps_the_model_and_track_registers_it_later(bad_job):
    result, summary, retry = bad_job
    assert summary["tracking"]["status"] == "failed"
    assert "MLflow at http://127.0.0.1:9" in summary["tracking"]["error"]
    assert f"fedcrm track {summary['job_id']}" in result.stderr
    assert retry.returncode == 0, retry.output
    assert "registered fedcrm-bad-inputs version 1" in retry.stdout


def test_evaluation_every_k_rounds_and_always_the_last(bad_job):
    _, summary, _ = bad_job
    assert [r["metrics"] is not None for r in summary["rounds"]] == [False, True, True]
    assert summary["rounds"][0]["region_metrics"] == {} and summary["rounds"][0]["epsilon_spent"]
