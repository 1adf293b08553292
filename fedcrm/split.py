"""Partition a dataset into regional stores, and split each region's holdout.

Real federations partition by geography; the bundled public datasets have no region, so
``partition`` also offers two documented, seeded non-IID splits used by the demo:

* ``dirichlet`` (label skew): for each class, the share of its rows going to each region is
  drawn from Dirichlet(alpha). Small alpha = strong skew (default 1.0; 0.5 is a common harder benchmark).
* ``covariate`` (feature skew): rows are grouped by the values of one column and whole groups
  are dealt to regions (largest group first, to the currently smallest region), so each
  region sees a different part of feature space.
* ``column``: the contract's region column decides (the production case).

Every region name, given or read from the region column, must pass ``region_name_problem``
(fedcrm/config.py: lower-case letters, digits, '-', '_'), because it becomes a folder name: a
value such as ``../coordinator`` would otherwise write raw records into another party's store.
``partition`` checks them all before it returns, so a bad value means nothing is written.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

import numpy as np
import pandas as pd

from fedcrm.config import region_name_problem
from fedcrm.contract import DataContract
from fedcrm.errors import ConfigError, ContractError

SplitStrategy = Literal["column", "dirichlet", "covariate"]
DEFAULT_REGIONS = ("eu", "us", "apac")


def partition(
    raw: pd.DataFrame,
    contract: DataContract,
    *,
    regions: tuple[str, ...] = DEFAULT_REGIONS,
    strategy: SplitStrategy | None = None,
    seed: int = 42,
    alpha: float = 1.0,
    by: str | None = None,
) -> dict[str, pd.DataFrame]:
    """Split raw records into ``{region: records}``; the default strategy follows the contract."""
    strategy = strategy or ("column" if contract.region_column else "dirichlet")
    if strategy == "column":
        return _by_region_column(raw, contract)
    if len(set(regions)) != len(regions) or len(regions) < 2:
        raise ConfigError(f"regions must be at least two distinct names, got {list(regions)}")
    for name in regions:
        if problem := region_name_problem(name):
            raise ConfigError(f"region name {name!r} cannot be used: {problem}", hint="pass --regions eu,us,apac or similar")
    if strategy == "dirichlet":
        labels = raw[contract.target.column].astype("string").str.strip()
        assignment = _dirichlet_assignment(labels.fillna("<missing>").to_numpy(), len(regions), alpha, seed)
    elif strategy == "covariate":
        column = by or next(iter(contract.categorical), None)
        if column is None or column not in raw.columns:
            raise ConfigError(
                f"covariate split needs a column present in the data, got {column!r}",
                hint="pass --by COLUMN naming a categorical column",
            )
        assignment = _covariate_assignment(raw[column].astype("string").fillna("<missing>").to_numpy(), len(regions))
    else:  # pragma: no cover - guarded by the Literal type at the CLI
        raise ConfigError(f"unknown split strategy {strategy!r}", hint="use column, dirichlet or covariate")
    return {name: raw.loc[assignment == i].reset_index(drop=True) for i, name in enumerate(regions)}


def _by_region_column(raw: pd.DataFrame, contract: DataContract) -> dict[str, pd.DataFrame]:
    column = contract.region_column
    if column is None or column not in raw.columns:
        raise ContractError(
            f"split by region column needs column {column!r} in the data",
            hint="set `region_column` in the contract to an existing column, or use --strategy dirichlet",
        )
    names = raw[column].astype("string").str.strip().str.lower()
    names = names.mask(names == "")
    if names.isna().any():
        raise ContractError(
            f"{int(names.isna().sum())} record(s) have no value in region column {column!r}",
            hint="fill the region column for every record before splitting",
        )
    bad = {str(name): problem for name in names.unique() if (problem := region_name_problem(str(name)))}
    if bad:  # a data value in the message: this error is shown only on the data owner's own machine (never sent)
        shown = ", ".join(f"{name[:40]!r}" for name in sorted(bad)[:5]) + (" …" if len(bad) > 5 else "")
        raise ContractError(
            f"region column {column!r} has {len(bad)} value(s) that cannot name a region: {shown} "
            f"({next(iter(bad.values()))}); nothing was written",
            hint="map the region column to names like eu, us or apac_north in your export, or split with "
                 "--strategy dirichlet",
        )
    return {str(name): group.reset_index(drop=True) for name, group in raw.groupby(names, sort=True)}


def _dirichlet_assignment(labels: np.ndarray, n_regions: int, alpha: float, seed: int) -> np.ndarray:
    if alpha <= 0:
        raise ConfigError(f"dirichlet alpha must be positive, got {alpha}")
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels), dtype=np.int64)
    for label in sorted(set(labels.tolist())):
        rows = np.flatnonzero(labels == label)
        rng.shuffle(rows)
        shares = rng.dirichlet(np.full(n_regions, alpha))
        # Keep every region non-empty for every class where the class is big enough.
        floor = min(0.02, 1.0 / (2 * n_regions)) if len(rows) >= 50 * n_regions else 0.0
        shares = np.maximum(shares, floor)
        shares /= shares.sum()
        cuts = np.round(np.cumsum(shares)[:-1] * len(rows)).astype(int)
        for region, part in enumerate(np.split(rows, cuts)):
            assignment[part] = region
    return assignment


def _covariate_assignment(values: np.ndarray, n_regions: int) -> np.ndarray:
    groups, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    if len(groups) < n_regions:
        raise ConfigError(
            f"covariate split needs at least {n_regions} distinct values, the column has {len(groups)}",
            hint="choose a column with more categories (--by), or use --strategy dirichlet",
        )
    loads = np.zeros(n_regions, dtype=np.int64)
    group_region = np.empty(len(groups), dtype=np.int64)
    for g in np.argsort(-counts, kind="stable"):
        target = int(np.argmin(loads))
        group_region[g] = target
        loads[target] += counts[g]
    return group_region[inverse]


def holdout_mask(
    frame: pd.DataFrame, contract: DataContract, *, fraction: float = 0.2, seed: int = 0, since: datetime | None = None
) -> pd.Series:
    """Which rows of a parsed region frame form the region's local holdout.

    Row-local in both forms, so one record added or removed never moves another between train and
    holdout (a neighbouring data set differs in one training row, as DP-SGD's accounting assumes):

    * with an event-time column in the contract and a public cut-off ``since`` (``holdout.since``):
      the records at or after it (train on the past, evaluate on the recent);
    * otherwise: a seeded hash of the record id below ``fraction``, stable as the CRM grows, so a
      record never moves between train and holdout from one run to the next.

    "The latest fraction of records" is not offered: its cut-off is a quantile of the region's own
    times, so one record could push another across it.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"holdout fraction must be in (0, 1), got {fraction}")
    if since is not None and not contract.event_time_column:
        raise ConfigError(
            "holdout.since is set but the contract has no event_time_column to compare it with",
            hint="name the records' event-time column in the contract (event_time_column), or remove holdout.since",
        )
    if since is not None:
        times = pd.to_datetime(frame[contract.event_time_column], utc=True)
        cutoff = pd.Timestamp(since)
        cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
        return pd.Series((times >= cutoff).to_numpy(dtype=bool), index=frame.index)
    salt = str(seed).encode()
    unit = np.asarray(
        [
            int.from_bytes(hashlib.blake2b(str(rid).encode(), key=salt, digest_size=8).digest(), "big") / 2.0**64
            for rid in frame[contract.id_column]
        ],
        dtype="float64",
    )
    return pd.Series(unit < fraction, index=frame.index)
