"""Local feature engineering that is identical in every region.

Nothing here rewrites a row from the values of *other* rows: every step is row-local and uses
only public parameters (the contract) or DP outputs (the federated moments). So removing or
adding one record changes exactly one row of the model inputs, and the sensitivities that DP
relies on hold. Rare values are not suppressed before training: DP-SGD and the Gaussian
mechanism on the statistics are what protect them (a small-count rule applies only to releases
that are not DP, never to training rows).

Two steps, both inside the region:

1. ``region_statistics``: count, sum and sum of squares of each numeric column, in the public
   units of ``StatisticsScale`` (each bounded column mapped to [−1, 1] by its contract range), so
   one record moves each statistic by at most 1 (``statistics_sensitivity``). Under DP the region
   adds Gaussian noise calibrated to that bound (``add_gaussian_noise``). Only these aggregates
   leave the region, through an ``Aggregator``; their sum is all the coordinator needs for the
   pooled moments.
2. ``FeaturePipeline.transform``: clip each bounded numeric column to its contract [min, max],
   impute a blank with the federated (DP) mean, standardise with the federated moments, clip to
   ±``clip_z`` standard deviations, and one-hot categories over the public contract vocabulary
   plus ``__other__`` (anything outside the vocabulary, or blank).

The fitted ``FeaturePipeline`` holds only the contract vocabulary and bounds and the pooled
moments, no row-level value, so it can travel with the model.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from fedcrm.contract import OTHER, DataContract
from fedcrm.errors import FeatureError, PrivacyError


def local_statistics(frame: pd.DataFrame, numeric_columns: list[str]) -> np.ndarray:
    """[count_1..m, sum_1..m, sumsq_1..m] over the finite values of each numeric column."""
    values = frame[numeric_columns].to_numpy(dtype="float64", na_value=np.nan) if numeric_columns else np.empty((len(frame), 0))
    finite = np.isfinite(values)
    safe = np.where(finite, values, 0.0)
    return np.concatenate([finite.sum(axis=0), safe.sum(axis=0), (safe * safe).sum(axis=0)]).astype("float64")


def pooled_moments(total: np.ndarray, numeric_columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) standard deviation from summed ``local_statistics`` vectors."""
    m = len(numeric_columns)
    if total.shape != (3 * m,) or not np.all(np.isfinite(total)):
        raise FeatureError(
            f"aggregated feature statistics have shape {total.shape}, expected ({3 * m},) and finite values",
            hint="every region must run the same contract version; re-run `fedcrm data split`/validation",
        )
    count, sums, sumsq = total[:m], total[m : 2 * m], total[2 * m :]
    empty = [numeric_columns[i] for i in np.flatnonzero(count < 1)]
    if empty:
        raise FeatureError(f"no region has any value for numeric column(s) {empty}", hint="check the contract")
    mean = sums / count
    variance = np.maximum(sumsq / count - mean * mean, 0.0)
    std = np.sqrt(variance)
    # sumsq/n - mean² keeps rounding noise of order |mean|·1e-8: below that a column is constant.
    constant = std <= 1e-6 * np.maximum(1.0, np.abs(mean))
    return mean, np.where(constant, 1.0, std)


class StatisticsScale(BaseModel):
    """Public centre and half-width per numeric column, from the contract's declared range.

    A column without a declared range is left unscaled (centre 0, half-width 1) and unbounded:
    it can be summed in the clear but neither securely nor under DP.
    """

    model_config = ConfigDict(frozen=True)
    columns: list[str]
    centre: list[float]
    half_width: list[float]
    bounded: list[bool]

    @classmethod
    def from_contract(cls, contract: DataContract) -> StatisticsScale:
        centre, half, bounded = [], [], []
        for spec in contract.numeric.values():
            ok = spec.min is not None and spec.max is not None
            centre.append((spec.min + spec.max) / 2 if ok else 0.0)
            half.append(max((spec.max - spec.min) / 2, 1e-12) if ok else 1.0)
            bounded.append(ok)
        return cls(columns=list(contract.numeric), centre=centre, half_width=half, bounded=bounded)

    @property
    def unbounded(self) -> list[str]:
        return [c for c, ok in zip(self.columns, self.bounded) if not ok]

    def normalise(self, frame: pd.DataFrame) -> pd.DataFrame:
        """x' = (x − centre) / half-width, clipped to [−1, 1] for bounded columns (the sensitivity bound)."""
        out = pd.DataFrame(index=frame.index)
        for name, c, h, ok in zip(self.columns, self.centre, self.half_width, self.bounded):
            values = (frame[name].astype("float64") - c) / h
            out[name] = values.clip(-1.0, 1.0) if ok else values
        return out

    def moments(self, total: np.ndarray, noise_std: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Pooled mean and std in the columns' own units from summed (possibly noisy) normalised statistics.

        Noise is handled by post-processing only: counts below 1 count as 1, a bounded column's
        mean is kept in [−1, 1] and its variance in [0, 1], as the clipped values guarantee.

        ``noise_std`` is the standard deviation of the Gaussian noise on each summed statistic (public:
        σ × sensitivity × √contributors). When a contract's range is wide compared with the data's
        spread, the noisy Σx'² can fall below n·mean², i.e. the variance estimate is pure noise. It is
        then floored at the noise's own scale on the second moment, noise_std / n, instead of
        collapsing to 0 (which made a column look constant and standardised it by the whole range:
        a bundled churn column came out with std 500 for a true 30).
        """
        m = len(self.columns)
        total = np.asarray(total, dtype="float64").copy()
        if total.shape == (3 * m,) and np.all(np.isfinite(total)):
            bounded = np.asarray(self.bounded)
            count = total[:m]
            noisy = bounded & (count < 1) & (count != 0)  # exactly 0 is a column with no value anywhere: an error below
            total[:m] = np.where(noisy, 1.0, count)
            mean = total[m : 2 * m] / total[:m]
            clipped = np.where(bounded, np.clip(mean, -1.0, 1.0), mean)
            floor = np.where(bounded, np.minimum(clipped**2 + max(noise_std, 0.0) / total[:m], 1.0), clipped**2)
            second = np.where(bounded, np.clip(total[2 * m :] / total[:m], floor, 1.0), total[2 * m :] / total[:m])
            total[m : 2 * m], total[2 * m :] = clipped * total[:m], second * total[:m]
        mean, std = pooled_moments(total, self.columns)
        half = np.asarray(self.half_width)
        return np.asarray(self.centre) + half * mean, half * std


def region_statistics(frame: pd.DataFrame, scale: StatisticsScale) -> np.ndarray:
    """This region's [count, Σx', Σx'²] per numeric column in normalised units."""
    return local_statistics(scale.normalise(frame), scale.columns)


def statistics_sensitivity(scale: StatisticsScale) -> float:
    """L2 change of ``region_statistics`` when one record is added or removed: ≤ 1 per coordinate."""
    return float(np.sqrt(3 * len(scale.columns)))


def summed_noise_std(scale: StatisticsScale, noise_multiplier: float | None, contributors: int) -> float:
    """Standard deviation of the noise on each coordinate of the statistics summed over ``contributors``
    regions, each adding N(0, (σ·sensitivity)²): public, so the coordinator may use it to post-process."""
    if noise_multiplier is None or contributors < 1:
        return 0.0
    return float(noise_multiplier * statistics_sensitivity(scale) * np.sqrt(contributors))


def add_gaussian_noise(statistics: np.ndarray, scale: StatisticsScale, noise_multiplier: float, noise) -> np.ndarray:
    """The Gaussian mechanism on the clipped statistics (record-level DP; charged to the ledger by the caller)."""
    if scale.unbounded:
        raise PrivacyError(
            f"numeric column(s) {scale.unbounded} have no declared min/max, so their statistics cannot be made DP",
            hint="declare min and max for every numeric column in the contract",
        )
    std = noise_multiplier * statistics_sensitivity(scale)
    return statistics + std * noise.standard_normal(statistics.size)


class NumericFeature(BaseModel):
    """A numeric input: its public contract range (``None`` where undeclared) and its federated moments."""

    model_config = ConfigDict(frozen=True)
    name: str
    mean: float
    std: float = Field(gt=0)
    min: float | None = Field(None, description="Contract lower bound; values below are clipped to it (row-local).")
    max: float | None = Field(None, description="Contract upper bound; values above are clipped to it (row-local).")


class CategoricalFeature(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    vocabulary: list[str]

    @property
    def levels(self) -> list[str]:
        return [*self.vocabulary, OTHER]


class FeaturePipeline(BaseModel):
    """The fitted, serialisable transform from contract columns to model inputs."""

    model_config = ConfigDict(frozen=True)
    use_case: str
    numeric: list[NumericFeature]
    categorical: list[CategoricalFeature]
    clip_z: float = Field(5.0, gt=0)

    @classmethod
    def fit(cls, contract: DataContract, aggregated_statistics: np.ndarray, *, clip_z: float = 5.0,
            noise_std: float = 0.0) -> FeaturePipeline:
        """From the sum over regions of ``region_statistics`` (normalised units, possibly DP-noised, with
        ``noise_std`` the public standard deviation of the summed noise: see ``StatisticsScale.moments``)."""
        names = list(contract.numeric)
        mean, std = StatisticsScale.from_contract(contract).moments(aggregated_statistics, noise_std)
        return cls(
            use_case=contract.use_case,
            numeric=[
                NumericFeature(name=n, mean=float(mu), std=float(s), min=contract.numeric[n].min, max=contract.numeric[n].max)
                for n, mu, s in zip(names, mean, std)
            ],
            categorical=[CategoricalFeature(name=n, vocabulary=list(c.vocabulary)) for n, c in contract.categorical.items()],
            clip_z=clip_z,
        )

    @property
    def feature_names(self) -> list[str]:
        names = [f.name for f in self.numeric]
        for feature in self.categorical:
            names.extend(f"{feature.name}={level}" for level in feature.levels)
        return names

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Model inputs (float32); never returns NaN (asserted, so a bug cannot train silently).

        Each output row depends only on its own input row and public or DP parameters (contract
        bounds and vocabulary, federated moments), never on the other rows of ``frame``.
        """
        missing = [f.name for f in (*self.numeric, *self.categorical) if f.name not in frame.columns]
        if missing:
            raise FeatureError(f"records lack feature column(s) {missing}", hint="validate the data against the contract first")
        blocks = []
        if self.numeric:
            names = [f.name for f in self.numeric]
            mean = np.array([f.mean for f in self.numeric])
            std = np.array([f.std for f in self.numeric])
            lower = np.array([-np.inf if f.min is None else f.min for f in self.numeric])
            upper = np.array([np.inf if f.max is None else f.max for f in self.numeric])
            values = frame[names].to_numpy(dtype="float64", na_value=np.nan)
            values = np.clip(values, lower, upper)  # NaN stays NaN
            values = np.where(np.isfinite(values), values, mean)  # blank (or ±inf without a bound): the federated mean
            blocks.append(np.clip((values - mean) / std, -self.clip_z, self.clip_z))
        for feature in self.categorical:
            levels = feature.levels
            codes = pd.Categorical(frame[feature.name].where(frame[feature.name].isin(feature.vocabulary), OTHER), categories=levels).codes
            blocks.append(np.eye(len(levels))[codes])
        matrix = np.hstack(blocks).astype("float32") if blocks else np.empty((len(frame), 0), dtype="float32")
        if not np.all(np.isfinite(matrix)):  # pragma: no cover - defensive: the maths above cannot produce it
            raise FeatureError("feature transform produced non-finite values", hint="report this as a bug")
        return matrix

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> FeaturePipeline:
        return cls.model_validate(json.loads(text))
