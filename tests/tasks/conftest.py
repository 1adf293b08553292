"""A tiny one-region federation (region eu, contract 'tiny') for the regional task tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fedcrm.config import FedcrmConfig, load_config

TINY_CONTRACT = {
    "use_case": "tiny",
    "id_column": "id",
    "target": {"column": "won", "positive": "yes", "negative": "no"},
    "numeric": {"age": {"dtype": "int", "min": 18, "max": 100}},
    "categorical": {"channel": {"vocabulary": ["web", "phone", "store"]}},
    "min_rows": 50,
}


@pytest.fixture
def tiny_region(tmp_path) -> Callable[..., tuple[FedcrmConfig, pd.DataFrame, Path]]:
    """``make(n, max_age, *overrides)``: eu's records as a CSV file, and a config whose only region reads it."""
    def make(n: int, max_age: int, *overrides: str) -> tuple[FedcrmConfig, pd.DataFrame, Path]:
        rng = np.random.default_rng(0)
        age = rng.integers(18, max_age, n)
        channel = rng.choice(["web", "phone", "store"], n)
        won = np.where(rng.random(n) < 1 / (1 + np.exp(-(age - 50) / 10)), "yes", "no")
        records = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "age": age.astype(str), "channel": channel,
                                "won": won})
        path = tmp_path / "eu.csv"
        records.to_csv(path, index=False)
        (tmp_path / "contract.yaml").write_text(yaml.safe_dump(TINY_CONTRACT))
        config = load_config(overrides=[
            "use_case=tiny", f"contract={tmp_path / 'contract.yaml'}", f"state_dir={tmp_path / 'state'}",
            f"federation.regions={{eu: {{source: {{path: {path}}}}}}}", "federation.min_regions=1",
            "training.rounds=2", *overrides])
        return config, records, path

    return make
