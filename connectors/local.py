"""Local files: a CSV/parquet record source and a folder-backed region store (embedded mode)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from fedcrm.config import LocalSource
from fedcrm.errors import ConnectorError

CSV_SUFFIXES = (".csv", ".csv.gz", ".txt", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")


class LocalFileSource:
    """Records from one CSV (optionally gzip) or parquet file.

    CSV cells are read as text, exactly as exported (no pandas NA guessing), so parsing and
    validation see what the CRM wrote.
    """

    def __init__(self, path: str | Path, *, separator: str = ",", encoding: str = "utf-8"):
        self.path = Path(path)
        self.separator = separator
        self.encoding = encoding

    @property
    def description(self) -> str:
        return f"file {self.path}"

    def read_records(self) -> pd.DataFrame:
        try:
            return self.parse(self.path, self.path.name, separator=self.separator, encoding=self.encoding,
                              description=self.description)
        except FileNotFoundError:
            raise ConnectorError(
                "records file does not exist",
                source=self.description,
                hint="run `fedcrm data split` first, or fix the region's `source.path`",
            ) from None
        except PermissionError:
            raise ConnectorError("records file is not readable", source=self.description, hint="check file permissions") from None

    @staticmethod
    def parse(data: Any, name: str, *, separator: str, encoding: str, description: str) -> pd.DataFrame:
        """A CSV (cells as text) or parquet file or buffer, by its name's suffix; shared with the S3 source."""
        name = name.lower()
        try:
            if name.endswith(PARQUET_SUFFIXES):
                return pd.read_parquet(data)
            if name.endswith(CSV_SUFFIXES):
                compression = "gzip" if name.endswith(".gz") else "infer"
                return pd.read_csv(data, sep=separator, dtype=str, keep_default_na=False, encoding=encoding,
                                   compression=compression)
        except (FileNotFoundError, PermissionError):
            raise
        except UnicodeDecodeError:
            raise ConnectorError(
                f"records file is not valid {encoding}",
                source=description,
                hint="set `source.encoding` in the contract (e.g. latin-1)",
            ) from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, ValueError) as exc:
            raise ConnectorError(
                f"records file could not be parsed ({type(exc).__name__})",
                source=description,
                hint="check that the file is a complete CSV/parquet export and the separator is right",
            ) from None
        raise ConnectorError(
            "unsupported file type",
            source=description,
            hint=f"use one of {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}",
        )


def source_from_spec(spec: LocalSource, *, default_separator: str, encoding: str = "utf-8") -> LocalFileSource:
    return LocalFileSource(spec.path, separator=spec.separator or default_separator, encoding=encoding)


class LocalRegionStore:
    """A folder holding one region's private state; writes are atomic (temp file + rename)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def description(self) -> str:
        return f"region store {self.root}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ConnectorError(f"key {key!r} escapes the store", source=self.description)
        return path

    def _atomic_write(self, key: str, write: Any) -> str:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            os.close(fd)
            write(tmp)
            os.replace(tmp, path)
        except OSError as exc:
            raise ConnectorError(f"could not write {key} ({exc.strerror})", source=self.description) from None
        return str(path)

    def write_frame(self, key: str, frame: pd.DataFrame) -> str:
        return self._atomic_write(key, lambda tmp: frame.to_parquet(tmp, index=False))

    def read_frame(self, key: str) -> pd.DataFrame:
        try:
            return pd.read_parquet(self._path(key))
        except FileNotFoundError:
            raise ConnectorError(f"{key} does not exist", source=self.description, hint="run the preparation step first") from None
        except (OSError, ValueError) as exc:
            raise ConnectorError(f"could not read {key} ({type(exc).__name__})", source=self.description) from None

    def write_json(self, key: str, document: Any) -> str:
        text = json.dumps(document, indent=2, default=str)
        return self._atomic_write(key, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    def read_json(self, key: str) -> Any:
        try:
            return json.loads(self._path(key).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConnectorError(f"{key} does not exist", source=self.description) from None
        except (OSError, ValueError) as exc:
            raise ConnectorError(f"could not read {key} ({type(exc).__name__})", source=self.description) from None

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def append_text(self, key: str, text: str) -> str:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            raise ConnectorError(f"could not append to {key} ({exc.strerror})", source=self.description) from None
        return str(path)

    @contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """An exclusive ``flock`` on ``<key>.lock``: blocks other threads and processes until released."""
        path = self._path(key).with_name(self._path(key).name + ".lock")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a+")  # noqa: SIM115 - held for the whole block
        except OSError as exc:
            raise ConnectorError(f"could not lock {key} ({exc.strerror})", source=self.description) from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()

    def remove(self, key: str) -> None:
        path = self._path(key)
        try:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise ConnectorError(f"could not remove {key} ({exc.strerror})", source=self.description) from None
