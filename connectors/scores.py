"""Where a region's batch scores go: a parquet file in a store, a SQL table, or a Salesforce field.

Every sink takes a frame of (record id, score) and returns a ``WriteBackReport``: how many were
written and, per record, what failed. A failing record never stops the others.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import pandas as pd

from connectors.base import RegionStore
from connectors.salesforce import SalesforceConnector, WriteBackReport
from connectors.stores import open_store
from fedcrm.catalog import RegionCatalog
from fedcrm.config import (
    SalesforceScores,
    SalesforceSource,
    ScoreSinkSpec,
    SqlScores,
    StoreScores,
)
from fedcrm.errors import ConfigError, ConnectorError
from fedcrm.task_types.binary import SCORE

ID = "record_id"
"""Beside it, the sinks write the binary task type's column (``SCORE``, the probability): a multi-class
task type's columns need a sink schema of their own (docs/architecture.md, the task-type seam)."""


class ScoreSink(Protocol):
    @property
    def description(self) -> str: ...

    def write_scores(self, scores: pd.DataFrame, *, model_version: str, scored_at: datetime) -> WriteBackReport:
        """``scores`` has columns record_id and score."""
        ...


class StoreScoreSink:
    """One parquet file per scoring run: ``scores/<use case>/<timestamp>.parquet``."""

    def __init__(self, store: RegionStore, use_case: str):
        self.store, self.use_case = store, use_case

    @property
    def description(self) -> str:
        return f"parquet in {self.store.description}"

    def write_scores(self, scores: pd.DataFrame, *, model_version: str, scored_at: datetime) -> WriteBackReport:
        frame = scores.assign(model_version=model_version, scored_at=scored_at)
        self.store.write_frame(RegionCatalog(self.use_case).scores(scored_at), frame)
        return WriteBackReport(written=len(frame))


class SqlScoreSink:
    """Upserts (record_id, score, model_version, scored_at) into a table, one row per record."""

    def __init__(self, spec: SqlScores, *, engine=None):
        import sqlalchemy as sa

        self.spec = spec
        self.engine = engine or sa.create_engine(spec.url, pool_pre_ping=True)
        metadata = sa.MetaData()
        self.table = sa.Table(spec.table, metadata, sa.Column(ID, sa.Text, primary_key=True),
                              sa.Column(SCORE, sa.Float, nullable=False), sa.Column("model_version", sa.Text),
                              sa.Column("scored_at", sa.DateTime(timezone=True)))
        self.metadata = metadata

    @property
    def description(self) -> str:
        return f"table {self.spec.table} at {self.engine.url.render_as_string(hide_password=True)}"

    def write_scores(self, scores: pd.DataFrame, *, model_version: str, scored_at: datetime) -> WriteBackReport:
        import sqlalchemy as sa
        from sqlalchemy.dialects import postgresql, sqlite

        rows = [{ID: str(r), SCORE: float(s), "model_version": model_version, "scored_at": scored_at}
                for r, s in zip(scores[ID], scores[SCORE], strict=True)]
        dialect = {"postgresql": postgresql, "sqlite": sqlite}.get(self.engine.dialect.name)
        if dialect is None:
            raise ConfigError(f"score write-back supports PostgreSQL and SQLite, not {self.engine.dialect.name}",
                              hint="write scores to a store (kind: store) and load them from there")
        try:
            with self.engine.begin() as connection:
                self.metadata.create_all(connection, checkfirst=True)
                for start in range(0, len(rows), 1000):
                    statement = dialect.insert(self.table).values(rows[start:start + 1000])
                    connection.execute(statement.on_conflict_do_update(
                        index_elements=[ID], set_={c: statement.excluded[c] for c in (SCORE, "model_version", "scored_at")}))
        except sa.exc.SQLAlchemyError as exc:
            raise ConnectorError(f"could not write scores ({type(exc).__name__})", source=self.description,
                                 hint="check the database is reachable and the user may create/write the table") from None
        return WriteBackReport(written=len(rows))


class SalesforceScoreSink:
    """PATCHes the score into a field of each record's own object (composite/sobjects, 200 per request)."""

    def __init__(self, spec: SalesforceScores, connector: SalesforceConnector):
        self.spec, self.connector = spec, connector

    @property
    def description(self) -> str:
        return f"{self.connector.description}.{self.spec.field}"

    def write_scores(self, scores: pd.DataFrame, *, model_version: str, scored_at: datetime) -> WriteBackReport:
        return self.connector.write_back(self.spec.field, zip(scores[ID], (round(float(s), 6) for s in scores[SCORE]),
                                                              strict=True))


def open_sink(spec: ScoreSinkSpec | None, *, region_store: RegionStore, use_case: str,
              source: object) -> ScoreSink:
    """The sink a region's configuration names (default: its own store)."""
    if spec is None or isinstance(spec, StoreScores):
        store = open_store(spec.location) if spec is not None and spec.location else region_store
        return StoreScoreSink(store, use_case)
    if isinstance(spec, SqlScores):
        return SqlScoreSink(spec)
    if not isinstance(source, SalesforceSource):
        raise ConfigError("scores of kind salesforce go back to the records' own Salesforce object, but the region's "
                          "source is not Salesforce", hint="use kind: store or kind: sql for this region's scores")
    return SalesforceScoreSink(spec, SalesforceConnector(source))
