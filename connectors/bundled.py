"""The real public datasets bundled with fedcrm (see data/ATTRIBUTION.md), read from the package's resources."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from connectors.local import LocalFileSource
from fedcrm.errors import ConfigError
from fedcrm.resources import BUNDLED_DATA

DATA_DIR = BUNDLED_DATA


@dataclass(frozen=True)
class BundledDataset:
    file: str
    separator: str
    number_rows_as: str | None = None
    """Id column to create by numbering rows, for files that have none."""
    id_prefix: str = ""


BUNDLED = {
    "lead-scoring": BundledDataset("bank_marketing.csv.gz", ";", number_rows_as="lead_id", id_prefix="L"),
    "churn": BundledDataset("telco_customer_churn.csv.gz", ","),
}


def load_bundled(use_case: str) -> pd.DataFrame:
    """The bundled records of a use case, as raw text cells."""
    spec = BUNDLED.get(use_case)
    if spec is None:
        raise ConfigError(
            f"no bundled data for use case {use_case!r}",
            hint=f"bundled: {', '.join(BUNDLED)}; for your own data pass --input FILE --contract FILE",
        )
    frame = LocalFileSource(DATA_DIR / spec.file, separator=spec.separator).read_records()
    if spec.number_rows_as:
        frame.insert(0, spec.number_rows_as, [f"{spec.id_prefix}{i:06d}" for i in range(1, len(frame) + 1)])
    return frame
