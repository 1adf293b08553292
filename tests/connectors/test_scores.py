"""Score destinations: a parquet file in a store, and an idempotent upsert into a SQL table."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import pytest
import sqlalchemy as sa

from connectors import LocalRegionStore
from connectors.scores import SqlScoreSink, StoreScoreSink, open_sink
from fedcrm.config import SalesforceScores, SqlScores
from fedcrm.errors import ConfigError

AT = datetime(2026, 11, 24, 5, 0, tzinfo=timezone.utc)


def scores(values: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"record_id": [f"r{i}" for i in range(len(values))], "score": values})


def test_store_sink_writes_one_file_per_run(tmp_path):
    sink = StoreScoreSink(LocalRegionStore(tmp_path), "churn")
    report = sink.write_scores(scores([0.1, 0.9]), model_version="3", scored_at=AT)
    assert report.written == 2 and report.failed == []
    (written,) = (tmp_path / "scores" / "churn").glob("*.parquet")
    frame = pd.read_parquet(written)
    assert frame["record_id"].tolist() == ["r0", "r1"] and set(frame["model_version"]) == {"3"}


def test_sql_sink_upserts_one_row_per_record(tmp_path):
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    sink = SqlScoreSink(SqlScores(kind="sql", url=url, table="lead_scores"))
    sink.write_scores(scores([0.1, 0.9]), model_version="3", scored_at=AT)
    sink.write_scores(scores([0.2, 0.8, 0.5]), model_version="4", scored_at=AT)  # rescored: updated, not duplicated
    with sa.create_engine(url).connect() as connection:
        rows = connection.execute(sa.text("SELECT record_id, score, model_version FROM lead_scores ORDER BY record_id"))
        assert [tuple(r) for r in rows] == [("r0", 0.2, "4"), ("r1", 0.8, "4"), ("r2", 0.5, "4")]


def test_salesforce_scores_need_a_salesforce_source(tmp_path):
    with pytest.raises(ConfigError, match="source is not Salesforce"):
        open_sink(SalesforceScores(kind="salesforce"), region_store=LocalRegionStore(tmp_path), use_case="churn",
                  source=None)
