"""A region's private store in a SQL database of its own (SQLAlchemy over PostgreSQL).

Documents and frames are rows of one table, ``fedcrm_region_store`` (key, body, updated_at).
Read-modify-write of a document (the privacy ledger) runs inside **one database transaction**
that first takes a transaction-scoped advisory lock on the key (``pg_advisory_xact_lock``). Every read and write the holder makes through this store on the
same thread joins that transaction, so the update is all-or-nothing: a job killed in the middle
of an update leaves the previous ledger, never half of a new one, and the lock dies with its
connection, so a crashed holder cannot block the region.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from fedcrm.errors import ConnectorError

TABLE = "fedcrm_region_store"
URL_HINT = "use a PostgreSQL URL, e.g. postgresql+psycopg://fedcrm@db.eu.internal:5432/fedcrm"
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE when lock_timeout expires


class SqlRegionStore:
    def __init__(self, url: str, *, lock_timeout_s: float = 120.0, engine: Any = None):
        import sqlalchemy as sa

        self.lock_timeout_s = lock_timeout_s
        try:
            self.engine = engine or sa.create_engine(url, pool_pre_ping=True)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise ConnectorError(f"invalid database URL ({type(exc).__name__})", source="region store (SQL)",
                                 hint=URL_HINT) from None
        if self.engine.dialect.name != "postgresql":  # the atomic ledger relies on its advisory locks
            raise ConnectorError(f"a SQL region store needs PostgreSQL, not {self.engine.dialect.name}",
                                 source="region store (SQL)", hint=URL_HINT)
        self._table = sa.Table(
            TABLE, sa.MetaData(),
            sa.Column("key", sa.String(1024), primary_key=True),
            sa.Column("body", sa.LargeBinary, nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        )
        self._held = threading.local()  # this thread's open transaction, while it holds a lock
        self._created = False

    @property
    def description(self) -> str:
        return f"region store {self.engine.url.render_as_string(hide_password=True)}"

    def _fail(self, action: str, key: str, exc: Exception) -> ConnectorError:
        return ConnectorError(f"could not {action} {key} ({type(exc).__name__})", source=self.description,
                              hint="check that the region's database is reachable and the store's role may "
                                   f"read and write table {TABLE}")

    def _ensure_table(self) -> None:
        """Create the table once, in a short transaction of its own (never inside a held lock)."""
        import sqlalchemy as sa

        if self._created:
            return
        with self.engine.begin() as connection:
            if not sa.inspect(connection).has_table(TABLE):
                self._lock(connection, "fedcrm:create-table")  # two processes creating it at once would collide
                self._table.metadata.create_all(connection, checkfirst=True)
        self._created = True

    @contextmanager
    def _connection(self, action: str, key: str) -> Iterator[Any]:
        """The held transaction when this thread holds a lock; otherwise a short one of its own."""
        import sqlalchemy as sa

        held = getattr(self._held, "connection", None)
        try:
            if held is not None:
                yield held
                return
            self._ensure_table()
            with self.engine.begin() as connection:
                yield connection
        except sa.exc.SQLAlchemyError as exc:
            raise self._fail(action, key, exc) from None

    def _read(self, key: str) -> bytes | None:
        import sqlalchemy as sa

        with self._connection("read", key) as connection:
            row = connection.execute(sa.select(self._table.c.body).where(self._table.c.key == key)).first()
        return None if row is None else bytes(row[0])

    def _write(self, key: str, body: bytes) -> str:
        import sqlalchemy as sa

        values = {"body": body, "updated_at": datetime.now(timezone.utc)}
        with self._connection("write", key) as connection:
            updated = connection.execute(sa.update(self._table).where(self._table.c.key == key).values(**values))
            if updated.rowcount == 0:
                connection.execute(sa.insert(self._table).values(key=key, **values))
        return f"{self.description}#{key}"

    def write_frame(self, key: str, frame: pd.DataFrame) -> str:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return self._write(key, buffer.getvalue())

    def read_frame(self, key: str) -> pd.DataFrame:
        body = self._read(key)
        if body is None:
            raise ConnectorError(f"{key} does not exist", source=self.description, hint="run the preparation step first")
        return pd.read_parquet(io.BytesIO(body))

    def write_json(self, key: str, document: Any) -> str:
        return self._write(key, json.dumps(document, indent=2, default=str).encode())

    def read_json(self, key: str) -> Any:
        body = self._read(key)
        if body is None:
            raise ConnectorError(f"{key} does not exist", source=self.description)
        return json.loads(body)

    def exists(self, key: str) -> bool:
        return self._read(key) is not None

    def append_text(self, key: str, text: str) -> str:
        with self.locked(key):
            return self._write(key, (self._read(key) or b"") + text.encode())

    def remove(self, key: str) -> None:
        import sqlalchemy as sa

        column = self._table.c.key
        prefix = key.rstrip("/") + "/"
        with self._connection("remove", key) as connection:
            connection.execute(sa.delete(self._table).where(
                (column == key) | (sa.func.substr(column, 1, len(prefix)) == prefix)))

    @contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Exclusive access to ``key``: one transaction holding an advisory lock, committed at the end.

        Leaving the block by an exception rolls back every write made inside it. Re-entrant on one
        thread (the inner lock joins the outer transaction).
        """
        import sqlalchemy as sa

        outer = getattr(self._held, "connection", None)
        if outer is not None:
            self._lock(outer, key)
            yield
            return
        try:
            self._ensure_table()
            connection = self.engine.connect()
        except sa.exc.SQLAlchemyError as exc:
            raise self._fail("lock", key, exc) from None
        try:
            transaction = connection.begin()
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(self.lock_timeout_s * 1000)}ms'")
            self._lock(connection, key)
        except sa.exc.SQLAlchemyError as exc:
            connection.close()
            if getattr(exc.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE:
                raise ConnectorError(f"could not lock {key} within {self.lock_timeout_s:g} s (another job holds it)",
                                     source=self.description, hint="retry when the other job's step has finished") from None
            raise self._fail("lock", key, exc) from None
        self._held.connection = connection
        try:
            yield
        except BaseException:
            self._held.connection = None
            transaction.rollback()
            connection.close()
            raise
        self._held.connection = None
        try:
            transaction.commit()
        except sa.exc.SQLAlchemyError as exc:
            raise self._fail("commit the update of", key, exc) from None
        finally:
            connection.close()

    @staticmethod
    def _lock(connection: Any, key: str) -> None:
        import sqlalchemy as sa

        connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key})
