"""The typed job configuration: defaults, YAML files, dotted overrides and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fedcrm.config import BUNDLED_CONTRACTS, FedcrmConfig, LocalSource, apply_overrides, load_config
from fedcrm.errors import ConfigError

TINY_CONTRACT = {
    "use_case": "tiny",
    "id_column": "id",
    "target": {"column": "converted", "positive": "yes", "negative": "no"},
    "numeric": {"age": {"dtype": "int", "min": 18, "max": 100}},
}


def _yaml(path: Path, document: object) -> Path:
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document), encoding="utf-8")
    return path


def _config_error(*args: object, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


# --- defaults --------------------------------------------------------------------------


def test_defaults_need_no_file() -> None:
    config = load_config()
    assert config.use_case == "lead-scoring"
    assert list(config.federation.regions) == ["eu", "us", "apac"]
    assert config.federation.min_regions == 2
    assert config.training.rounds == 15
    assert config.privacy.mode == "dp" and config.privacy.target_epsilon == 3.0 and config.privacy.accountant == "prv"
    assert config.privacy.min_k == 5
    assert config.holdout.fraction == 0.2
    assert config.contract_path == BUNDLED_CONTRACTS / "lead-scoring.yaml"


def test_default_region_store_and_source_paths() -> None:
    config = load_config(state_dir=Path("/srv/state"), use_case="churn")
    assert config.region_store("eu") == Path("/srv/state/regions/eu")
    source = config.region_source("apac")
    assert isinstance(source, LocalSource)
    assert source.path == Path("/srv/state/regions/apac/crm/churn.parquet")
    assert source.separator is None  # falls back to the contract's separator


def test_default_regions_are_independent_between_configs() -> None:
    first = FedcrmConfig()
    first.federation.regions.pop("eu")
    assert "eu" in FedcrmConfig().federation.regions


def test_explicit_region_store_and_source_win(tmp_path: Path) -> None:
    path = _yaml(
        tmp_path / "job.yaml",
        {
            "federation": {
                "regions": {
                    "eu": {"store": str(tmp_path / "eu-store"), "source": {"path": str(tmp_path / "eu.csv"), "separator": ";"}},
                    "us": None,
                }
            }
        },
    )
    config = load_config(path)
    assert config.region_store("eu") == tmp_path / "eu-store"
    assert config.region_source("eu").path == tmp_path / "eu.csv"
    assert config.region_source("eu").separator == ";"
    assert config.region_store("us") == Path(".fedcrm/regions/us")


# --- files and overrides ---------------------------------------------------------------


def test_load_config_from_yaml_file(tmp_path: Path) -> None:
    path = _yaml(
        tmp_path / "job.yaml",
        {"use_case": "churn", "training": {"rounds": 3, "hidden_sizes": []}, "privacy": {"min_k": 10}},
    )
    config = load_config(path)
    assert config.use_case == "churn"
    assert config.training.rounds == 3
    assert config.training.hidden_sizes == []
    assert config.privacy.min_k == 10
    assert config.training.batch_size == 256  # untouched defaults survive


def test_empty_config_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(_yaml(tmp_path / "empty.yaml", "")) == load_config()


def test_override_sets_nested_int() -> None:
    assert load_config(overrides=["training.rounds=7"]).training.rounds == 7


def test_override_regions_as_list() -> None:
    config = load_config(overrides=["federation.regions=[eu,us]"])
    assert list(config.federation.regions) == ["eu", "us"]
    assert config.region_store("us") == Path(".fedcrm/regions/us")


def test_override_wins_over_file_and_keyword(tmp_path: Path) -> None:
    path = _yaml(tmp_path / "job.yaml", {"use_case": "churn", "training": {"rounds": 3, "seed": 4}})
    config = load_config(path, overrides=["training.rounds=12", "use_case=lead-scoring"], use_case="churn")
    assert config.training.rounds == 12
    assert config.training.seed == 4
    assert config.use_case == "lead-scoring"


def test_keyword_fields_override_file_but_none_is_ignored(tmp_path: Path) -> None:
    path = _yaml(tmp_path / "job.yaml", {"use_case": "churn", "contract": str(tmp_path / "c.yaml")})
    config = load_config(path, use_case=None, state_dir=tmp_path)
    assert config.use_case == "churn"
    assert config.state_dir == tmp_path


def test_override_value_that_is_not_yaml_is_kept_as_text() -> None:
    data = apply_overrides({}, ["a.b=[unclosed"])
    assert data == {"a": {"b": "[unclosed"}}


@pytest.mark.parametrize("override", ["training.rounds", "=5", " =5"])
def test_bad_override_syntax(override: str) -> None:
    message = _config_error(overrides=[override])
    assert "is not KEY=VALUE" in message
    assert repr(override) in message


def test_override_through_a_non_section() -> None:
    message = _config_error(overrides=["training.rounds=5", "training.rounds.max=2"])
    assert "'rounds' is not a section" in message


# --- invalid values --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("training.rounds=0", "training.rounds"),
        ("training.rounds=many", "training.rounds"),
        ("training.learning_rate=0", "training.learning_rate"),
        ("training.hidden_sizes=[32,0]", "training.hidden_sizes"),
        ("training.class_weighting=sometimes", "training.class_weighting"),
        ("privacy.min_k=1", "privacy.min_k"),
        ("holdout.fraction=1", "holdout.fraction"),
        ("features.clip_z=-1", "features.clip_z"),
        ("federation.regions=[eu, 'u s']", "federation.regions"),
        ("federation.regions=[eu, '../coordinator']", "federation.regions"),
        ("federation.regions=[eu, coordinator]", "federation.regions"),
        ("federation.regions=[eu, EU2]", "federation.regions"),
    ],
)
def test_invalid_value_names_the_field(override: str, field: str) -> None:
    message = _config_error(overrides=[override])
    assert f"{field}:" in message
    assert "configuration is invalid" in message


def test_unknown_key_is_named() -> None:
    message = _config_error(overrides=["training.epochs=3"])
    assert "training.epochs:" in message
    assert "Extra inputs are not permitted" in message


def test_unknown_top_level_key_in_file_names_the_file(tmp_path: Path) -> None:
    path = _yaml(tmp_path / "job.yaml", {"rounds": 3})
    message = _config_error(path)
    assert f"config {path} is invalid" in message
    assert "rounds:" in message


def test_min_regions_above_region_count() -> None:
    message = _config_error(overrides=["federation.regions=[eu,us]", "federation.min_regions=3"])
    assert "federation" in message
    assert "min_regions (3) exceeds the number of regions (2)" in message


def test_min_regions_equal_to_region_count_is_fine() -> None:
    config = load_config(overrides=["federation.regions=[eu,us]", "federation.min_regions=2"])
    assert config.federation.min_regions == 2


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    message = _config_error(path)
    assert str(path) in message and "does not exist" in message


def test_invalid_yaml_config_file(tmp_path: Path) -> None:
    message = _config_error(_yaml(tmp_path / "job.yaml", "training: {rounds: [\n"))
    assert "not valid YAML" in message


def test_non_mapping_config_file(tmp_path: Path) -> None:
    assert "must hold a YAML mapping" in _config_error(_yaml(tmp_path / "job.yaml", "- a\n- b\n"))


# --- the contract the config points at -------------------------------------------------


@pytest.mark.parametrize("use_case", ["lead-scoring", "churn"])
def test_bundled_contract_loads_for_its_use_case(use_case: str) -> None:
    assert load_config(use_case=use_case).load_contract().use_case == use_case


def test_contract_use_case_mismatch() -> None:
    config = load_config(use_case="churn", contract=BUNDLED_CONTRACTS / "lead-scoring.yaml")
    with pytest.raises(ConfigError) as info:
        config.load_contract()
    assert "'lead-scoring'" in str(info.value) and "'churn'" in str(info.value)


def test_contract_min_rows_below_privacy_min_k(tmp_path: Path) -> None:
    path = _yaml(tmp_path / "tiny.yaml", {**TINY_CONTRACT, "min_rows": 3})
    config = load_config(use_case="tiny", contract=path)
    with pytest.raises(ConfigError) as info:
        config.load_contract()
    assert "min_rows (3)" in str(info.value) and "privacy.min_k (5)" in str(info.value)


def test_contract_min_rows_at_privacy_min_k_is_fine(tmp_path: Path) -> None:
    path = _yaml(tmp_path / "tiny.yaml", {**TINY_CONTRACT, "min_rows": 5})
    assert load_config(use_case="tiny", contract=path).load_contract().min_rows == 5


def test_a_bare_yaml_off_means_privacy_off(tmp_path: Path) -> None:
    assert load_config(overrides=["privacy.mode=off"]).privacy.mode == "off"
    (tmp_path / "c.yaml").write_text("privacy:\n  mode: off\n")
    assert load_config(tmp_path / "c.yaml").privacy.mode == "off"
    with pytest.raises(ConfigError, match="privacy.mode"):
        load_config(overrides=["privacy.mode=on"])


def test_secure_aggregation_is_on_by_default_and_refuses_robust_strategies() -> None:
    config = load_config()
    assert config.secure_aggregation.enabled and config.keyring_path == config.state_dir / "federation" / "keyring.json"
    with pytest.raises(ConfigError, match="needs each region's update"):
        load_config(overrides=["strategy.name=trimmed_mean"])
    assert load_config(overrides=["strategy.name=median", "secure_aggregation.enabled=false"]).strategy.name == "median"
    params = load_config(overrides=["secure_aggregation.neighbours=8", "secure_aggregation.threshold_fraction=0.5"])
    assert params.secure_aggregation.graph_params().neighbours == 8


def test_privacy_randomness_covers_sampling_and_noise_and_privacy_noise_is_its_old_name() -> None:
    assert load_config().privacy.randomness == "secure"
    assert load_config(overrides=["privacy.randomness=seeded"]).privacy.randomness == "seeded"
    assert load_config(overrides=["privacy.noise=seeded"]).privacy.randomness == "seeded"
    assert load_config(overrides=["privacy.noise=seeded", "privacy.randomness=seeded"]).privacy.randomness == "seeded"


def test_privacy_noise_contradicting_privacy_randomness_is_a_clear_error() -> None:
    message = _config_error(overrides=["privacy.noise=seeded", "privacy.randomness=secure"])
    assert "old name of privacy.randomness" in message and "keep only privacy.randomness" in message


def test_an_unknown_randomness_is_refused() -> None:
    assert "randomness" in _config_error(overrides=["privacy.randomness=urandom"])


def test_typed_values_reach_the_model_as_they_are_and_win_over_overrides():
    """`fedcrm run --epsilon 3` sets the field with the number itself, not a string parsed back as YAML."""
    config = load_config(overrides=["privacy.target_epsilon=8", "training.rounds=4"],
                         values={"privacy.target_epsilon": 1.5, "training.rounds": None, "drift.retrain": False})
    assert config.privacy.target_epsilon == 1.5  # the typed option wins over --set
    assert config.training.rounds == 4  # None: the option was not given
    assert config.drift.retrain is False
