"""`fedcrm keys` and the run's fail-fast checks for secure aggregation."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def invoke(args: list[str], cwd) -> tuple[int, str]:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        result = runner.invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def test_keys_init_all_then_show(tmp_path):
    code, out = invoke(["keys", "init", "--all", "--state-dir", "s"], tmp_path)
    assert code == 0 and out.count("created") == 4
    keyring = json.loads((tmp_path / "s" / "federation" / "keyring.json").read_text())
    assert set(keyring["parties"]) == {"eu", "us", "apac", "coordinator"}

    code, out = invoke(["keys", "init", "--region", "eu", "--state-dir", "s"], tmp_path)
    assert code == 0 and "existing" in out and "created" not in out

    code, out = invoke(["keys", "show", "--state-dir", "s"], tmp_path)
    assert code == 0 and out.count("matches") == 4


def test_a_rotated_key_shows_as_registered_again(tmp_path):
    invoke(["keys", "init", "--all", "--state-dir", "s"], tmp_path)
    before = json.loads((tmp_path / "s" / "federation" / "keyring.json").read_text())["parties"]["us"]
    code, _ = invoke(["keys", "init", "--region", "us", "--rotate", "--state-dir", "s"], tmp_path)
    after = json.loads((tmp_path / "s" / "federation" / "keyring.json").read_text())["parties"]["us"]
    assert code == 0 and before != after


def test_keys_init_refuses_an_unknown_region_or_nothing(tmp_path):
    code, out = invoke(["keys", "init", "--region", "mars", "--state-dir", "s"], tmp_path)
    assert code == 2 and "mars" in out and "federation.regions" in out
    code, out = invoke(["keys", "init", "--state-dir", "s"], tmp_path)
    assert code == 2 and "--region" in out


def test_run_without_a_keyring_fails_fast_with_the_fix(tmp_path):
    code, out = invoke(["run", "--use-case", "churn", "--state-dir", "s"], tmp_path)
    assert code == 2 and "keys init" in out and "Traceback" not in out


def test_run_refuses_a_robust_strategy_under_secure_aggregation(tmp_path):
    code, out = invoke(["run", "--use-case", "churn", "--state-dir", "s", "--set", "strategy.name=median"], tmp_path)
    assert code == 2 and "secure_aggregation.enabled=false" in out


def test_run_refuses_unbounded_numeric_columns_under_secure_aggregation(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "use_case: tiny\nid_column: id\ntarget: {column: y, positive: 'yes', negative: 'no'}\n"
        "numeric: {spend: {dtype: float, min: 0}}\ncategorical: {}\n"
    )
    code, out = invoke(["run", "--use-case", "tiny", "--contract", "c.yaml", "--state-dir", "s"], tmp_path)
    assert code == 2 and "spend" in out and "min and max" in out
