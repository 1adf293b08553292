"""A region's own settings come from its environment, typed, and only the names fedcrm documents count."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fedcrm.settings import RegionSettings


def test_a_region_reads_its_settings_from_its_environment(monkeypatch) -> None:
    monkeypatch.setenv("FEDCRM_REGION", "eu")
    monkeypatch.setenv("FEDCRM_REGION_STORE", "s3://eu-store/fedcrm")
    monkeypatch.setenv("FEDCRM_REGION_SOURCE", "{kind: sql, url: postgresql://crm/eu, table: leads}")
    monkeypatch.setenv("FEDCRM_KEYRING", "/srv/fedcrm/keyring.json")
    monkeypatch.setenv("FEDCRM_REGION_SOMETHING_ELSE", "ignored")
    settings = RegionSettings()
    assert (settings.region, settings.store, settings.scores) == ("eu", "s3://eu-store/fedcrm", None)
    assert settings.source.startswith("{kind: sql") and settings.keyring == Path("/srv/fedcrm/keyring.json")
    with pytest.raises(ValidationError):
        settings.region = "us"  # read once, when the regional run starts


def test_without_any_setting_the_coordinator_s_configuration_stands(monkeypatch) -> None:
    for name in ("FEDCRM_REGION", "FEDCRM_REGION_STORE", "FEDCRM_REGION_SOURCE", "FEDCRM_REGION_SCORES", "FEDCRM_KEYRING"):
        monkeypatch.delenv(name, raising=False)
    assert RegionSettings().model_dump() == {"region": None, "store": None, "source": None, "scores": None,
                                             "keyring": None}


def test_an_empty_setting_is_no_setting(monkeypatch) -> None:
    monkeypatch.setenv("FEDCRM_KEYRING", "")
    monkeypatch.setenv("FEDCRM_REGION_STORE", "")
    settings = RegionSettings()
    assert settings.keyring is None and settings.store is None


# --- DeploymentSettings: where this installation's state and services are ------------------------------------

DEPLOYMENT = ("FEDCRM_STATE_DIR", "FEDCRM_TRACKING_URI", "FEDCRM_EXCHANGE_URL", "FEDCRM_EXCHANGE_ENDPOINT_URL",
              "FEDCRM_LAUNCHER_MODE")


@pytest.fixture
def environment(monkeypatch):
    for name in DEPLOYMENT:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_every_deployment_setting_fills_a_configuration_key(environment) -> None:
    from fedcrm.config import load_config
    from fedcrm.settings import CONFIG_KEYS, DeploymentSettings

    assert set(CONFIG_KEYS) == set(DeploymentSettings.model_fields)
    given = {"FEDCRM_STATE_DIR": "/srv/fedcrm", "FEDCRM_TRACKING_URI": "http://mlflow.internal:5000",
             "FEDCRM_EXCHANGE_URL": "s3://fedcrm-exchange/jobs", "FEDCRM_EXCHANGE_ENDPOINT_URL": "http://s3.internal:9000",
             "FEDCRM_LAUNCHER_MODE": "distributed"}
    for name, value in given.items():
        environment.setenv(name, value)
    config = load_config()
    assert (config.state_dir, config.tracking.uri, config.exchange.url, config.exchange.endpoint_url,
            config.launcher.mode) == (Path("/srv/fedcrm"), *list(given.values())[1:])


def test_the_configuration_wins_over_the_environment_which_wins_over_the_defaults(environment, tmp_path) -> None:
    from fedcrm.config import load_config

    environment.setenv("FEDCRM_TRACKING_URI", "http://mlflow.internal:5000")
    environment.setenv("FEDCRM_STATE_DIR", "/srv/fedcrm")
    environment.setenv("FEDCRM_EXCHANGE_URL", "")  # empty: not given
    (tmp_path / "job.yaml").write_text("tracking: {uri: sqlite:///from-the-file.db}\n")
    from_file = load_config(tmp_path / "job.yaml")
    assert from_file.tracking.uri == "sqlite:///from-the-file.db" and from_file.state_dir == Path("/srv/fedcrm")
    assert load_config(overrides=["tracking.uri=sqlite:///set.db"]).tracking.uri == "sqlite:///set.db"
    assert load_config(state_dir=tmp_path).state_dir == tmp_path
    assert load_config().exchange.url is None


def test_an_invalid_deployment_setting_names_its_variable(environment) -> None:
    from fedcrm.config import load_config
    from fedcrm.errors import ConfigError

    environment.setenv("FEDCRM_LAUNCHER_MODE", "cloud")
    with pytest.raises(ConfigError, match="FEDCRM_LAUNCHER_MODE: Input should be 'embedded' or 'distributed'") as raised:
        load_config()
    assert "unset the FEDCRM_* variable" in raised.value.hint


def test_a_flow_parameter_is_filled_in_where_it_is_silent_and_kept_where_it_speaks(environment) -> None:
    """A deployment's parameter (deployments/prefect.yaml) names the job; the worker's environment says
    where the servers are."""
    from fedcrm.config import FedcrmConfig

    environment.setenv("FEDCRM_TRACKING_URI", "http://mlflow.internal:5000")
    environment.setenv("FEDCRM_LAUNCHER_MODE", "distributed")
    parameter = FedcrmConfig.model_validate({"use_case": "churn", "launcher": {"mode": "embedded"},
                                             "training": {"rounds": 4}})
    config = parameter.with_deployment()
    assert (config.tracking.uri, config.launcher.mode) == ("http://mlflow.internal:5000", "embedded")
    assert config.model_dump(exclude={"tracking"}) == parameter.model_dump(exclude={"tracking"})
    assert config.with_deployment() == config
