"""A regional run applies its own settings over the coordinator's view of the region (flows/region.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedcrm.config import LocalSource, load_config
from fedcrm.errors import ConfigError
from fedcrm.settings import RegionSettings
from flows.region import with_local_settings


def test_the_region_s_store_source_and_keyring_win_over_the_coordinator_s(tmp_path) -> None:
    config = load_config()
    settings = RegionSettings(FEDCRM_REGION="eu", store=str(tmp_path / "eu-store"),
                              source=str(tmp_path / "eu.parquet"), FEDCRM_KEYRING=str(tmp_path / "keyring.json"))
    local = with_local_settings(config, "eu", settings)
    eu = local.federation.regions["eu"]
    assert str(eu.store) == str(tmp_path / "eu-store") and eu.source == LocalSource(path=tmp_path / "eu.parquet")
    assert local.secure_aggregation.keyring == Path(tmp_path / "keyring.json")
    assert local.federation.regions["us"] == config.federation.regions["us"]  # only its own region


def test_a_worker_refuses_another_region_s_flow_and_a_bad_source_says_what_to_write() -> None:
    config = load_config()
    with pytest.raises(ConfigError, match="this worker serves region 'us', not 'eu'"):
        with_local_settings(config, "eu", RegionSettings(FEDCRM_REGION="us"))
    with pytest.raises(ConfigError, match="FEDCRM_REGION_SOURCE is not a valid source"):
        with_local_settings(config, "eu", RegionSettings(source="{kind: nosuch}"))


def test_no_setting_leaves_the_configuration_as_it_is(monkeypatch) -> None:
    for name in ("FEDCRM_REGION", "FEDCRM_REGION_STORE", "FEDCRM_REGION_SOURCE", "FEDCRM_REGION_SCORES", "FEDCRM_KEYRING"):
        monkeypatch.delenv(name, raising=False)
    config = load_config()
    assert with_local_settings(config, "eu", RegionSettings()) == config
