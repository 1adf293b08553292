"""Shared tiny fixtures: a small contract and raw CRM-like frames that satisfy it."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # a down tracking server fails in seconds
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from fedcrm.contract import DataContract  # noqa: E402

TINY_CONTRACT = {
    "use_case": "tiny",
    "id_column": "id",
    "target": {"column": "converted", "positive": "yes", "negative": "no"},
    "numeric": {
        "age": {"dtype": "int", "min": 18, "max": 100},
        "spend": {"dtype": "float", "min": 0, "on_missing": "impute"},
    },
    "categorical": {"channel": {"vocabulary": ["web", "phone", "store"]}},
    "drop": ["leak"],
    "min_rows": 20,
    "max_malformed_fraction": 0.1,
}


@pytest.fixture
def contract() -> DataContract:
    return DataContract.model_validate(TINY_CONTRACT)


def make_raw(n: int = 200, seed: int = 0, id_prefix: str = "c") -> pd.DataFrame:
    """Raw text cells, as a CSV export would give them; the label depends on age and channel."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 90, n)
    channel = rng.choice(["web", "phone", "store"], n)
    spend = rng.gamma(2.0, 50.0, n).round(2)
    logit = (age - 50) / 10 + np.where(channel == "web", 1.0, -0.5)
    converted = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    return pd.DataFrame(
        {
            "id": [f"{id_prefix}{i:05d}" for i in range(n)],
            "age": age.astype(str),
            "spend": spend.astype(str),
            "channel": channel,
            "leak": converted,
            "converted": converted,
        }
    )


@pytest.fixture
def raw() -> pd.DataFrame:
    return make_raw()
