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
