"""A first `fedcrm run` after installing: the bundled demo is split into the default regions first,
and only then; anything the user configured is never overwritten."""

from __future__ import annotations

from pathlib import Path

from cli.main import _is_a_fresh_demo, _split_into_stores
from fedcrm.config import LocalSource, load_config


def _config(tmp_path: Path, *overrides: str):
    return load_config(use_case="churn", state_dir=tmp_path / "s", overrides=list(overrides))


def test_an_empty_state_dir_on_bundled_data_is_a_fresh_demo(tmp_path):
    assert _is_a_fresh_demo(_config(tmp_path))


def test_once_split_it_is_not_split_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _config(tmp_path)
    regions = _split_into_stores(cfg, None, tuple(cfg.federation.regions), strategy=None, seed=42, alpha=1.0, by=None)
    assert regions == ["eu", "us", "apac"]
    assert all(Path(cfg.region_source(r).path).exists() for r in regions) and Path(cfg.keyring_path).exists()
    assert not _is_a_fresh_demo(cfg)


def test_a_configured_source_contract_or_distributed_launcher_is_never_a_demo(tmp_path):
    cfg = _config(tmp_path)
    regions = dict(cfg.federation.regions)
    own = regions["eu"].model_copy(update={"source": LocalSource(path=tmp_path / "crm.csv")})
    federation = cfg.federation.model_copy(update={"regions": {**regions, "eu": own}})
    assert not _is_a_fresh_demo(cfg.model_copy(update={"federation": federation}))
    assert not _is_a_fresh_demo(load_config(use_case="churn", state_dir=tmp_path / "s",
                                            contract=Path(__file__).parents[2] / "contracts" / "churn.yaml"))
    assert not _is_a_fresh_demo(_config(tmp_path, "launcher.mode=distributed"))
    stored = regions["us"].model_copy(update={"store": "s3://bucket/us"})
    federation = cfg.federation.model_copy(update={"regions": {**regions, "us": stored}})
    assert not _is_a_fresh_demo(cfg.model_copy(update={"federation": federation}))


def test_a_use_case_without_bundled_data_is_never_a_demo(tmp_path):
    cfg = _config(tmp_path)
    assert not _is_a_fresh_demo(cfg.model_copy(update={"use_case": "intents"}))
